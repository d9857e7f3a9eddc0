"""Self-attention pooling: a learned query attends over a sequence."""

from tfrec_attn._keras import keras, tf
from tfrec_attn.layers.masking import check_mask_shape
from tfrec_attn.layers.multi_head_attention import MultiHeadAttention
from tfrec_attn.layers.utils import (
    build_sublayer,
    check_rank,
    clone_initializer,
    prunable_kernels,
)
from tfrec_attn.registry import register
from tfrec_attn.validation import check_positive_int, check_rate


@register()
class SelfAttentionPooling(keras.layers.Layer):
    """Pools `(batch, T, dim)` to `(batch, dim)` with a learned query (Lin et al., 2017 style).

    Args:
        num_heads: int. Attention heads. Defaults to `1`.
        num_queries: int. Learned queries; `1` returns `(batch, dim)`, more return
            `(batch, num_queries, dim)` (multi-interest pooling).
        dropout: float. Dropout on the attention weights.
        kernel_initializer: initializer for the query and the projections.

    Call arguments:
        inputs: `(batch, T, dim)`.
        mask: boolean padding mask `(batch, T)`; padded positions get zero weight.
        training: bool, for dropout.
        return_attention_scores: bool. Also return `(batch, heads, num_queries, T)` weights.

    Returns:
        The pooled tensor, and the weights when asked.

    Example:
    >>> from tfrec_attn._keras import tf
    >>> SelfAttentionPooling()(tf.ones((2, 5, 8)), mask=tf.sequence_mask([1, 5], 5)).shape
    TensorShape([2, 8])
    """

    def __init__(self, num_heads: int = 1, num_queries: int = 1, dropout: float = 0.0,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        check_positive_int("num_queries", num_queries)
        check_positive_int("num_heads", num_heads)
        check_rate("dropout", dropout)
        self.num_heads = num_heads
        self.num_queries = num_queries
        self.dropout = dropout
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.supports_masking = True

    def build(self, input_shape):
        check_rank(self, "inputs", input_shape)
        dim = input_shape[-1]
        self.query = self.add_weight(
            name="query", shape=(self.num_queries, dim),
            initializer=clone_initializer(self.kernel_initializer))
        self.attention = MultiHeadAttention(
            num_heads=self.num_heads, dropout=self.dropout, dtype=self.dtype_policy,
            kernel_initializer=clone_initializer(self.kernel_initializer), name="attention")
        build_sublayer(self.attention, [tf.TensorShape([None, self.num_queries, dim]),
                                        tf.TensorShape(input_shape)])
        super().build(input_shape)

    def call(self, inputs, mask=None, training=None, return_attention_scores=False):
        check_rank(self, "inputs", inputs.shape)
        check_mask_shape(type(self).__name__, "mask", mask, inputs.shape[:2], "(batch, T)")
        batch = tf.shape(inputs)[0]
        query = tf.tile(tf.cast(self.query, inputs.dtype)[None], [batch, 1, 1])
        masks = None if mask is None else [None, mask]
        pooled, weights = self.attention(
            [query, inputs], mask=masks, training=training, return_attention_scores=True)
        if self.num_queries == 1:
            pooled = pooled[:, 0]
        return (pooled, weights) if return_attention_scores else pooled

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        if self.num_queries == 1:
            return tf.TensorShape([input_shape[0], input_shape[-1]])
        return tf.TensorShape([input_shape[0], self.num_queries, input_shape[-1]])

    def get_prunable_weights(self) -> list:
        return prunable_kernels(self)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            num_heads=self.num_heads, num_queries=self.num_queries, dropout=self.dropout,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config
