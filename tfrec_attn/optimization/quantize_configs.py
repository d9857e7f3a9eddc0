"""Quantization-aware training (QAT): one `QuantizeConfig` per tfrec_attn layer family.

TFMOT's `QuantizeWrapperV2` asks its config for `(weight, quantizer)` pairs, fake-quantizes each
weight in `call` and hands the results back through `set_quantize_weights`, then calls the
wrapped layer. Our attention layers keep their kernels in sublayer `Dense`s, so the configs here
address weights by path (`"attention.query_dense.kernel"`) and set the fake-quantized tensor on
the sublayer (`layer.attention.query_dense.kernel = w`), exactly as TFMOT's
`Default8BitQuantizeConfig` does for a `Dense`; `Dense.call` reads `self.kernel`, so the
quantized kernel is the one used in the forward pass.

What stays float, and why:
- Attention logits, the masked softmax and the attention weights (and additive attention's
  score vector, which only feeds the logits). A softmax over int8 logits has 256 levels to rank
  every key, shared with the masked entries pushed below the row; near-equal logits collapse
  onto one level, the exponential amplifies each step, and the ranking of the items in a history
  is lost. TFLite keeps `SOFTMAX` in float anyway.
- Layer normalization, position encodings added in float, masks and top-k (`NoOpQuantizeConfig`).
- The efficient variants' extra weights: `LowRankAttention`'s sequence-axis projections `E`/`F`
  (`E` only forms the projected keys, i.e. feeds the logits, as above; `F` mixes the values of
  every position into each summary, so its int8 rounding error is summed over `max_length`
  positions, while the pair is tiny, `2 * max_length * r` floats, and saves nothing quantized)
  and `LinearAttention`'s fixed FAVOR+ random matrix (non-trainable; it sits inside `exp`).
Quantized: every projection / feed-forward kernel (8-bit, symmetric, per-tensor, like TFMOT's
`Dense`), the item and position embedding tables, and the outputs of attention layers and
encoder blocks (8-bit moving-average ranges). A wrapper with an output quantizer handles one
output tensor, so a QAT-wrapped attention layer cannot be called with
`return_attention_scores=True` (blocks call their inner attention unwrapped, which is fine).
"""

from __future__ import annotations

import contextlib

import tensorflow_model_optimization as tfmot
from tensorflow_model_optimization.python.core.quantization.keras import (
    quantize_annotate as quantize_annotate_module,
)

from tfrec_attn._keras import keras, tf
from tfrec_attn.layers import (
    AdditiveAttention,
    BaseAttention,
    GraphAttention,
    HistoryTopK,
    ItemDropout,
    ItemEmbedding,
    LastPosition,
    LinearAttention,
    LocalAttention,
    LowRankAttention,
    MaskedMeanPooling,
    MultiHeadAttention,
    MultimodalFusion,
    PaddingMask,
    PositionEmbedding,
    ScaledDotProductAttention,
    SelfAttentionPooling,
    SinusoidalPositionEmbedding,
    StopGradient,
    TargetAttention,
    TopKAttention,
    TransformerEncoderBlock,
    TransitionPrior,
)
from tfrec_attn.optimization.wrapper_masks import PropagateMask
from tfrec_attn.registry import register

quantizers = tfmot.quantization.keras.quantizers

_PROJECTIONS = ("query_dense", "key_dense", "value_dense", "output_dense")


class SublayerWeightQuantizer(quantizers.LastValueQuantizer):
    """8-bit symmetric per-tensor `LastValueQuantizer` (TFMOT's `Dense` default) whose range
    variables are named after the weight path.

    The wrapper names quantizer variables after the weight's last name component, which is
    `kernel` for every sublayer `Dense`; naming them `attention_query_dense_kernel_min` keeps
    them apart in checkpoints.

    Args:
        weight_path: str. Dotted path of the weight in the wrapped layer.
    """

    def __init__(self, weight_path: str):
        super().__init__(num_bits=8, per_axis=False, symmetric=True, narrow_range=True)
        self.weight_path = weight_path

    def build(self, tensor_shape, name, layer):
        return super().build(tensor_shape, self.weight_path.replace(".", "_"), layer)

    def get_config(self) -> dict:
        return {"weight_path": self.weight_path}


