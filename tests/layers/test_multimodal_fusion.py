"""MultimodalFusion: NumPy golden values, modality masks, sequences, permutation invariance,
serialization, SavedModel, pruning, QAT and TFLite."""

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from tfrec_attn._keras import keras, tf
from tfrec_attn.export import assert_builtin_only
from tfrec_attn.layers import MultimodalFusion
from tfrec_attn.optimization import make_qat_model
from tfrec_attn.testing import list_input_cases as lic

CASE = lic.FUSION_CASE
WIDTHS = lic.MODALITY_WIDTHS
LENGTH = 4


def fusion_reference(layer, inputs, present):
    """NumPy fusion of `(batch, d_m)` modalities with `layer`'s weights: `(fused, weights)`."""
    def dense(x, sublayer):
        return x @ sublayer.kernel.numpy() + sublayer.bias.numpy()

    present = np.array(present, bool)
    tokens = np.stack([dense(x, getattr(layer, f"projection_{i}"))
                       for i, x in enumerate(inputs)], axis=1)  # (B, M, dim)
    batch, count, dim = tokens.shape
    if layer.query == "first":
        query = tokens[:, 0]
        present[:, 0] = True
    else:
        query = np.broadcast_to(layer.learned_query.numpy(), (batch, dim))
    attention = layer.attention
    heads, key_dim = attention.num_heads, attention._head_key_dim
    q = dense(query, attention.query_dense).reshape(batch, heads, key_dim)
    k = dense(tokens, attention.key_dense).reshape(batch, count, heads, key_dim)
    v = dense(tokens, attention.value_dense).reshape(batch, count, heads, -1)
    weights = np.zeros((batch, heads, 1, count))
    mixed = np.zeros((batch, heads, v.shape[-1]))
    for b in range(batch):
        seen = np.flatnonzero(present[b])
        for h in range(heads if len(seen) else 0):
            logits = k[b, seen, h] @ q[b, h] / np.sqrt(key_dim)
            alpha = np.exp(logits - logits.max())
            alpha /= alpha.sum()
            weights[b, h, 0, seen] = alpha
            mixed[b, h] = alpha @ v[b, seen, h]
    fused = dense(mixed.reshape(batch, -1), attention.output_dense)
    return np.where(present.any(-1)[:, None], fused, 0.0), weights


def _randomize(layer, seed=1):
    rng = np.random.default_rng(seed)
    for weight in layer.weights:
        weight.assign(rng.normal(scale=0.5, size=weight.shape))


def _sequence_inputs(seed=0):
    """`(inputs (B, T, d_m) each, present (B, T, M))`, some positions with no modality."""
    rng = np.random.default_rng(seed)
    inputs = [rng.normal(size=(lic.BATCH, LENGTH, w)).astype(np.float32) for w in WIDTHS]
    present = rng.random((lic.BATCH, LENGTH, len(WIDTHS))) < 0.6
    present[0, 0] = False
    return inputs, present


@pytest.mark.parametrize("query", ["learned", "first"])
def test_matches_numpy_reference(query):
    inputs, present = lic.fusion_inputs(np.random.default_rng(0))
    layer = MultimodalFusion(dim=6, num_heads=2, query=query)
    layer(inputs, mask=present)
    _randomize(layer)
    fused, weights = layer(inputs, mask=present, return_attention_scores=True)
    expected, expected_weights = fusion_reference(layer, inputs, present)
    assert fused.shape == (lic.BATCH, 6) and weights.shape == (lic.BATCH, 2, 1, 3)
    np.testing.assert_allclose(weights, expected_weights, atol=1e-6)
    np.testing.assert_allclose(fused, expected, atol=1e-5)


@pytest.mark.parametrize("query", ["learned", "first"])
def test_sequences_fuse_each_position_independently(query):
    inputs, present = _sequence_inputs()
    layer = MultimodalFusion(dim=6, num_heads=2, query=query)
    fused, weights = layer(inputs, mask=present, return_attention_scores=True)
    assert fused.shape == (lic.BATCH, LENGTH, 6)
    assert weights.shape == (lic.BATCH, LENGTH, 2, 3)  # (batch, T, heads, M)
    for t in range(LENGTH):
        expected, expected_weights = fusion_reference(layer, [x[:, t] for x in inputs],
                                                      present[:, t])
        np.testing.assert_allclose(fused[:, t], expected, atol=1e-5)
        np.testing.assert_allclose(weights[:, t], expected_weights[:, :, 0], atol=1e-6)
    # A (batch, M) mask is broadcast over time.
    per_row = layer(inputs, mask=present[:, 0])
    tiled = layer(inputs, mask=np.repeat(present[:, :1], LENGTH, axis=1))
    np.testing.assert_allclose(per_row, tiled, atol=1e-6)


