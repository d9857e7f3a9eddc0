"""Learned and sinusoidal positional embeddings, aligned to the most recent position."""

import math

import numpy as np

from tfrec_attn._keras import keras, tf
from tfrec_attn.layers.utils import check_rank, clone_initializer
from tfrec_attn.registry import register
from tfrec_attn.validation import check_positive_float, check_positive_int


def _right_aligned(table: tf.Tensor, length) -> tf.Tensor:
    """The last `length` rows of `table`: position `-1` always means the most recent item."""
    return table[tf.shape(table)[0] - length:]


class _AddPositions(keras.layers.Layer):
    """Adds a `(max_length, dim)` table, right-aligned, to `(batch, T, dim)` inputs."""

    def __init__(self, max_length: int, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("max_length", max_length)
        self.max_length = max_length
        self.supports_masking = True

    def _table(self) -> tf.Tensor:
        raise NotImplementedError

    def call(self, inputs, mask=None):
        check_rank(self, "inputs", inputs.shape)
        length = inputs.shape[1] if inputs.shape.rank else None
        if length is not None and length > self.max_length:
            raise ValueError(
                f"The sequence length ({length}) exceeds max_length ({self.max_length}, the "
                f"model's max_len): pass at most the last {self.max_length} positions, or "
                f"build {type(self).__name__} with a larger max_length.")
        table = tf.cast(self._table(), inputs.dtype)
        if length is None:
            # Known only at run time (a functional model's `(None, None)` input, a SavedModel
            # signature): checked there, or slicing the table fails with a misleading shape.
            check = tf.debugging.assert_less_equal(
                tf.shape(inputs)[1], self.max_length,
                message=f"{self.name}: the sequence is longer than max_length="
                        f"{self.max_length} (max_len of the model): pass at most its last "
                        f"{self.max_length} positions")
            with tf.control_dependencies([check]):
                table = tf.identity(table)
        return inputs + _right_aligned(table, tf.shape(inputs)[1])[None]

    def compute_mask(self, inputs, mask=None):
        return mask

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_prunable_weights(self) -> list:
        return []  # a few thousand values that every prediction reads: pruning saves nothing

    def get_config(self) -> dict:
        return {**super().get_config(), "max_length": self.max_length}


@register()
class PositionEmbedding(_AddPositions):
    """Adds a learned position embedding to a `(batch, T, dim)` sequence.

    Positions are counted from the end (right-aligned), so a left-padded history keeps the same
    embedding for its most recent item whatever its length or the batch's padded length.

    Args:
        max_length: int. Longest sequence supported.
        initializer: embedding initializer. Defaults to `"glorot_uniform"`.

    Call arguments:
        inputs: `(batch, T, dim)` with `T <= max_length` (a longer `T` is an error naming
            `max_length`: a `ValueError` when `T` is static, else an `InvalidArgumentError`
            at run time).
        mask: optional `(batch, T)` padding mask; passed through unchanged.

    Returns:
        `inputs + positions`, same shape.

    Example:
    >>> from tfrec_attn._keras import tf
    >>> PositionEmbedding(max_length=10)(tf.zeros((2, 4, 8))).shape
    TensorShape([2, 4, 8])
    """

    def __init__(self, max_length: int, initializer="glorot_uniform", **kwargs):
        super().__init__(max_length, **kwargs)
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape):
        self.position_embeddings = self.add_weight(
            name="embeddings",
            shape=(self.max_length, input_shape[-1]),
            initializer=clone_initializer(self.initializer),
        )
        super().build(input_shape)

    def _table(self) -> tf.Tensor:
        return self.position_embeddings

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(initializer=keras.initializers.serialize(self.initializer))
        return config


def sinusoid_table(length: int, dim: int, base: float = 10000.0) -> np.ndarray:
    """The fixed `(length, dim)` sin/cos table of Vaswani et al. (sin in even, cos in odd)."""
    positions = np.arange(length)[:, None]
    rates = np.exp(-math.log(base) * (np.arange(0, dim, 2) / dim))[None, :]
    table = np.zeros((length, dim), dtype=np.float32)
    table[:, 0::2] = np.sin(positions * rates)
    table[:, 1::2] = np.cos(positions * rates[:, : dim // 2])
    return table


@register()
class SinusoidalPositionEmbedding(_AddPositions):
    """Adds the fixed sinusoidal position encoding to a `(batch, T, dim)` sequence.

    Right-aligned like `PositionEmbedding`: the most recent item gets the largest position.

    Args:
        max_length: int. Longest sequence supported.
        base: float. Wavelength base. Defaults to `10000.0`.

    Call arguments:
        inputs: `(batch, T, dim)`.
        mask: optional `(batch, T)` padding mask; passed through unchanged.

    Returns:
        `inputs + encoding`, same shape.

    Example:
    >>> from tfrec_attn._keras import tf
    >>> SinusoidalPositionEmbedding(max_length=10)(tf.zeros((1, 3, 4))).shape
    TensorShape([1, 3, 4])
    """

    def __init__(self, max_length: int, base: float = 10000.0, **kwargs):
        super().__init__(max_length, **kwargs)
        check_positive_float("base", base)
        self.base = base

    def build(self, input_shape):
        self._sinusoids = tf.constant(
            sinusoid_table(self.max_length, input_shape[-1], self.base))
        super().build(input_shape)

    def _table(self) -> tf.Tensor:
        return self._sinusoids

    def get_config(self) -> dict:
        return {**super().get_config(), "base": self.base}