def _output_quantizer():
    return quantizers.MovingAverageQuantizer(
        num_bits=8, per_axis=False, symmetric=False, narrow_range=False)


def _resolve(layer, path: str):
    """`"attention.query_dense.kernel"` -> `(layer.attention.query_dense, "kernel")`."""
    *owners, attr = path.split(".")
    for owner in owners:
        layer = getattr(layer, owner)
    return layer, attr


class WeightPathsQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
    """Base config: fake-quantizes the weights at `weight_paths(layer)`, optionally the output.

    Subclasses override `weight_paths` only (variants are hooks, not copies).

    Args:
        quantize_output: bool. Quantize the layer's (single) output tensor.
    """

    quantize_output = False

    def weight_paths(self, layer) -> list[str]:
        return []

    def get_weights_and_quantizers(self, layer):
        pairs = []
        for path in self.weight_paths(layer):
            owner, attr = _resolve(layer, path)
            pairs.append((getattr(owner, attr), SublayerWeightQuantizer(path)))
        return pairs

    def set_quantize_weights(self, layer, quantize_weights):
        paths = self.weight_paths(layer)
        if len(paths) != len(quantize_weights):
            raise ValueError(
                f"{type(self).__name__} expects {len(paths)} weights for layer {layer.name}. "
                f"Received {len(quantize_weights)}.")
        for path, weight in zip(paths, quantize_weights, strict=True):
            owner, attr = _resolve(layer, path)
            # Plain attribute assignment, unlike TFMOT's `setattr`: Keras' `__setattr__` would
            # untrack the variable from the sublayer the first time a tensor replaces it,
            # reordering `layer.weights` after the first eager call (HDF5 files could then not
            # be loaded). The variable stays tracked; only what `call` reads changes.
            object.__setattr__(owner, attr, weight)

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [_output_quantizer()] if self.quantize_output else []

    def get_config(self) -> dict:
        return {}


@register()
class NoOpQuantizeConfig(WeightPathsQuantizeConfig):
    """Keeps a layer in float: masks, layer norm, fixed encodings, parameter-free attention,
    top-k. Annotating them anyway makes `quantize_apply` accept every layer of a tower."""


@register()
class AttentionQuantizeConfig(WeightPathsQuantizeConfig):
    """`BaseAttention` variants: the four projection kernels and the output.

    Logits, the masked softmax and the weights stay float (see the module docstring); so do
    `AdditiveAttention.score_vector`, which only feeds the logits, `LowRankAttention`'s `E`/`F`
    and `LinearAttention`'s random features (see the module docstring). Local, linear, low-rank
    and top-k attention have the same four `Dense` projections, so this one config serves them
    (and `TransformerBlockQuantizeConfig` whichever variant a block uses).
    """

    quantize_output = True

    def weight_paths(self, layer) -> list[str]:
        if not getattr(layer, "use_projections", True):
            return []
        return [f"{dense}.kernel" for dense in _PROJECTIONS]


@register()
class AttentionPoolingQuantizeConfig(WeightPathsQuantizeConfig):
    """`SelfAttentionPooling`: its learned queries, the inner attention's kernels, the output."""

    quantize_output = True

    def weight_paths(self, layer) -> list[str]:
        return ["query"] + [f"attention.{dense}.kernel" for dense in _PROJECTIONS]


@register()
class TransformerBlockQuantizeConfig(WeightPathsQuantizeConfig):
    """`TransformerEncoderBlock`: attention and feed-forward kernels, and the block output.

    Layer norms stay float (TFLite runs them in float; int8 statistics of a residual stream
    lose precision).
    """

    quantize_output = True

    def weight_paths(self, layer) -> list[str]:
        attention = [f"attention.{dense}.kernel" for dense in _PROJECTIONS]
        gates = ["ffn_value.kernel", "attention_gate.kernel", "ffn_gate.kernel"]
        return attention + ["ffn_inner.kernel", "ffn_outer.kernel"] + (
            gates if getattr(layer, "gated", False) else [])


