"""Cases for layers whose inputs are a list but not `[query, value]`: graph attention, fusion.

`GraphAttention` reads `[nodes, adjacency]` with a node padding mask and `MultimodalFusion` a
list of modality vectors with a modality mask, so they cannot join `ATTENTION_CASES`. Their own
tests and the pruning / QAT suites (`tests/optimization/optimization_cases.py`) share these
samples and functional models. A `ListInputCase` quacks like a cross-attention `LayerCase` for
`layer_cases.call` (lists in, a list of masks or one mask).

Example:
>>> inputs, mask = GRAPH_CASE.sample()
>>> [x.shape for x in inputs], mask.shape
([(3, 5, 8), (3, 5, 5)], (3, 5))
>>> GRAPH_CASE.make()(inputs, mask=mask).shape
TensorShape([3, 5, 8])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from tfrec_attn._keras import keras
from tfrec_attn.layers import GraphAttention, MultimodalFusion, PaddingMask
from tfrec_attn.testing.layer_cases import BATCH, DIM, left_padding_mask

NUM_NODES = 5
NODE_COUNTS = (5, 3, 1)  # real nodes per example (left-aligned: padding at the end)
MODALITY_WIDTHS = (DIM, 12, 4)  # e.g. id, text and image embeddings
# Which modalities each example has: all, no image, only the id.
MODALITY_PRESENT = np.array([[True, True, True], [True, True, False], [True, False, False]])


def graph_inputs(rng: np.random.Generator):
    """`([nodes (B, N, DIM), adjacency (B, N, N)], node_mask (B, N))`.

    Padded nodes hold zeros; the adjacency is random 0/1 everywhere (also on padded rows and
    columns, which the mask must hide).
    """
    mask = ~left_padding_mask(NUM_NODES - np.asarray(NODE_COUNTS), NUM_NODES)
    nodes = rng.normal(size=(BATCH, NUM_NODES, DIM)).astype(np.float32) * mask[..., None]
    adjacency = (rng.random((BATCH, NUM_NODES, NUM_NODES)) < 0.5).astype(np.float32)
    return [nodes, adjacency], mask


def fusion_inputs(rng: np.random.Generator):
    """`([id (B, 8), text (B, 12), image (B, 4)], present (B, 3))`, missing ones zeroed."""
    inputs = [rng.normal(size=(BATCH, width)).astype(np.float32) * MODALITY_PRESENT[:, i, None]
              for i, width in enumerate(MODALITY_WIDTHS)]
    return inputs, MODALITY_PRESENT.copy()


@dataclasses.dataclass(frozen=True)
class ListInputCase:
    """A layer called as `layer(list_of_inputs, mask=mask)`.

    Attributes:
        name: test id.
        cls: the layer class.
        kwargs: constructor arguments.
        input_fn: `rng -> (inputs, mask)`.
        projected: indices of the inputs `build_model` passes through a `Dense` first.
        per_input_mask: `sample` returns the mask as a list of columns, one per input (Keras'
            per-input masks); `build_model` still feeds it as one `(batch, K)` array.
    """

    name: str
    cls: type
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    input_fn: Callable = graph_inputs
    projected: tuple[int, ...] = (0,)
    per_input_mask: bool = False

    cross = True  # `layer_cases.call` passes inputs and masks through as lists

    def __str__(self) -> str:
        return self.name

    def make(self, **overrides) -> keras.layers.Layer:
        return self.cls(**{**self.kwargs, **overrides})

    def sample(self, seed: int = 0):
        """Deterministic `(inputs, mask)` numpy arrays, the mask in `layer_cases.call`'s form."""
        inputs, mask = self.input_fn(np.random.default_rng(seed))
        if self.per_input_mask:
            return inputs, [mask[:, i] for i in range(mask.shape[1])]
        return inputs, mask

    def mask_array(self, mask) -> np.ndarray:
        """The `(batch, K)` boolean mask, whatever form `sample` returned it in."""
        return np.stack(mask, axis=-1) if isinstance(mask, list) else np.asarray(mask)


def build_model(case: ListInputCase, layer, project: bool = True,
                return_scores: bool = False) -> keras.Model:
    """Functional model `[*float inputs, flags (B, K) int] -> layer output (, weights)`.

    The mask comes from the `flags` input through `PaddingMask` and is passed explicitly, as
    models that get pruned must (TFMOT's wrappers drop Keras' implicit masks).
    """
    inputs, mask = case.sample()
    symbolic = [keras.Input(x.shape[1:], name=f"x{i}") for i, x in enumerate(inputs)]
    flags = keras.Input(case.mask_array(mask).shape[1:], dtype="int32", name="flags")
    hidden = [keras.layers.Dense(x.shape[-1], name=f"project{i}")(x)
              if project and i in case.projected else x for i, x in enumerate(symbolic)]
    padding = PaddingMask(name="padding")(flags)
    if return_scores:
        outputs, scores = layer(hidden, mask=padding, return_attention_scores=True)
        outputs = {"output": outputs, "scores": scores}
    else:
        outputs = layer(hidden, mask=padding)
    return keras.Model(symbolic + [flags], outputs)


def model_feed(case: ListInputCase, inputs, mask) -> list[np.ndarray]:
    """The feed for `build_model`: the float inputs, then the mask as int flags."""
    return list(inputs) + [case.mask_array(mask).astype(np.int32)]


def prune_one_epoch(case: ListInputCase, target_sparsity: float = 0.5):
    """`case`'s layer in `build_model(return_scores=True)`, magnitude-pruned at a constant
    `target_sparsity` through one epoch of fitting zeros.

    Returns:
        `(pruned model, its feed, the pruned kernels of the layer under test)`.
    """
    import tensorflow_model_optimization as tfmot  # test helper; the layers never import TFMOT

    sparsity = tfmot.sparsity.keras
    inputs, mask = case.sample()
    model = build_model(case, case.make(), return_scores=True)
    pruned = sparsity.prune_low_magnitude(model, pruning_schedule=sparsity.ConstantSparsity(
        target_sparsity, begin_step=0, frequency=1))
    feed = model_feed(case, inputs, mask)
    target = {"output": np.zeros(model(feed)["output"].shape, np.float32)}
    pruned.compile(optimizer="sgd", loss={"output": "mse"}, run_eagerly=True)
    pruned.fit(feed, target, batch_size=BATCH, epochs=1, verbose=0,
               callbacks=[sparsity.UpdatePruningStep()])
    wrapper = next(w for w in pruned.layers if type(getattr(w, "layer", None)) is case.cls)
    return pruned, feed, [w for w, _, _ in wrapper.pruning_vars]


GRAPH_CASE = ListInputCase("graph_attention_v2", GraphAttention,
                           {"num_heads": 2, "version": 2})
FUSION_CASE = ListInputCase("multimodal_fusion", MultimodalFusion, {"num_heads": 2},
                            input_fn=fusion_inputs, projected=(0, 1, 2), per_input_mask=True)
LIST_INPUT_CASES = (GRAPH_CASE, FUSION_CASE)
