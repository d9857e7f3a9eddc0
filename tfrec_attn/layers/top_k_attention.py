"""Top-k sparse attention: each query keeps only its k largest logits."""

from tfrec_attn._keras import tf
from tfrec_attn.layers import masking
from tfrec_attn.layers.base_attention import BaseAttention
from tfrec_attn.registry import register


@register()
class TopKAttention(BaseAttention):
    """Multi-head attention where each query attends only to its `k` highest-scoring keys.

    The full `(batch, heads, T, S)` logits are computed and masked; per query the `k` largest
    survive, the softmax runs over those and every other key gets exactly zero weight. It is
    **not cheaper** than full attention (it still forms every logit): it sparsifies for
    quality/robustness, e.g. to stop a long noisy history from diluting the few relevant items.
    Rows with fewer than `k` visible keys keep all of them; keys tied with the `k`-th largest
    logit are all kept. Converts to TFLite builtins (`TOPK_V2`).

    Args:
        num_heads: int. Number of heads. Defaults to `1`.
        k: int. Keys kept per query. Defaults to `8`.
        **kwargs: the other `BaseAttention` arguments (key_dim, dropout, causal, initializers...).

    Call arguments:
        inputs: query `(batch, T, dim)`, `[query, value]` or `[query, value, key]`.
        mask: boolean padding mask `(batch, T)` or `[query_mask, value_mask]`.
        training: bool, for dropout.
        return_attention_scores: bool. Also return the `(batch, heads, T, S)` weights.
        attention_mask: optional boolean `(batch, T, S)`.

    Returns:
        `(batch, T, output_dim)`, and the weights when asked: `k` non-zero per row (fewer
        with fewer visible keys; more when keys tie with the `k`-th largest logit, e.g. an
        item repeated in the history, whose copies are all kept).

    Example:
    >>> from tfrec_attn._keras import tf
    >>> layer = TopKAttention(k=2)
    >>> _, w = layer(tf.random.normal((1, 5, 4)), return_attention_scores=True)
    >>> int(tf.reduce_max(tf.math.count_nonzero(w, axis=-1)))
    2
    """

    def __init__(self, num_heads: int = 1, k: int = 8, **kwargs):
        kwargs.pop("use_projections", None)
        if not isinstance(k, int) or isinstance(k, bool) or k <= 0:
            raise ValueError(f"k must be a positive int. Received: k={k!r}")
        super().__init__(num_heads=num_heads, use_projections=True, **kwargs)
        self.k = k

    def _apply_scores(self, scores, value, mask, training):
        logits = tf.cast(scores, tf.float32)
        if mask is not None:
            mask = tf.logical_and(tf.cast(mask, tf.bool), tf.ones_like(logits, tf.bool))
            # Masked logits drop below the row: they can only be picked when a row has
            # fewer than k visible keys, and `keep` below drops them again.
            logits = masking.fill_masked(logits, mask, 1.0)
        k = tf.minimum(self.k, tf.shape(logits)[-1])
        threshold = tf.math.top_k(logits, k=k).values[..., -1:]
        keep = tf.greater_equal(logits, threshold)
        if mask is not None:
            keep = tf.logical_and(keep, mask)
        return super()._apply_scores(scores, value, keep, training)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(k=self.k)
        return config