@register()
class EmbeddingTableQuantizeConfig(WeightPathsQuantizeConfig):
    """`ItemEmbedding` / `PositionEmbedding` / Keras' `Embedding` (which TFMOT does not
    quantize): the table only.

    No output quantizer: a lookup of a quantized table is already on the table's grid, and the
    shared `ItemEmbedding` also produces catalogue scores (`mode="score"`), whose range has
    nothing to do with the vectors'.
    """

    def weight_paths(self, layer) -> list[str]:
        if isinstance(layer, PositionEmbedding):
            return ["position_embeddings"]
        return ["embeddings"]


@register()
class TargetAttentionQuantizeConfig(WeightPathsQuantizeConfig):
    """`TargetAttention` (DIN): the hidden kernels of the score MLP, and the output.

    The last MLP layer (`score_output`, one unit) produces the logits directly and stays float,
    like `AdditiveAttention.score_vector` (see the module docstring).
    """

    quantize_output = True

    def weight_paths(self, layer) -> list[str]:
        return [f"score_hidden_{i}.kernel" for i in range(len(layer.hidden_units))]


@register()
class GraphAttentionQuantizeConfig(WeightPathsQuantizeConfig):
    """`GraphAttention`: the node projection kernel(s) and the output.

    The attention vectors (`attention_source` / `attention_target`, or GATv2's
    `attention_vector`) only form the logits and stay float, like
    `AdditiveAttention.score_vector` (see the module docstring).
    """

    quantize_output = True

    def weight_paths(self, layer) -> list[str]:
        extra = ["target_dense.kernel"] if layer.version == 2 else []
        return ["source_dense.kernel"] + extra


@register()
class MultimodalFusionQuantizeConfig(WeightPathsQuantizeConfig):
    """`MultimodalFusion`: each modality's projection, the learned query, the attention's
    kernels and the output."""

    quantize_output = True

    def weight_paths(self, layer) -> list[str]:
        paths = [f"projection_{i}.kernel" for i in range(layer._num_modalities)]
        if layer.query == "learned":
            paths.append("learned_query")
        return paths + [f"attention.{dense}.kernel" for dense in _PROJECTIONS]


# Most specific first: `quantize_config_for` takes the first match.
LAYER_CONFIGS = (
    (TransformerEncoderBlock, TransformerBlockQuantizeConfig),
    (SelfAttentionPooling, AttentionPoolingQuantizeConfig),
    (ScaledDotProductAttention, NoOpQuantizeConfig),
    (LowRankAttention, AttentionQuantizeConfig),
    (LocalAttention, AttentionQuantizeConfig),
    (LinearAttention, AttentionQuantizeConfig),
    (TopKAttention, AttentionQuantizeConfig),
    (TargetAttention, TargetAttentionQuantizeConfig),
    (BaseAttention, AttentionQuantizeConfig),
    (GraphAttention, GraphAttentionQuantizeConfig),
    (MultimodalFusion, MultimodalFusionQuantizeConfig),
    (ItemEmbedding, EmbeddingTableQuantizeConfig),
    (PositionEmbedding, EmbeddingTableQuantizeConfig),
    (keras.layers.Embedding, EmbeddingTableQuantizeConfig),
    (SinusoidalPositionEmbedding, NoOpQuantizeConfig),
    (PaddingMask, NoOpQuantizeConfig),
    (ItemDropout, NoOpQuantizeConfig),
    (LastPosition, NoOpQuantizeConfig),
    (MaskedMeanPooling, NoOpQuantizeConfig),
    (StopGradient, NoOpQuantizeConfig),
    (HistoryTopK, NoOpQuantizeConfig),
    # fixed counts and a mixing weight chosen after training: nothing to fine-tune
    (TransitionPrior, NoOpQuantizeConfig),
    (keras.layers.LayerNormalization, NoOpQuantizeConfig),
)

CONFIG_CLASSES = (
    NoOpQuantizeConfig,
    AttentionQuantizeConfig,
    AttentionPoolingQuantizeConfig,
    TransformerBlockQuantizeConfig,
    EmbeddingTableQuantizeConfig,
    TargetAttentionQuantizeConfig,
    GraphAttentionQuantizeConfig,
    MultimodalFusionQuantizeConfig,
)

