"""The explicit padding mask, derived from item ids."""

from tfrec_attn._keras import keras, tf
from tfrec_attn.layers import masking
from tfrec_attn.layers.utils import check_rank
from tfrec_attn.registry import register
from tfrec_attn.validation import check_int


@register()
class PaddingMask(keras.layers.Layer):
    """`(batch, T)` ids -> boolean `(batch, T)` mask, `True` where `id != pad_id`.

    Models pass this mask explicitly (`layer(x, mask=padding)`) rather than relying on Keras'
    implicit mask, which TFMOT's pruning wrapper drops.

    Args:
        pad_id: int. The padding id. Defaults to `0`.

    Call arguments:
        inputs: integer ids `(batch, T)`.

    Returns:
        Boolean `(batch, T)`.

    Example:
    >>> from tfrec_attn._keras import tf
    >>> PaddingMask()(tf.constant([[0, 3, 4]])).numpy().tolist()
    [[False, True, True]]
    """

    def __init__(self, pad_id: int = 0, **kwargs):
        super().__init__(**kwargs)
        check_int("pad_id", pad_id)
        self.pad_id = pad_id

    def call(self, inputs):
        return masking.sequence_mask_from_ids(inputs, self.pad_id)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_prunable_weights(self) -> list:
        return []

    def get_config(self) -> dict:
        return {**super().get_config(), "pad_id": self.pad_id}


@register()
class LastPosition(keras.layers.Layer):
    """`(batch, T, dim)` -> `(batch, dim)`: the state at the last (most recent) position.

    With left padding the most recent item is always at position `T - 1`.

    Example:
    >>> from tfrec_attn._keras import tf
    >>> LastPosition()(tf.reshape(tf.range(6.0), (1, 3, 2))).numpy().tolist()
    [[4.0, 5.0]]
    """

    def call(self, inputs):
        check_rank(self, "inputs", inputs.shape)
        return inputs[:, -1]

    def compute_output_shape(self, input_shape):
        return tf.TensorShape([input_shape[0], input_shape[-1]])

    def get_prunable_weights(self) -> list:
        return []
