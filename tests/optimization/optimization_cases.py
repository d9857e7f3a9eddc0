"""The layer cases pruning and QAT tests run over: one per registered layer class with weights.

Imported by the tests as `optimization_cases` (a plain module beside them).
"""

import numpy as np
import pytest

from tfrec_attn._keras import keras
from tfrec_attn.layers import (
    HistoryTopK,
    ItemDropout,
    ItemEmbedding,
    LastPosition,
    MaskedMeanPooling,
    PaddingMask,
    StopGradient,
    TransitionPrior,
)
from tfrec_attn.testing import layer_cases as lc
from tfrec_attn.testing import list_input_cases as lic

# Registered layers the shared cases cannot exercise (they read ids, or scores and ids), with a
# model builder `() -> (model, feed)` each. Parameter-free ones are checked to stay that way.
VOCAB = 40


def item_embedding_model():
    ids = keras.Input((lc.QUERY_LENGTH,), dtype="int32", name="ids")
    vectors = ItemEmbedding(VOCAB, lc.DIM, name="layer")(ids)
    feed = np.random.default_rng(0).integers(0, VOCAB, (lc.BATCH, lc.QUERY_LENGTH))
    return keras.Model(ids, vectors), [feed.astype(np.int32)]


PARAMETER_FREE_INPUTS = {
    PaddingMask: lambda: np.array([[0, 2, 3]]),
    ItemDropout: lambda: np.array([[0, 2, 3]]),
    LastPosition: lambda: np.ones((1, 3, 4), np.float32),
    MaskedMeanPooling: lambda: np.ones((1, 3, 4), np.float32),
    StopGradient: lambda: np.ones((1, 4), np.float32),
    HistoryTopK: lambda: [np.ones((1, 12), np.float32), np.array([[0, 2]])],
}

# Registered layers whose weights are fixed tables set outside training (nothing trainable,
# nothing to prune), with a `() -> (layer, inputs)` each: test_transition_prior_optimization.
FIXED_WEIGHT_INPUTS = {
    TransitionPrior: lambda: (TransitionPrior(12, 2), [np.ones((1, 12), np.float32),
                                                       np.array([[0, 2]])]),
}


def registered_layer_classes() -> list[type]:
    """Every layer class registered under `tfrec_attn>` by `tfrec_attn.layers`."""
    import tfrec_attn.layers  # noqa: F401  (registers them)

    return sorted(
        {cls for name, cls in keras.saving.get_custom_objects().items()
         if name.startswith("tfrec_attn>") and isinstance(cls, type)
         and issubclass(cls, keras.layers.Layer) and not issubclass(cls, keras.Model)
         and cls.__module__.startswith("tfrec_attn.layers")},
        key=lambda cls: cls.__name__)


def _first_case(cls):
    cases = lc.ATTENTION_CASES + lic.LIST_INPUT_CASES  # list-input layers: graph, fusion
    return next((case for case in cases if case.cls is cls), None)


def weighted_layer_cases() -> list:
    """One `LayerCase` (or `"item_embedding"`) per registered layer class that has weights."""
    cases = []
    for cls in registered_layer_classes():
        if cls is ItemEmbedding:
            cases.append(pytest.param("item_embedding", id="ItemEmbedding"))
            continue
        case = _first_case(cls)
        if case is None:
            continue  # parameter-free: see test_every_registered_layer_is_covered
        inputs, mask = case.sample()
        layer = case.make()
        lc.call(case, layer, inputs, mask)
        if layer.weights:
            cases.append(pytest.param(case, id=cls.__name__))
    return cases


def case_model(case, project: bool = True):
    """`(model, feed, layer_name)` for a weighted case: the layer in a tiny functional model
    fed by `PaddingMask`'d ids (and, with `project`, a `Dense` before it)."""
    if case == "item_embedding":
        model, feed = item_embedding_model()
        return model, feed, "layer"
    inputs, mask = case.sample()
    layer = case.make(name="layer")
    if isinstance(case, lic.ListInputCase):
        return (lic.build_model(case, layer, project=project), lic.model_feed(case, inputs, mask),
                "layer")
    return lc.build_model(case, layer, project=project), lc.model_feed(case, inputs, mask), "layer"
