"""GraphAttention: NumPy GAT/GATv2 golden values, edge and padding masks, permutation
equivariance, serialization, SavedModel, pruning, QAT and TFLite."""

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from tfrec_attn._keras import keras, tf
from tfrec_attn.export import assert_builtin_only
from tfrec_attn.layers import GraphAttention
from tfrec_attn.optimization import make_qat_model
from tfrec_attn.testing import list_input_cases as lic

CASE = lic.GRAPH_CASE
VARIANTS = [pytest.param({"version": v, "concat_heads": c}, id=f"v{v}-{'concat' if c else 'mean'}")
            for v in (1, 2) for c in (True, False)]


def _leaky(x, slope=0.2):
    return np.where(x > 0, x, slope * x)


def _softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def gat_reference(layer, nodes, adjacency, mask):
    """Loop-per-node NumPy GAT / GATv2 with `layer`'s weights: `(outputs, weights)`."""
    batch, count, _ = nodes.shape
    heads, units = layer.num_heads, layer._units
    h = (nodes @ layer.source_dense.kernel.numpy()).reshape(batch, count, heads, units)
    edges = adjacency != 0
    if layer.add_self_loops:
        edges = edges | np.eye(count, dtype=bool)
    edges = edges & mask[:, :, None] & mask[:, None, :]
    out = np.zeros((batch, count, heads, units))
    weights = np.zeros((batch, heads, count, count))
    for b in range(batch):
        for i in range(count):
            neighbours = np.flatnonzero(edges[b, i])
            for k in range(heads):
                if not len(neighbours):
                    continue
                if layer.version == 1:
                    e = _leaky(h[b, i, k] @ layer.attention_target.numpy()[k]
                               + h[b, neighbours, k] @ layer.attention_source.numpy()[k])
                else:
                    target = (nodes[b, i] @ layer.target_dense.kernel.numpy()).reshape(heads,
                                                                                       units)
                    e = _leaky(target[k] + h[b, neighbours, k]) @ layer.attention_vector.numpy()[k]
                alpha = _softmax(e)
                weights[b, k, i, neighbours] = alpha
                out[b, i, k] = alpha @ h[b, neighbours, k]
    combined = out.reshape(batch, count, heads * units) if layer.concat_heads else out.mean(2)
    combined = layer.activation(tf.constant(combined + layer.bias.numpy(), tf.float32)).numpy()
    return np.where(edges.any(-1)[..., None], combined, 0.0), weights


def _layer(**kwargs):
    return GraphAttention(**{"num_heads": 2, **kwargs})


def _randomize(layer, seed=1):
    rng = np.random.default_rng(seed)
    for weight in layer.weights:
        weight.assign(rng.normal(scale=0.5, size=weight.shape))


@pytest.mark.parametrize("kwargs", VARIANTS)
def test_matches_numpy_reference(kwargs):
    (nodes, adjacency), mask = CASE.sample()
    layer = _layer(units=3, activation="elu", **kwargs)
    layer([nodes, adjacency], mask=mask)
    _randomize(layer)
    outputs, weights = layer([nodes, adjacency], mask=mask, return_attention_scores=True)
    expected_outputs, expected_weights = gat_reference(layer, nodes, adjacency, mask)
    assert outputs.shape == (lic.BATCH, lic.NUM_NODES, 6 if kwargs["concat_heads"] else 3)
    assert weights.shape == (lic.BATCH, 2, lic.NUM_NODES, lic.NUM_NODES)
    np.testing.assert_allclose(weights, expected_weights, atol=1e-6)
    np.testing.assert_allclose(outputs, expected_outputs, atol=1e-5)


@pytest.mark.parametrize("version", [1, 2])
def test_weights_vanish_off_edges_and_sum_to_one_over_neighbours(version):
    (nodes, adjacency), mask = CASE.sample()
    layer = _layer(version=version, bias_initializer="ones")
    outputs, weights = layer([nodes, adjacency], mask=mask, return_attention_scores=True)
    weights, outputs = weights.numpy(), outputs.numpy()
    allowed = (adjacency != 0) | np.eye(lic.NUM_NODES, dtype=bool)
    allowed = allowed & mask[:, :, None] & mask[:, None, :]
    np.testing.assert_array_equal(weights[np.broadcast_to(~allowed[:, None], weights.shape)], 0.0)
    sums = weights.sum(-1).transpose(0, 2, 1)  # (batch, N, heads)
    np.testing.assert_allclose(sums[mask], 1.0, atol=1e-5)
    np.testing.assert_array_equal(sums[~mask], 0.0)
    np.testing.assert_array_equal(outputs[~mask], 0.0)  # not the bias


