"""ItemDropout: identity at inference and with rate 0; drops ~rate of the real ids to padding in
training, never a whole row; serializable; bad arguments rejected."""

import numpy as np
import pytest

from tfrec_attn._keras import keras, tf
from tfrec_attn.layers import ItemDropout

IDS = np.array([[0, 0, 2, 3, 4], [5, 6, 7, 8, 9], [0, 0, 0, 0, 0], [0, 0, 0, 0, 11]], np.int64)


@pytest.mark.parametrize("training", [False, None])
def test_inference_is_identity(training):
    out = ItemDropout(rate=0.9)(tf.constant(IDS), training=training)
    np.testing.assert_array_equal(out.numpy(), IDS)


def test_rate_zero_is_identity_in_training():
    out = ItemDropout(rate=0.0)(tf.constant(IDS), training=True)
    np.testing.assert_array_equal(out.numpy(), IDS)


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.8])
def test_training_drops_about_rate_of_real_ids_to_padding(rate):
    rng = np.random.default_rng(0)
    ids = rng.integers(2, 1000, size=(128, 64))
    ids[:, :8] = 0  # left padding
    out = ItemDropout(rate=rate)(tf.constant(ids), training=True).numpy()
    assert (out[:, :8] == 0).all()  # padding stays padding
    kept = out[:, 8:] != 0
    np.testing.assert_array_equal(out[:, 8:][kept], ids[:, 8:][kept])  # kept ids unchanged
    assert abs((1 - kept.mean()) - rate) < 0.02, 1 - kept.mean()


@pytest.mark.parametrize("pad_id", [0, -1])
def test_never_empties_a_row(pad_id):
    rng = np.random.default_rng(1)
    lengths = rng.integers(0, 4, size=500)
    ids = np.full((500, 4), pad_id, np.int64)
    for row, n in zip(ids, lengths):
        row[4 - n:] = rng.integers(2, 50, size=n)
    out = ItemDropout(rate=0.95, pad_id=pad_id)(tf.constant(ids), training=True).numpy()
    real_in, real_out = (ids != pad_id).sum(1), (out != pad_id).sum(1)
    np.testing.assert_array_equal(real_out >= 1, real_in >= 1)  # rows keep >= 1 real id
    assert (real_out <= real_in).all()
    assert (real_out[real_in == 3] == 1).mean() > 0.8  # at 95% most rows fall back to one id
    assert np.isin(out, np.r_[pad_id, np.unique(ids)]).all()


def test_replacement_id_keeps_padding_and_marks_dropped_items():
    rng = np.random.default_rng(2)
    ids = rng.integers(2, 1000, size=(128, 64))
    ids[:, :8] = 0
    out = ItemDropout(rate=0.4, replacement_id=1)(tf.constant(ids), training=True).numpy()
    assert (out[:, :8] == 0).all()  # padding is not replaced
    dropped = out[:, 8:] == 1
    np.testing.assert_array_equal(out[:, 8:][~dropped], ids[:, 8:][~dropped])
    assert abs(dropped.mean() - 0.4) < 0.02, dropped.mean()


def test_symbolic_training_flag():
    layer = ItemDropout(rate=0.99)
    ids = tf.constant(IDS[1:2])
    fn = tf.function(lambda x, training: layer(x, training=training))
    np.testing.assert_array_equal(fn(ids, tf.constant(False)).numpy(), IDS[1:2])
    assert int(tf.reduce_sum(tf.cast(fn(ids, tf.constant(True)) != 0, tf.int32))) == 1


def test_functional_model_forwards_the_training_flag():
    """`fit` calls a functional model with `training=True`, `predict` with `False`."""
    ids = keras.Input((5,), dtype="int64")
    model = keras.Model(ids, ItemDropout(rate=0.5, name="drop")(ids))
    np.testing.assert_array_equal(model.predict(IDS, verbose=0), IDS)
    dropped = model(np.repeat(IDS[1:2], 64, 0), training=True).numpy()
    assert 0.3 < (dropped == 0).mean() < 0.7


def test_config_round_trip():
    layer = ItemDropout(rate=0.3, pad_id=-1, seed=7, replacement_id=1, name="drop")
    config = layer.get_config()
    assert {k: config[k] for k in ("rate", "pad_id", "seed", "replacement_id")} == {
        "rate": 0.3, "pad_id": -1, "seed": 7, "replacement_id": 1}
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(clone) is ItemDropout and clone.get_config() == config
    assert keras.saving.get_registered_name(ItemDropout) == "tfrec_attn>ItemDropout"
    assert layer.get_prunable_weights() == [] and not layer.weights


@pytest.mark.parametrize("kwargs, message", [
    ({"rate": 1.0}, "rate"), ({"rate": -0.1}, "rate"), ({"rate": "0.5"}, "rate"),
    ({"pad_id": 0.5}, "pad_id"), ({"seed": "1"}, "seed"),
    ({"replacement_id": True}, "replacement_id"), ({"replacement_id": 1.0}, "replacement_id"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ItemDropout(**kwargs)
