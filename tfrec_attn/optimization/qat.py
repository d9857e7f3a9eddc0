"""Quantization-aware training (QAT) of functional towers.

`make_qat_model` annotates every layer with its `QuantizeConfig` (see `quantize_configs.py`) and
applies TFMOT's 8-bit scheme, with one change: only *float* model inputs get an input quantizer.
TFMOT's default layout transform fake-quantizes every input layer, which would turn item ids
into 8-bit floats. The wrappers are `quantize_configs.QuantizeWrapperV2`, which propagate Keras'
implicit masks (`Embedding(mask_zero=True)`, `Masking`) as the float model does.
"""

from __future__ import annotations

import contextlib
import threading
import types
from unittest import mock

import tensorflow_model_optimization as tfmot
from tensorflow_model_optimization.python.core.quantization.keras import quantize as tfmot_quantize
from tensorflow_model_optimization.python.core.quantization.keras import quantize_wrapper

from tfrec_attn._keras import keras, tf
from tfrec_attn.optimization.quantize_configs import (
    QuantizeAnnotate,
    QuantizeWrapperV2,
    quantize_config_for,
    quantize_scope,
)

_qkeras = tfmot.quantization.keras
_default_8bit = _qkeras.default_8bit
# One `_wrapping_with` at a time: two overlapping patches would restore in the wrong order and
# leave TFMOT's module holding the proxy.
_WRAPPING_LOCK = threading.Lock()


class FloatInputsLayoutTransform(_qkeras.QuantizeLayoutTransform):
    """TFMOT's 8-bit layout transform, with input quantizers on float inputs only."""

    def apply(self, model, layer_quantize_map):
        inputs = {layer.name: layer for layer in model.layers
                  if isinstance(layer, keras.layers.InputLayer)}
        float_inputs = {name for name, layer in inputs.items()
                        if name in layer_quantize_map and tf.as_dtype(layer.dtype).is_floating}
        if float_inputs:
            model, layer_quantize_map = _qkeras.graph_transformations.model_transformer \
                .ModelTransformer(model, [_default_8bit.default_8bit_transforms
                                          .InputLayerQuantize()],
                                  float_inputs, layer_quantize_map).transform()
        # The default transforms (Conv/Dense + BatchNorm fusions...) never see the inputs again.
        others = {k: v for k, v in layer_quantize_map.items() if k not in inputs}
        model, others = _default_8bit.Default8BitQuantizeLayoutTransform().apply(model, others)
        return model, {**{k: v for k, v in layer_quantize_map.items() if k in inputs}, **others}


class FloatInputsQuantizeScheme(_default_8bit.Default8BitQuantizeScheme):
    """`Default8BitQuantizeScheme` with `FloatInputsLayoutTransform`."""

    def get_layout_transformer(self):
        return FloatInputsLayoutTransform()


def quantize_annotate(model: keras.Model) -> keras.Model:
    """A clone of `model` (sharing its layers) with every layer annotated with its config.

    Our layers get the config of their family; Keras layers TFMOT knows get its default (config
    `None`); parameter-free unknown layers get `NoOpQuantizeConfig`. The annotations (and the
    wrappers `make_qat_model` puts in their place) propagate Keras' implicit masks.
    """
    def clone(layer):
        if isinstance(layer, keras.layers.InputLayer):
            return layer
        return QuantizeAnnotate(layer, quantize_config_for(layer))

    with quantize_scope():
        return keras.models.clone_model(model, clone_function=clone)


def make_qat_model(model: keras.Model) -> keras.Model:
    """The quantization-aware version of a Sequential or functional `model`.

    Layers keep their names (no `quant_` prefix), so `model.get_layer("item_embedding")` still
    finds the (wrapped) layer. The new model starts from `model`'s weights but does not share
    them (TFMOT's `quantize_apply` copies).

    Example:
    >>> from tfrec_attn.layers import MultiHeadAttention
    >>> x = keras.Input((4, 8))
    >>> model = keras.Model(x, MultiHeadAttention(num_heads=2, name="mha")(x))
    >>> qat = make_qat_model(model)
    >>> type(qat.get_layer("mha")).__name__, qat(tf.ones((1, 4, 8))).shape
    ('QuantizeWrapperV2', TensorShape([1, 4, 8]))
    """
    mixed = sorted({layer.name for layer in model.layers
                    if layer.compute_dtype in ("float16", "bfloat16")})
    if mixed:
        raise ValueError(
            "Quantization-aware training needs float32 layers (TFMOT's fake-quant ops are "
            f"float32-only); build the model under the 'float32' policy. Received: {mixed}")
    annotated = quantize_annotate(model)
    try:
        with quantize_scope(), _wrapping_with(QuantizeWrapperV2):
            return _qkeras.quantize_apply(annotated, scheme=FloatInputsQuantizeScheme(),
                                          quantized_layer_name_prefix="")
    except RuntimeError as err:  # TFMOT's message names no layer
        if "Multiple output tensors" not in str(err):
            raise
        raise ValueError(
            "Quantization-aware training cannot quantize the output of a layer called with "
            "several outputs (an attention layer with return_attention_scores=True, even when "
            f"only its output is used); in this model: {_several_outputs(model)}. Quantize "
            "the model that returns the outputs only, and build the weights model apart (from "
            "the same layers).") from None


def _several_outputs(model: keras.Model) -> list[str]:
    """The layers called with more than one output in `model`'s own graph (not in other
    models that share them)."""
    nodes = [node for depth in getattr(model, "_nodes_by_depth", {}).values() for node in depth]
    return sorted({node.layer.name for node in nodes if len(tf.nest.flatten(node.outputs)) > 1})


@contextlib.contextmanager
def _wrapping_with(wrapper_class):
    """`quantize_apply` wraps layers in `wrapper_class` rather than TFMOT's `QuantizeWrapperV2`.

    `quantize_apply` constructs the wrapper through its module's `quantize_wrapper` reference
    and has no hook for another class, so that one reference is swapped for the duration (TFMOT's
    own wrapper module is left alone: its `super(QuantizeWrapperV2, self)` calls need the
    original). `wrapper_class` subclasses TFMOT's and keeps its name and config, so models save
    and load as before. Threads calling it wait for each other (`_WRAPPING_LOCK`).
    """
    proxy = types.SimpleNamespace(QuantizeWrapper=quantize_wrapper.QuantizeWrapper,
                                  QuantizeWrapperV2=wrapper_class)
    with _WRAPPING_LOCK, mock.patch.object(tfmot_quantize, "quantize_wrapper", proxy):
        yield
