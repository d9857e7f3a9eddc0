"""Pruning: every weighted layer reaches its target sparsity; reports, sizes and schedules."""

import gzip

import numpy as np
import optimization_cases as oc
import pytest

from tfrec_attn._keras import keras, tf
from tfrec_attn.optimization import (
    gzip_size,
    make_schedule,
    prunable_weights,
    prune_model,
    pruning_callbacks,
    sparsity_report,
    strip_pruning,
)
from tfrec_attn.testing import layer_cases as lc


def _is_wrapper(layer) -> bool:
    return hasattr(layer, "pruning_vars")


def _fit_steps(model, feed, steps: int):
    """`steps` eager SGD steps of batch size 1 towards zeros (eager: tracing costs more)."""
    outputs = model(feed)
    model.compile(optimizer="sgd", loss="mse", run_eagerly=True)
    rows = [np.asarray(x)[:1].repeat(steps, 0) for x in feed]
    model.fit(rows, np.zeros((steps,) + tuple(outputs.shape[1:]), np.float32), batch_size=1,
              epochs=1, verbose=0, callbacks=pruning_callbacks())


@pytest.mark.parametrize("case", oc.weighted_layer_cases())
def test_each_layer_reaches_target_sparsity(case, tmp_path):
    model, feed, name = oc.case_model(case)
    layer = model.get_layer(name)
    expected = [w.name for w in prunable_weights(layer)]
    pruned = prune_model(model, target_sparsity=0.8, schedule="polynomial", end_step=3,
                         frequency=1)
    wrapped = {w.layer.name: w for w in pruned.layers if _is_wrapper(w)}
    # Wrapped iff there is something to prune (PositionEmbedding has weights but none to prune).
    assert (name in wrapped) == bool(expected)
    if expected:
        assert [w.name for w, _, _ in wrapped[name].pruning_vars] == expected
    _fit_steps(pruned, feed, steps=3)

    report = sparsity_report(pruned)
    assert report["layers"], "the model always has at least one prunable kernel"
    for entry in report["layers"].values():
        assert entry["sparsity"] == pytest.approx(0.8, abs=0.02), report
    stripped = strip_pruning(pruned)
    assert not any(_is_wrapper(w) for w in stripped.layers)
    assert sparsity_report(stripped) == report
    np.testing.assert_allclose(stripped(feed), pruned(feed), atol=1e-6)
    # the pruned model saves and reloads as .h5 too (no scope): a layer with several kernels
    # once wrote several `mask:0`, and our layers came back as Keras' of the same class name
    path = tmp_path / "pruned.h5"
    pruned.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(reloaded(feed), pruned(feed), atol=1e-6)
    assert sparsity_report(reloaded) == report


def test_prune_model_wraps_only_layers_with_prunable_weights():
    x = keras.Input((4,))
    h = keras.layers.Dense(8, name="dense")(x)
    h = keras.layers.LayerNormalization(name="norm")(h)
    h = keras.layers.Dropout(0.1, name="drop")(h)
    pruned = prune_model(keras.Model(x, h), schedule="constant")
    kinds = {layer.name: type(layer).__name__ for layer in pruned.layers[1:]}
    assert kinds == {"prune_low_magnitude_dense": "PruneLowMagnitude",
                     "norm": "LayerNormalization", "drop": "Dropout"}


def test_pruned_model_shares_variables_with_the_original():
    x = keras.Input((4,))
    model = keras.Model(x, keras.layers.Dense(2, name="dense")(x))
    pruned = prune_model(model, schedule="constant")
    assert pruned.layers[1].layer is model.get_layer("dense")


def test_sparsity_report_hand_checked():
    ids = keras.Input((3,), dtype="int32")
    embedding = keras.layers.Embedding(5, 2, name="embedding")
    dense = keras.layers.Dense(2, name="dense")
    model = keras.Model(ids, dense(embedding(ids)))
    embedding.embeddings.assign(np.array([[0, 0], [0, 1], [2, 0], [3, 4], [0, 0]], np.float32))
    dense.kernel.assign(np.array([[0, 1], [2, 3]], np.float32))
    dense.bias.assign(np.zeros(2, np.float32))  # biases are not prunable: not counted
    assert sparsity_report(model) == {
        "layers": {"embedding": {"zeros": 6, "size": 10, "sparsity": 0.6},
                   "dense": {"zeros": 1, "size": 4, "sparsity": 0.25}},
        "zeros": 7, "size": 14, "sparsity": 0.5,
    }
    # Wrapped layers are reported under their own names, with the same counts.
    assert sparsity_report(prune_model(model, schedule="constant")) == sparsity_report(model)


