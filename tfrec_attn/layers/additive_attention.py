"""Additive (Bahdanau) attention."""

from tfrec_attn._keras import tf
from tfrec_attn.layers.base_attention import BaseAttention
from tfrec_attn.layers.utils import clone_initializer, expand_axes
from tfrec_attn.registry import register


@register()
class AdditiveAttention(BaseAttention):
    """Bahdanau attention: `score(q, k) = v^T tanh(W_q q + W_k k)`, per head.

    Only the score differs from `MultiHeadAttention`; projections, masking, dropout and the
    weighted sum are the base class's. Memory grows as `T * S * key_dim`, so prefer it for
    short sequences or target attention.

    Args:
        num_heads: int. Number of heads. Defaults to `1`.
        key_dim: int or None. Hidden size of the additive score per head.
        **kwargs: the other `BaseAttention` arguments (dropout, causal, initializers...).

    Call arguments:
        inputs: query `(batch, T, dim)`, `[query, value]` or `[query, value, key]`.
        mask: boolean padding mask(s).
        training: bool, for dropout.
        return_attention_scores: bool.
        attention_mask: optional boolean `(batch, T, S)`.

    Returns:
        `(batch, T, output_dim)`, and `(batch, heads, T, S)` weights when asked.

    Example:
    >>> from tfrec_attn._keras import tf
    >>> layer = AdditiveAttention(key_dim=4)
    >>> layer([tf.ones((2, 3, 8)), tf.ones((2, 6, 8))]).shape
    TensorShape([2, 3, 8])
    """

    def __init__(self, num_heads: int = 1, **kwargs):
        kwargs.pop("use_projections", None)
        super().__init__(num_heads=num_heads, use_projections=True, **kwargs)

    def build_scores(self, shapes) -> None:
        self.score_vector = self.add_weight(
            name="score_vector",
            shape=(self.num_heads, 1, 1, self._head_key_dim),
            initializer=clone_initializer(self.kernel_initializer),
        )

    def _compute_scores(self, query, key):
        # (B, H, T, 1, d) + (B, H, 1, S, d) -> tanh -> reduce over d with the score vector.
        hidden = tf.tanh(expand_axes(query, 3) + expand_axes(key, 2))
        vector = tf.cast(self.score_vector, hidden.dtype)[None]
        return tf.reduce_sum(hidden * vector, axis=-1)
