"""Multi-head (self-)attention built from Dense projections."""

from tfrec_attn.layers.base_attention import BaseAttention
from tfrec_attn.registry import register


@register()
class MultiHeadAttention(BaseAttention):
    """Multi-head attention (Vaswani et al.) that TFMOT can prune/quantize and TFLite can lower.

    Numerically equal to `keras.layers.MultiHeadAttention` given the same weights (its
    `(dim, heads, key_dim)` kernels reshaped to our `(dim, heads * key_dim)` Dense kernels).

    Args:
        num_heads: int. Number of heads.
        key_dim: int or None. Per-head query/key size; defaults to `dim // num_heads`.
        value_dim: int or None. Per-head value size; defaults to `key_dim`.
        output_dim: int or None. Output size; defaults to the query's last dimension.
        dropout: float. Dropout on the attention weights.
        use_bias: bool. Projection biases.
        causal: bool. Causal (end-aligned) masking.
        kernel_initializer / bias_initializer: projection initializers.

    Call arguments:
        inputs: query `(batch, T, dim)` (self-attention), `[query, value]` or
            `[query, value, key]`.
        mask: boolean padding mask `(batch, T)` or `[query_mask, value_mask]`.
        training: bool, for dropout.
        return_attention_scores: bool. Also return `(batch, heads, T, S)` weights.
        attention_mask: optional boolean `(batch, T, S)`.

    Returns:
        `(batch, T, output_dim)`, and the weights when asked.

    Example:
    >>> from tfrec_attn._keras import tf
    >>> layer = MultiHeadAttention(num_heads=2, causal=True)
    >>> layer(tf.ones((2, 5, 8)), mask=tf.sequence_mask([3, 5], 5)).shape
    TensorShape([2, 5, 8])
    """

    def __init__(self, num_heads: int = 2, **kwargs):
        kwargs.pop("use_projections", None)
        super().__init__(num_heads=num_heads, use_projections=True, **kwargs)