def test_gzip_size_hand_checked(tmp_path):
    path = tmp_path / "blob.bin"
    payload = bytes(range(256)) * 4 + bytes(1000)
    path.write_bytes(payload)
    assert gzip_size(path) == len(gzip.compress(payload))
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "a").write_bytes(b"a" * 100)
    (tmp_path / "dir" / "b").write_bytes(payload)
    assert gzip_size(tmp_path / "dir") == (len(gzip.compress(b"a" * 100))
                                            + len(gzip.compress(payload)))


def test_gzip_size_of_a_model_shrinks_with_sparsity():
    x = keras.Input((64,))
    layer = keras.layers.Dense(64, use_bias=False)
    model = keras.Model(x, layer(x))
    dense_size = gzip_size(model)
    kernel = layer.kernel.numpy()
    kernel[np.abs(kernel) < np.quantile(np.abs(kernel), 0.8)] = 0.0
    layer.kernel.assign(kernel)
    assert sparsity_report(model)["sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert gzip_size(model) < 0.5 * dense_size


@pytest.mark.parametrize(
    "kwargs, message",
    [({"schedule": "cubic"}, "schedule"), ({"schedule": "polynomial"}, "end_step"),
     ({"target_sparsity": 1.0}, "target_sparsity"), ({"frequency": 0}, "frequency")])
def test_schedule_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_schedule(**kwargs)


def test_prune_model_with_its_defaults_says_what_to_give():
    """The default schedule ramps up to `end_step`, which only the caller knows: the error says
    so and offers the constant schedule."""
    x = keras.Input((4,))
    with pytest.raises(ValueError, match=r"schedule='polynomial' \(the default\).*end_step.*"
                                         r"schedule='constant'"):
        prune_model(keras.Model(x, keras.layers.Dense(2)(x)))


def test_pruning_callbacks():
    assert [type(c).__name__ for c in pruning_callbacks()] == ["UpdatePruningStep"]
    names = [type(c).__name__ for c in pruning_callbacks(log_dir="/tmp/unused")]
    assert names == ["UpdatePruningStep", "PruningSummaries"]


def test_constant_schedule_prunes_at_begin_step():
    schedule = make_schedule(0.5, "constant", begin_step=2, frequency=1)
    prune, sparsity = schedule(tf.constant(2, tf.int64))
    assert bool(prune) and float(sparsity) == 0.5
    assert not bool(schedule(tf.constant(1, tf.int64))[0])


def test_layer_cases_cover_every_registered_weighted_layer():
    """A new registered layer with weights must get a pruning/QAT case (or stay weightless)."""
    covered = set()
    for param in oc.weighted_layer_cases():
        case = param.values[0]
        covered.add(oc.ItemEmbedding if case == "item_embedding" else case.cls)
    for cls in oc.registered_layer_classes():
        if cls in covered:
            continue
        if cls in oc.PARAMETER_FREE_INPUTS:
            layer = cls()
            layer(oc.PARAMETER_FREE_INPUTS[cls]())
            assert not layer.weights, cls
        elif cls in oc.FIXED_WEIGHT_INPUTS:
            layer, inputs = oc.FIXED_WEIGHT_INPUTS[cls]()
            layer(inputs)
            assert layer.weights and not layer.trainable_weights, cls
            assert layer.get_prunable_weights() == [], cls
        else:
            case = next((c for c in lc.ATTENTION_CASES if c.cls is cls), None)
            assert case is not None, f"{cls.__name__} has no case in layer_cases or here"


def test_pruning_under_mixed_precision_with_float32_and_embedding_layers():
    """Keras' `Embedding` (its table is never cast) and a `Dense(dtype="float32")` output layer
    (the mixed-precision guide's) are pruned beside our mixed layers: TFMOT's wrapper read its
    masks in float16 against their float32 weights and the masking multiply failed."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    ids = keras.Input((6,), dtype="int64")
    x = keras.layers.Embedding(20, 8, name="embedding")(ids)
    x = oc.lc.ATTENTION_CASES[2].make()(x)  # mha_self, mixed
    out = keras.layers.Dense(3, dtype="float32", name="head")(keras.layers.Flatten()(x))
    model = keras.Model(ids, out)
    feed = [np.random.default_rng(0).integers(1, 20, size=(4, 6))]
    pruned = prune_model(model, target_sparsity=0.5, schedule="constant", frequency=1)
    _fit_steps(pruned, feed, steps=1)
    assert pruned(feed).dtype == tf.float32
    report = sparsity_report(pruned)
    assert set(report["layers"]) >= {"embedding", "head"}
    for entry in report["layers"].values():
        assert entry["sparsity"] == pytest.approx(0.5, abs=0.05), report


def test_pruning_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    case = oc.lc.ATTENTION_CASES[2]  # mha_self
    model, feed, _ = oc.case_model(case)
    pruned = prune_model(model, schedule="constant", frequency=1)
    _fit_steps(pruned, feed, steps=1)
    assert pruned(feed).dtype == tf.float16
    assert sparsity_report(pruned)["sparsity"] == pytest.approx(0.8, abs=0.02)