def test_node_without_neighbours_gets_zero_weights_and_zero_output_not_nan():
    nodes = np.random.default_rng(0).normal(size=(1, 3, 4)).astype(np.float32)
    adjacency = np.array([[[0, 1, 0], [0, 0, 0], [1, 1, 0]]], np.float32)  # node 1: no edge
    layer = GraphAttention(add_self_loops=False, bias_initializer="ones", activation="sigmoid")
    outputs, weights = layer([nodes, adjacency], return_attention_scores=True)
    assert np.all(np.isfinite(outputs.numpy())) and np.all(np.isfinite(weights.numpy()))
    np.testing.assert_array_equal(weights.numpy()[0, 0, 1], 0.0)
    np.testing.assert_array_equal(outputs.numpy()[0, 1], 0.0)
    np.testing.assert_allclose(weights.numpy()[0, 0].sum(-1), [1.0, 0.0, 1.0], atol=1e-6)


@pytest.mark.parametrize("version", [1, 2])
def test_padded_node_content_cannot_change_real_outputs(version):
    (nodes, adjacency), mask = CASE.sample()
    layer = _layer(version=version)
    before = layer([nodes, adjacency], mask=mask).numpy()
    rng = np.random.default_rng(5)
    noisy_nodes = np.where(mask[..., None], nodes, rng.normal(scale=5.0, size=nodes.shape))
    real_pair = mask[:, :, None] & mask[:, None, :]
    noisy_adjacency = np.where(real_pair, adjacency, rng.random(adjacency.shape) < 0.5)
    after = layer([noisy_nodes.astype(np.float32), noisy_adjacency.astype(np.float32)],
                  mask=mask).numpy()
    np.testing.assert_allclose(after[mask], before[mask], atol=1e-6)
    np.testing.assert_array_equal(after[~mask], 0.0)


@pytest.mark.parametrize("version", [1, 2])
def test_permuting_nodes_permutes_outputs_and_weights(version):
    (nodes, adjacency), mask = CASE.sample()
    layer = _layer(version=version)
    outputs, weights = layer([nodes, adjacency], mask=mask, return_attention_scores=True)
    perm = np.random.default_rng(2).permutation(lic.NUM_NODES)
    permuted, permuted_weights = layer(
        [nodes[:, perm], adjacency[:, perm][:, :, perm]], mask=mask[:, perm],
        return_attention_scores=True)
    np.testing.assert_allclose(permuted, outputs.numpy()[:, perm], atol=1e-6)
    np.testing.assert_allclose(permuted_weights, weights.numpy()[:, :, perm][:, :, :, perm],
                               atol=1e-6)


@pytest.mark.parametrize("version", [1, 2])
def test_mixed_precision_keeps_float32_weights_and_masks(version):
    (nodes, adjacency), mask = CASE.sample()
    layer = _layer(version=version, dtype="mixed_float16")
    outputs, weights = layer([nodes, adjacency], mask=mask, return_attention_scores=True)
    assert outputs.dtype == tf.float16 and weights.dtype == tf.float32
    assert np.all(np.isfinite(outputs.numpy().astype(np.float32)))
    np.testing.assert_array_equal(outputs.numpy()[~mask], 0.0)
    np.testing.assert_allclose(weights.numpy().sum(-1).transpose(0, 2, 1)[mask], 1.0, atol=1e-3)


def test_implicit_keras_mask_equals_explicit_mask():
    (nodes, adjacency), mask = CASE.sample()
    layer = _layer()
    explicit = layer([nodes, adjacency], mask=mask)
    x, a = keras.Input((lic.NUM_NODES, lic.DIM)), keras.Input((lic.NUM_NODES, lic.NUM_NODES))
    outputs = layer([keras.layers.Masking(0.0)(x), a])  # mask list [node_mask, None]
    model = keras.Model([x, a], outputs)
    implicit = model([nodes, adjacency])
    np.testing.assert_allclose(implicit.numpy()[mask], explicit.numpy()[mask], atol=1e-6)
    np.testing.assert_array_equal(implicit._keras_mask, mask)


@pytest.mark.parametrize("kwargs, width", [({}, 8), ({"concat_heads": False}, 8),
                                           ({"units": 3}, 6), ({"units": 3, "num_heads": 1}, 3)])
def test_output_width_and_compute_output_shape(kwargs, width):
    (nodes, adjacency), mask = CASE.sample()
    layer = _layer(**kwargs)
    outputs = layer([nodes, adjacency], mask=mask)
    assert outputs.shape == (lic.BATCH, lic.NUM_NODES, width)
    assert layer.compute_output_shape([nodes.shape, adjacency.shape]) == outputs.shape


def test_dropout_only_in_training():
    (nodes, adjacency), mask = CASE.sample()
    layer = _layer(dropout=0.5)
    inference = layer([nodes, adjacency], mask=mask, training=False)
    np.testing.assert_allclose(inference, _layer_copy(layer)([nodes, adjacency], mask=mask),
                               atol=1e-6)
    training = layer([nodes, adjacency], mask=mask, training=True)
    assert not np.allclose(training, inference)


def _layer_copy(layer):
    (nodes, adjacency), mask = CASE.sample()
    clone = GraphAttention.from_config({**layer.get_config(), "dropout": 0.0})
    clone([nodes, adjacency], mask=mask)
    clone.set_weights(layer.get_weights())
    return clone


