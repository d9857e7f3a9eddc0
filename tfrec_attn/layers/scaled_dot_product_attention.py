"""Scaled dot-product attention without projections."""

from tfrec_attn.layers.base_attention import BaseAttention
from tfrec_attn.registry import register


@register()
class ScaledDotProductAttention(BaseAttention):
    """Parameter-free `softmax(q k^T / sqrt(d)) v` over the raw inputs (one head).

    Args:
        dropout: float. Dropout on the attention weights. Defaults to `0.0`.
        causal: bool. Query `i` sees only keys `j <= i`. Defaults to `False`.

    Call arguments:
        inputs: query `(batch, T, dim)`, or `[query, value]`, or `[query, value, key]`.
        mask: boolean padding mask `(batch, T)` or `[query_mask, value_mask]`.
        training: bool, for dropout.
        return_attention_scores: bool. Also return `(batch, 1, T, S)` weights.
        attention_mask: optional boolean `(batch, T, S)`.

    Returns:
        `(batch, T, value_dim)`, and the weights when asked.

    Example:
    >>> from tfrec_attn._keras import tf
    >>> layer = ScaledDotProductAttention(causal=True)
    >>> out, w = layer(tf.ones((2, 4, 8)), return_attention_scores=True)
    >>> out.shape, w.shape
    (TensorShape([2, 4, 8]), TensorShape([2, 1, 4, 4]))
    """

    def __init__(self, dropout: float = 0.0, causal: bool = False, **kwargs):
        for fixed in ("num_heads", "use_projections", "key_dim", "value_dim", "output_dim"):
            kwargs.pop(fixed, None)
        super().__init__(num_heads=1, use_projections=False, dropout=dropout, causal=causal,
                         **kwargs)
