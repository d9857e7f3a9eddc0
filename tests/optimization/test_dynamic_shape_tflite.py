"""TFLite with dynamic batch *and* length: every attention family converts to builtin ops only
and matches Keras after the interpreter's inputs are resized.

A `x[:, None]` on a tensor with two unknown dimensions is a `StridedSlice` with a new axis,
which TFLite lowers only when at most one dimension is unknown: `(None, T)` and `(1, None)`
models converted, `(None, None)` ones needed the `StridedSlice` select op. The layers insert
axes with `layers.utils.expand_axes` (`EXPAND_DIMS`) instead.
"""

import numpy as np
import optimization_cases as oc
import pytest

from tfrec_attn._keras import keras, tf
from tfrec_attn.export import assert_builtin_only
from tfrec_attn.layers import (
    GraphAttention,
    ItemEmbedding,
    MaskedMeanPooling,
    MultiHeadAttention,
    PaddingMask,
)
from tfrec_attn.testing import layer_tflite as lt

lc, lic = oc.lc, oc.lic

# Float32 LiteRT runs the Keras graph's ops (sums reordered): observed <= 1e-6 absolute.
TOLERANCE = 1e-5
CASES = lc.ATTENTION_CASES


def convert_dynamic(model: keras.Model, path) -> object:
    """`model` as a builtin-ops float `.tflite` file whose inputs keep every `None` dimension
    (the batch included); the file's inputs are named like `model`'s."""
    names = lt.input_names(model)
    specs = [tf.TensorSpec((None, *t.shape[1:]), t.dtype, name=name)
             for t, name in zip(model.inputs, names, strict=True)]

    @tf.function(input_signature=specs)
    def serve(*inputs):
        return model(list(inputs), training=False)

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [serve.get_concrete_function()], serve)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    path.write_bytes(converter.convert())  # raises ConverterError when a select op is needed
    assert_builtin_only(path)
    return path


def run_resized(path, model: keras.Model, feed: list[np.ndarray]) -> np.ndarray:
    """The file's output on `feed`, its inputs resized to the feed's shapes first."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    by_name = {d["name"]: d["index"] for d in interpreter.get_input_details()}
    names = lt.input_names(model)
    for name, value in zip(names, feed, strict=True):
        interpreter.resize_tensor_input(by_name[name], value.shape)
    interpreter.allocate_tensors()
    for name, value in zip(names, feed, strict=True):
        interpreter.set_tensor(by_name[name], value)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def assert_matches_keras(path, model, feeds) -> None:
    for feed in feeds:
        want = model(feed).numpy()
        got = run_resized(path, model, feed)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=TOLERANCE)


def dynamic_case_model(case) -> keras.Model:
    """The case's layer fed by `(None, None, DIM)` floats and `(None, None)` ids' padding mask."""
    count = 2 if case.cross else 1
    floats = [keras.Input((None, lc.DIM), name=f"x{i}") for i in range(count)]
    ids = [keras.Input((None,), dtype="int32", name=f"ids{i}") for i in range(count)]
    masks = [PaddingMask(name=f"padding{i}")(x) for i, x in enumerate(ids)]
    outputs = case.make(name="layer")(lc.unlist(floats, case.cross),
                                      mask=lc.unlist(masks, case.cross))
    if not case.pooled:
        outputs = MaskedMeanPooling(name="pool")(outputs, mask=masks[0])
    return keras.Model(floats + ids, outputs)


def shorter(feed: list[np.ndarray], rows: int, drop: int) -> list[np.ndarray]:
    """The first `rows` rows of `feed` without their first `drop` (oldest) positions."""
    return [x[:rows, drop:] for x in feed]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_attention_with_dynamic_batch_and_length_converts_to_builtins(case, tmp_path):
    keras.utils.set_random_seed(0)
    model = dynamic_case_model(case)
    path = convert_dynamic(model, tmp_path / "dynamic.tflite")
    feed = lc.model_feed(case, *case.sample())
    assert_matches_keras(path, model, [feed, shorter(feed, 2, 2)])


def test_graph_attention_with_dynamic_nodes_converts_to_builtins(tmp_path):
    keras.utils.set_random_seed(0)
    nodes = keras.Input((None, lc.DIM), name="x0")
    adjacency = keras.Input((None, None), name="x1")
    flags = keras.Input((None,), dtype="int32", name="flags")
    padding = PaddingMask()(flags)
    case = lic.GRAPH_CASE
    hidden = GraphAttention(**case.kwargs)([nodes, adjacency], mask=padding)
    model = keras.Model([nodes, adjacency, flags], MaskedMeanPooling()(hidden, mask=padding))
    path = convert_dynamic(model, tmp_path / "graph.tflite")
    feed = lic.model_feed(case, *case.sample())
    small = [feed[0][:2, :4], feed[1][:2, :4, :4], feed[2][:2, :4]]
    assert_matches_keras(path, model, [feed, small])


def test_item_embedding_attention_pooling_with_dynamic_shapes_converts(tmp_path):
    """The walkthrough's model: ids -> PaddingMask / ItemEmbedding -> attention -> pooling."""
    keras.utils.set_random_seed(0)
    ids = keras.Input((None,), dtype="int32", name="ids")
    padding = PaddingMask()(ids)
    hidden = MultiHeadAttention(num_heads=2)(ItemEmbedding(oc.VOCAB, lc.DIM)(ids), mask=padding)
    model = keras.Model(ids, MaskedMeanPooling()(hidden, mask=padding))
    path = convert_dynamic(model, tmp_path / "ids.tflite")
    feeds = [[np.array([[0, 0, 3, 4, 5, 6]], np.int32)],
             [np.array([[0, 7, 8], [9, 10, 11], [0, 0, 12]], np.int32)]]
    assert_matches_keras(path, model, feeds)