def test_implicit_per_input_masks_equal_explicit_mask():
    """Keras' per-modality masks (here from `Masking`) == the stacked `(batch, T, M)` mask."""
    inputs, present = _sequence_inputs()
    inputs = [x * present[..., i, None] for i, x in enumerate(inputs)]  # missing -> zeros
    layer = MultimodalFusion(num_heads=2)
    symbolic = [keras.Input((LENGTH, w)) for w in WIDTHS]
    model = keras.Model(symbolic, layer([keras.layers.Masking(0.0)(x) for x in symbolic]))
    implicit = model(inputs)
    np.testing.assert_allclose(implicit, layer(inputs, mask=present), atol=1e-6)
    np.testing.assert_array_equal(implicit._keras_mask, present.any(-1))


def test_missing_modality_gets_zero_weight_and_its_content_is_ignored():
    inputs, present = lic.fusion_inputs(np.random.default_rng(0))
    layer = MultimodalFusion(num_heads=2)
    fused, weights = layer(inputs, mask=present, return_attention_scores=True)
    weights = weights.numpy()
    np.testing.assert_array_equal(weights[np.broadcast_to(~present[:, None, None], weights.shape)],
                                  0.0)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    rng = np.random.default_rng(7)
    noisy = [np.where(present[:, i, None], x, rng.normal(scale=5.0, size=x.shape))
             .astype(np.float32) for i, x in enumerate(inputs)]
    np.testing.assert_allclose(layer(noisy, mask=present), fused, atol=1e-6)


def test_row_without_modalities_outputs_zeros():
    inputs, _ = lic.fusion_inputs(np.random.default_rng(0))
    present = np.array([[True, False, True], [False, False, False], [False, True, False]])
    fused, weights = MultimodalFusion(num_heads=2)(inputs, mask=present,
                                                   return_attention_scores=True)
    np.testing.assert_array_equal(fused.numpy()[1], 0.0)
    np.testing.assert_array_equal(weights.numpy()[1], 0.0)
    assert np.all(np.isfinite(fused.numpy()))


def test_mixed_precision_sequence_fusion():
    inputs, present = _sequence_inputs()
    fused, weights = MultimodalFusion(num_heads=2, dtype="mixed_float16")(
        inputs, mask=present, return_attention_scores=True)
    assert fused.dtype == tf.float16 and weights.dtype == tf.float32
    assert np.all(np.isfinite(fused.numpy().astype(np.float32)))
    np.testing.assert_array_equal(weights.numpy()[np.broadcast_to(~present[:, :, None],
                                                                  weights.shape)], 0.0)


def test_first_query_keeps_the_first_modality_present():
    inputs, present = lic.fusion_inputs(np.random.default_rng(0))
    layer = MultimodalFusion(query="first", num_heads=2)
    hidden_first = present.copy()
    hidden_first[:, 0] = False
    np.testing.assert_allclose(layer(inputs, mask=hidden_first), layer(inputs, mask=present),
                               atol=1e-6)


def test_permuting_modalities_with_their_projections_changes_nothing():
    inputs, present = lic.fusion_inputs(np.random.default_rng(0))
    layer = MultimodalFusion(num_heads=2)
    fused, weights = layer(inputs, mask=present, return_attention_scores=True)
    perm = [2, 0, 1]
    permuted = MultimodalFusion(num_heads=2, dim=lic.DIM)
    permuted([inputs[p] for p in perm], mask=present[:, perm])
    for i, p in enumerate(perm):
        getattr(permuted, f"projection_{i}").set_weights(
            getattr(layer, f"projection_{p}").get_weights())
    permuted.learned_query.assign(layer.learned_query)
    permuted.attention.set_weights(layer.attention.get_weights())
    got, got_weights = permuted([inputs[p] for p in perm], mask=present[:, perm],
                                return_attention_scores=True)
    np.testing.assert_allclose(got, fused, atol=1e-6)
    np.testing.assert_allclose(got_weights, weights.numpy()[..., perm], atol=1e-6)


def test_dim_defaults_to_the_first_modality_and_output_shape():
    inputs, present = lic.fusion_inputs(np.random.default_rng(0))
    layer = MultimodalFusion()
    fused = layer(inputs[::-1], mask=present)
    assert fused.shape == (lic.BATCH, WIDTHS[-1])
    assert layer.compute_output_shape([x.shape for x in inputs[::-1]]) == fused.shape


@pytest.mark.parametrize("kwargs, message", [
    ({"dim": 0}, "dim"), ({"num_heads": -1}, "num_heads"), ({"key_dim": 0}, "key_dim"),
    ({"query": "mean"}, "query"), ({"dropout": 1.5}, "dropout")])
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MultimodalFusion(**kwargs)


