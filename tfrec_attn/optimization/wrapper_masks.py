"""Keras' implicit masks through TFMOT's wrappers.

TFMOT's `PruneLowMagnitude` and `QuantizeWrapperV2` pass the mask Keras hands them on to the
wrapped layer's `call`, but compute no output mask themselves (`supports_masking` is False), so
the mask chain of `Embedding(mask_zero=True)` or `Masking` ended at the first wrapped layer: the
layers after it attended to and averaged over padding while the float (and the stripped) model
did not. `PropagateMask` makes a wrapper mask its output exactly as the wrapped layer does.
"""

from __future__ import annotations

from tfrec_attn._keras import keras


def _expects_mask(layer: keras.layers.Layer) -> bool:
    # Keras' own test in `Layer.__call__` (a `mask` argument, or `**kwargs`).
    return getattr(layer, "_expects_mask_arg", True)


class PropagateMask:
    """Mixin for a TFMOT wrapper (listed first among the bases): the wrapper's output mask is
    the wrapped layer's, and the input mask reaches the wrapped layer's `call` only if it takes
    one (a wrapped `Dense` after a mask-producing layer would otherwise get `mask=`).

    Example:
    >>> from tfrec_attn.optimization.pruning import PruneLowMagnitude
    >>> ids = keras.Input((None,), dtype="int32")
    >>> vectors = PruneLowMagnitude(keras.layers.Embedding(5, 2, mask_zero=True))(ids)
    >>> vectors._keras_mask is not None
    True
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.supports_masking = True

    def call(self, inputs, training=None, **kwargs):
        if not _expects_mask(self.layer):
            kwargs.pop("mask", None)
        return super().call(inputs, training=training, **kwargs)

    def compute_mask(self, inputs, mask=None):
        if not self.layer.supports_masking:  # as Keras does for an unwrapped layer
            return None
        return self.layer.compute_mask(inputs, mask)
