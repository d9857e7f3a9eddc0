"""Masked mean pooling that stays correct in full-integer int8 TFLite, quantization-aware or not."""

from tfrec_attn._keras import keras, tf
from tfrec_attn.layers.masking import check_mask_shape
from tfrec_attn.layers.utils import check_rank, expand_axes
from tfrec_attn.registry import register


@register()
class MaskedMeanPooling(keras.layers.Layer):
    """Pools `(batch, T, dim)` to `(batch, dim)`: the mean over the real (unmasked) positions.

    In float it equals `keras.layers.GlobalAveragePooling1D()(inputs, mask=mask)`, except that
    a row with no real position pools to zeros rather than NaN. It has no `DIV` on data: the
    sum of the real positions is multiplied by `1 / max(count, 1)`, looked up by the integer
    count in a constant table of `T + 1` reciprocals. LiteRT's int8 `DIV` returns the end of its
    output range, not about zero, when the exact quotient is nonzero but well below one output
    step (its requantization shift reaches 32 bits). `GlobalAveragePooling1D`'s `sum / count`
    often is after quantization-aware training, whose output range starts at TFMOT's `[-6, 6]`:
    a DIN tower's int8 file then saturated 6% of its pooled values. In int8 the reciprocal's
    range is calibrated like any activation (a history shorter than every calibration history
    gets the shortest one's reciprocal, as attention weights are clipped to their range).

    Call arguments:
        inputs: `(batch, T, dim)`.
        mask: boolean padding mask `(batch, T)`, `True` for real positions, passed explicitly
            (`layer(x, mask=padding)`) or by Keras (`Embedding(mask_zero=True)`, `Masking`; both
            survive `prune_model` and `make_qat_model`). `None` averages every position.

    Returns:
        `(batch, dim)`.

    Example:
    >>> from tfrec_attn._keras import tf
    >>> x = tf.constant([[[9.0, 9.0], [1.0, 2.0], [3.0, 4.0]]])
    >>> MaskedMeanPooling()(x, mask=tf.constant([[False, True, True]])).numpy().tolist()
    [[2.0, 3.0]]
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        check_rank(self, "inputs", inputs.shape)
        check_mask_shape(type(self).__name__, "mask", mask, inputs.shape[:2], "(batch, T)")
        if mask is None:
            mask = tf.ones(tf.shape(inputs)[:2], tf.bool)
        total = tf.reduce_sum(inputs * expand_axes(tf.cast(mask, inputs.dtype), 2), axis=1)
        count = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)  # (batch,), exact
        length = inputs.shape[1] if inputs.shape[1] is not None else tf.shape(inputs)[1]
        # 1 / max(n, 1) for n = 0..T, a constant when T is static.
        reciprocals = 1.0 / tf.maximum(tf.cast(tf.range(length + 1), inputs.dtype), 1.0)
        return total * expand_axes(tf.gather(reciprocals, count), 1)

    def compute_output_shape(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        return tf.TensorShape([input_shape[0], input_shape[-1]])

    def compute_mask(self, inputs, mask=None):
        return None

    def get_prunable_weights(self) -> list:
        return []