def test_bad_inputs_and_masks_raise():
    inputs, present = lic.fusion_inputs(np.random.default_rng(0))
    with pytest.raises(ValueError, match="list of modality tensors"):
        MultimodalFusion()(inputs[0])
    with pytest.raises(ValueError, match="all"):
        MultimodalFusion()([inputs[0], np.ones((3, 2, 4), np.float32)])
    layer = MultimodalFusion()
    layer(inputs)
    with pytest.raises(ValueError, match="mask must be"):
        layer(inputs, mask=present[:, :2])
    with pytest.raises(ValueError, match="built for 3 modalities"):
        layer(inputs[:2])


def test_config_round_trip_and_deserialize():
    inputs, present = lic.fusion_inputs(np.random.default_rng(0))
    layer = MultimodalFusion(dim=6, num_heads=2, query="first", key_dim=4)
    expected = layer(inputs, mask=present)
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(restored) is MultimodalFusion
    assert restored.get_config() == layer.get_config()
    restored(inputs, mask=present)
    restored.set_weights(layer.get_weights())
    np.testing.assert_allclose(restored(inputs, mask=present), expected, atol=1e-6)


def test_pruning_to_half_keeps_missing_modalities_masked():
    inputs, mask = CASE.sample()
    present = CASE.mask_array(mask)
    pruned, feed, kernels = lic.prune_one_epoch(CASE, 0.5)
    assert len(kernels) == 3 + 4  # one projection per modality, the attention's four
    for kernel in kernels:
        assert np.mean(kernel.numpy() == 0.0) == pytest.approx(0.5, abs=0.05)
    scores = pruned(feed)["scores"].numpy()
    np.testing.assert_array_equal(scores[np.broadcast_to(~present[:, None, None], scores.shape)],
                                  0.0)
    rng = np.random.default_rng(3)
    noisy = [np.where(present[:, i, None], x, rng.normal(scale=5.0, size=x.shape))
             .astype(np.float32) for i, x in enumerate(inputs)]
    np.testing.assert_allclose(pruned(lic.model_feed(CASE, noisy, mask))["output"],
                               pruned(feed)["output"], atol=1e-6)


def test_qat_trains_one_step_with_first_query():
    """The learned query runs in the optimization suite's QAT cases; this covers `"first"`."""
    case = lic.ListInputCase("fusion_first", MultimodalFusion, {"query": "first"},
                             input_fn=lic.fusion_inputs, projected=(0, 1, 2), per_input_mask=True)
    inputs, mask = case.sample()
    model = lic.build_model(case, case.make(name="fusion"))
    qat = make_qat_model(model)
    wrapper = qat.get_layer("fusion")
    assert len(wrapper._weight_vars) == 3 + 4  # no learned query
    feed = lic.model_feed(case, inputs, mask)
    before = [w.numpy() for w, _, _ in wrapper._weight_vars]
    qat.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", run_eagerly=True)
    history = qat.fit(feed, np.ones(model(feed).shape, np.float32), batch_size=lic.BATCH,
                      epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = [w.numpy() for w, _, _ in wrapper._weight_vars]
    assert all(not np.array_equal(a, b) for a, b in zip(after, before, strict=True))


def _name(symbolic) -> str:
    return symbolic.name.split(":")[0]


@pytest.mark.parametrize("quantization", [
    "float", pytest.param("int8", marks=pytest.mark.slow)])  # int8 calibration: ~5 s more
def test_tflite_builtin_ops_match_keras(quantization, tmp_path):
    inputs, mask = CASE.sample()
    model = lic.build_model(CASE, CASE.make())
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantization == "int8":
        def representative():
            for seed in range(8):
                rows = lic.model_feed(CASE, *CASE.sample(seed=seed))
                for row in range(lic.BATCH):
                    yield {_name(x): r[row:row + 1]
                           for x, r in zip(model.inputs, rows, strict=True)}

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                               tf.lite.OpsSet.TFLITE_BUILTINS]
    path = tmp_path / f"{quantization}.tflite"
    path.write_bytes(converter.convert())
    assert_builtin_only(path)
    runner = Interpreter(model_path=str(path)).get_signature_runner()
    feed = lic.model_feed(CASE, inputs, mask)
    for row in range(lic.BATCH):  # the converted batch size is 1: run row by row
        one = [x[row:row + 1] for x in feed]
        got = next(iter(runner(**{_name(x): v for x, v in zip(model.inputs, one,
                                                               strict=True)}).values()))
        expected = model(one).numpy()
        if quantization == "float":
            np.testing.assert_allclose(got, expected, atol=1e-5)
        else:
            assert np.abs(got - expected).max() < 0.1 * np.abs(expected).max()