@pytest.mark.parametrize("kwargs, message", [
    ({"units": 0}, "units"), ({"num_heads": 0}, "num_heads"), ({"version": 3}, "version"),
    ({"dropout": 1.0}, "dropout"), ({"negative_slope": -0.1}, "negative_slope")])
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GraphAttention(**kwargs)


def test_bad_inputs_raise():
    (nodes, adjacency), mask = CASE.sample()
    with pytest.raises(ValueError, match=r"\[nodes"):
        GraphAttention()(nodes)
    with pytest.raises(ValueError, match="num_heads"):
        GraphAttention(num_heads=3)([nodes, adjacency])  # 8 not divisible by 3


def test_config_round_trip_and_deserialize():
    (nodes, adjacency), mask = CASE.sample()
    layer = _layer(version=2, units=3, activation="relu", concat_heads=False)
    expected = layer([nodes, adjacency], mask=mask)
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(restored) is GraphAttention
    assert restored.get_config() == layer.get_config()
    restored([nodes, adjacency], mask=mask)
    restored.set_weights(layer.get_weights())
    np.testing.assert_allclose(restored([nodes, adjacency], mask=mask), expected, atol=1e-6)


def test_pruning_to_half_keeps_padding_masked():
    _, mask = CASE.sample()
    pruned, feed, kernels = lic.prune_one_epoch(CASE, 0.5)
    assert len(kernels) == 2  # source and target (GATv2) projections
    for kernel in kernels:
        assert np.mean(kernel.numpy() == 0.0) == pytest.approx(0.5, abs=0.05)
    outputs = pruned(feed)
    np.testing.assert_array_equal(outputs["output"].numpy()[~mask], 0.0)
    padded_rows = np.broadcast_to(~mask[:, None, :, None], outputs["scores"].shape)
    padded_cols = np.broadcast_to(~mask[:, None, None, :], outputs["scores"].shape)
    np.testing.assert_array_equal(outputs["scores"].numpy()[padded_rows | padded_cols], 0.0)


def test_qat_trains_one_step_version_1():
    """GATv2 runs in the optimization suite's QAT cases; this covers the one-kernel config."""
    case = lic.ListInputCase("gat_v1", GraphAttention, {"num_heads": 2, "version": 1})
    inputs, mask = case.sample()
    model = lic.build_model(case, case.make(name="gat"))
    qat = make_qat_model(model)
    feed = lic.model_feed(case, inputs, mask)
    kernel = qat.get_layer("gat").layer.source_dense
    before = [w.numpy() for w in qat.get_layer("gat").trainable_weights]
    qat.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", run_eagerly=True)
    history = qat.fit(feed, np.ones(model(feed).shape, np.float32), batch_size=lic.BATCH,
                      epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = [w.numpy() for w in qat.get_layer("gat").trainable_weights]
    assert all(not np.array_equal(a, b) for a, b in zip(after, before, strict=True))
    assert not isinstance(kernel.kernel, tf.Variable)  # the forward pass read a quantized kernel
    np.testing.assert_array_equal(qat(feed).numpy()[~mask], 0.0)


def _tflite(model, path, representative=None):
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if representative is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                               tf.lite.OpsSet.TFLITE_BUILTINS]
    path.write_bytes(converter.convert())
    assert_builtin_only(path)
    runner = Interpreter(model_path=str(path)).get_signature_runner()
    return runner


def _name(symbolic) -> str:
    return symbolic.name.split(":")[0]


def _run(runner, model, feed):
    return runner(**{_name(x): value for x, value in zip(model.inputs, feed, strict=True)})


@pytest.mark.parametrize("quantization", [
    "float", pytest.param("int8", marks=pytest.mark.slow)])  # int8 calibration: ~5 s more
def test_tflite_builtin_ops_match_keras(quantization, tmp_path):
    inputs, mask = CASE.sample()
    model = lic.build_model(CASE, CASE.make())
    feed = lic.model_feed(CASE, inputs, mask)
    representative = None
    if quantization == "int8":
        def representative():
            for seed in range(8):
                sample, sample_mask = CASE.sample(seed=seed)
                rows = lic.model_feed(CASE, sample, sample_mask)
                for row in range(lic.BATCH):
                    yield {_name(x): r[row:row + 1] for x, r in zip(model.inputs, rows,
                                                                     strict=True)}
    runner = _tflite(model, tmp_path / f"{quantization}.tflite", representative)
    for row in range(lic.BATCH):  # the converted batch size is 1: run row by row
        one = [x[row:row + 1] for x in feed]
        got = next(iter(_run(runner, model, one).values()))
        expected = model(one).numpy()
        if quantization == "float":
            np.testing.assert_allclose(got, expected, atol=1e-5)
        else:
            scale = np.abs(expected).max()
            assert np.abs(got - expected).max() < 0.1 * scale
        np.testing.assert_array_equal(got[~mask[row:row + 1]], 0.0)
