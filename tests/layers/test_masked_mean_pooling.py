"""MaskedMeanPooling: GlobalAveragePooling1D's masked mean in float, padding ignored, serializable,
weightless, its mask surviving TFMOT's wrappers, and no int8 `DIV` in TFLite."""

import numpy as np
import pytest

from tfrec_attn._keras import keras, tf
from tfrec_attn.export import tflite_ops
from tfrec_attn.layers import ItemEmbedding, MaskedMeanPooling, PaddingMask
from tfrec_attn.optimization import make_qat_model, prune_model
from tfrec_attn.optimization.quantize_configs import (
    NoOpQuantizeConfig,
    quantize_config_for,
    quantize_scope,
)
from tfrec_attn.testing import layer_tflite as lt
from tfrec_attn.testing.layer_cases import left_padding_mask

LENGTHS = (6, 3, 1)  # real positions a row, left-padded
T, DIM = 6, 4


def _inputs(seed=0):
    x = np.random.default_rng(seed).normal(size=(len(LENGTHS), T, DIM)).astype(np.float32)
    return x, left_padding_mask(LENGTHS, T)


def _id_model():
    """ids -> embedding -> pooled, the mask from the ids passed explicitly (as DIN does)."""
    ids = keras.Input((T,), dtype="int32", name="ids")
    vectors = ItemEmbedding(20, DIM, name="embedding")(ids)
    pooled = MaskedMeanPooling(name="pool")(vectors, mask=PaddingMask(name="padding")(ids))
    return keras.Model(ids, pooled)


def _ids():
    return np.where(left_padding_mask(LENGTHS, T), np.arange(2, 2 + T), 0).astype(np.int32)


def test_equals_global_average_pooling_masked_mean():
    x, mask = _inputs()
    got = MaskedMeanPooling()(x, mask=mask)
    np.testing.assert_allclose(got, keras.layers.GlobalAveragePooling1D()(x, mask=mask),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got[2], x[2, -1])  # one real item: itself
    np.testing.assert_allclose(MaskedMeanPooling()(x), x.mean(axis=1), rtol=1e-6, atol=1e-7)


def test_padded_positions_are_ignored_and_an_empty_row_pools_to_zeros():
    x, mask = _inputs()
    noise = np.random.default_rng(1).normal(size=x.shape).astype(np.float32) * 100
    layer = MaskedMeanPooling()
    np.testing.assert_allclose(layer(np.where(mask[..., None], x, noise), mask=mask),
                               layer(x, mask=mask), rtol=1e-6, atol=1e-6)
    empty = np.zeros((1, T), bool)
    np.testing.assert_array_equal(layer(x[:1], mask=empty), np.zeros((1, DIM)))


def test_implicit_keras_mask_equals_explicit_mask():
    ids = _ids()
    embedding = keras.layers.Embedding(20, DIM, mask_zero=True)
    implicit = MaskedMeanPooling()(embedding(ids))  # Keras passes the embedding's mask
    explicit = MaskedMeanPooling()(embedding(ids), mask=ids != 0)
    np.testing.assert_allclose(implicit, explicit, atol=1e-7)


def test_dynamic_length_in_a_graph():
    x, mask = _inputs()
    pool = tf.function(MaskedMeanPooling(), input_signature=[
        tf.TensorSpec([None, None, DIM]), tf.TensorSpec([None, None], tf.bool)])
    np.testing.assert_allclose(pool(x, mask), MaskedMeanPooling()(x, mask=mask), atol=1e-7)


def test_shapes_and_bad_inputs():
    layer = MaskedMeanPooling()
    assert layer.compute_output_shape((None, T, DIM)) == tf.TensorShape([None, DIM])
    assert layer.compute_mask(np.ones((1, T, DIM)), np.ones((1, T), bool)) is None
    with pytest.raises(ValueError, match="expects inputs of rank 3"):
        layer(np.ones((2, DIM), np.float32))
    with pytest.raises(ValueError, match=r"expects mask of shape \(3, 6\)"):
        layer(_inputs()[0], mask=np.ones((3, T - 1), bool))


def test_config_round_trip_and_saved_model(tmp_path):
    layer = MaskedMeanPooling(name="pool")
    assert keras.saving.get_registered_name(MaskedMeanPooling) == "tfrec_attn>MaskedMeanPooling"
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(clone) is MaskedMeanPooling and clone.get_config() == layer.get_config()
    model, ids = _id_model(), _ids()
    model.save(str(tmp_path / "model"), save_format="tf")
    restored = keras.models.load_model(str(tmp_path / "model"))
    assert isinstance(restored.get_layer("pool"), MaskedMeanPooling)
    np.testing.assert_allclose(restored(ids), model(ids), atol=1e-7)


def _assert_padding_ignored(model):
    """Row 0 of the embedding is what padded positions carry: changing it moves nothing."""
    ids = _ids()
    before = model(ids)
    table = next(w for w in model.weights if w.name.endswith("embeddings:0"))
    table.assign(tf.tensor_scatter_nd_update(table, [[0]], [tf.fill([DIM], 7.0)]))
    np.testing.assert_allclose(model(ids), before, atol=1e-6)


def test_weightless_and_the_mask_survives_pruning_and_qat_wrappers(tmp_path):
    layer = MaskedMeanPooling()
    layer(*_inputs()[:1])
    assert layer.weights == [] and layer.get_prunable_weights() == []
    assert isinstance(quantize_config_for(layer), NoOpQuantizeConfig)
    _assert_padding_ignored(prune_model(_id_model(), target_sparsity=0.5, schedule="constant"))
    qat = make_qat_model(_id_model())
    assert type(qat.get_layer("pool")).__name__ == "QuantizeWrapperV2"
    qat(_ids(), training=True)  # sets the quantization ranges
    _assert_padding_ignored(qat)
    qat.save(tmp_path / "qat.h5")
    with quantize_scope():
        loaded = keras.models.load_model(tmp_path / "qat.h5")
    np.testing.assert_allclose(loaded(_ids()), qat(_ids()), atol=1e-6)


def test_int8_tflite_has_no_division_and_matches_keras(tmp_path):
    x, mask = _inputs()
    inputs = keras.Input((T, DIM), name="x")
    padding = keras.Input((T,), dtype="bool", name="mask")
    model = keras.Model([inputs, padding], MaskedMeanPooling()(inputs, mask=padding))
    calibration = [list(_inputs(seed)) for seed in range(8)]
    path = lt.convert(model, tmp_path / "pool.tflite", len(LENGTHS), "int8", calibration)
    assert "DIV" not in tflite_ops(path)
    got = lt.run(path, model, [[x, mask]])[0]
    want = model([x, mask]).numpy()
    step = np.ptp(want) / 255
    np.testing.assert_allclose(got, want, atol=3 * step)