LAYER_CLASSES = (
    AdditiveAttention, BaseAttention, HistoryTopK, ItemEmbedding, LastPosition,
    MultiHeadAttention, PaddingMask, PositionEmbedding, ScaledDotProductAttention,
    SelfAttentionPooling, SinusoidalPositionEmbedding, TransformerEncoderBlock,
    LowRankAttention, LocalAttention, LinearAttention, TopKAttention, StopGradient,
    TargetAttention, ItemDropout, MaskedMeanPooling, GraphAttention, MultimodalFusion,
    TransitionPrior,
)


def _outputs_integers(layer: keras.layers.Layer) -> bool:
    """Whether every output the layer produced in its model is an integer tensor (id plumbing,
    e.g. DIN's concatenation of history and candidate ids): nothing there to fake-quantize."""
    tensors, node = [], 0
    while True:  # Keras' public per-node outputs; it raises past the last node
        try:
            tensors.extend(tf.nest.flatten(layer.get_output_at(node)))
        except (RuntimeError, ValueError):  # no (more) nodes: never called, or all seen
            break
        node += 1
    return bool(tensors) and not any(tf.as_dtype(t.dtype).is_floating for t in tensors)


def quantize_config_for(layer: keras.layers.Layer):
    """Our `QuantizeConfig` for `layer`, or `None` when TFMOT's default registry should decide.

    Raises:
        ValueError: for a layer with weights that neither we nor TFMOT know how to quantize.
    """
    for cls, config_cls in LAYER_CONFIGS:
        if isinstance(layer, cls):
            return config_cls()
    if not layer.weights and _outputs_integers(layer):
        return NoOpQuantizeConfig()
    registry = tfmot.quantization.keras.default_8bit.Default8BitQuantizeRegistry()
    if registry.supports(layer):
        return None
    if not layer.weights:
        return NoOpQuantizeConfig()
    raise ValueError(
        f"No QuantizeConfig for layer {layer.name!r} ({type(layer).__name__}) with weights: "
        "make_qat_model quantizes tfrec_attn layers, Keras' Embedding and the Keras layers "
        "TFMOT supports (Dense, Conv, ...). Replace the layer by one of those, or keep it out "
        "of the model you quantize.")


class QuantizeWrapperV2(PropagateMask, tfmot.quantization.keras.QuantizeWrapperV2):
    """TFMOT's `QuantizeWrapperV2` that builds the wrapped layer before itself and propagates
    Keras' implicit masks (`wrapper_masks.PropagateMask`; `make_qat_model` wraps with it).

    TFMOT's `build` lists the wrapped layer's trainable weights first (their order is what an
    HDF5 file stores) and only then builds that layer. A loaded `.h5` has no build configs, so
    the layer was not built yet: its quantized kernels came first, and every one of our layers
    with sublayer kernels failed to reload (`kernel` of shape (d, d) given a bias). Same class
    name, so configs and checkpoints are unchanged; `quantize_scope` deserializes with it.
    """

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        super().build(input_shape)


class QuantizeAnnotate(PropagateMask, quantize_annotate_module.QuantizeAnnotate):
    """TFMOT's annotation wrapper propagating Keras' implicit masks, like `QuantizeWrapperV2`.

    `quantize_apply` clones the annotated model before wrapping it, and TFMOT's annotation hands
    the mask to the wrapped layer's `call` even when it takes none (a `Dense` after `Masking`
    failed with a TypeError). Same class name and config as TFMOT's.
    """


@contextlib.contextmanager
def quantize_scope():
    """Context manager with every tfrec_attn config, quantizer and layer class, for cloning and
    loading quantization-aware models (`.h5` included: see `QuantizeWrapperV2`)."""
    objects = {cls.__name__: cls for cls in CONFIG_CLASSES + LAYER_CLASSES}
    objects["SublayerWeightQuantizer"] = SublayerWeightQuantizer
    # Entered second, so its wrappers win over the ones TFMOT's scope maps.
    with tfmot.quantization.keras.quantize_scope(objects), keras.utils.custom_object_scope(
            {"QuantizeWrapperV2": QuantizeWrapperV2, "QuantizeAnnotate": QuantizeAnnotate}):
        yield
