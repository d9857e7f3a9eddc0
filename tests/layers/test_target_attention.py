"""TargetAttention (DIN's activation unit): golden values against NumPy, both normalizations.

The shared contract (shapes, masks, serialization, SavedModel, mixed precision, pruning with the
softmax default) runs through its `ATTENTION_CASES` line; this file covers what is specific.
"""

import numpy as np
import pytest
import tensorflow_model_optimization as tfmot

from tfrec_attn._keras import keras, tf
from tfrec_attn.layers import PaddingMask, TargetAttention
from tfrec_attn.optimization import quantize_config_for
from tfrec_attn.testing import layer_cases as lc

HIDDEN = (5, 3)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _softmax(x, mask):
    x = np.where(mask, x, -np.inf)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def din_reference(query, value, value_mask, weights, normalize):
    """NumPy DIN: `w_ij = MLP([q_i, v_j, q_i - v_j, q_i * v_j])`, output `sum_j w_ij v_j`."""
    batch, t, dim = query.shape
    s = value.shape[1]
    q = np.broadcast_to(query[:, :, None, :], (batch, t, s, dim))
    k = np.broadcast_to(value[:, None, :, :], (batch, t, s, dim))
    hidden = np.concatenate([q, k, q - k, q * k], axis=-1)
    kernels, biases = weights[0::2], weights[1::2]
    for i, (kernel, bias) in enumerate(zip(kernels, biases, strict=True)):
        hidden = hidden @ kernel + bias
        if i < len(kernels) - 1:
            hidden = _sigmoid(hidden)
    scores = hidden[..., 0]  # (batch, T, S)
    mask = np.broadcast_to(value_mask[:, None, :], scores.shape)
    if normalize == "softmax":
        attention = _softmax(scores, mask)
    else:
        attention = np.where(mask, scores, 0.0)
    return attention @ value, attention


@pytest.mark.parametrize("normalize", ["softmax", "none"])
def test_matches_numpy_din(normalize):
    rng = np.random.default_rng(0)
    query = rng.normal(size=(2, 3, 4)).astype(np.float32)
    value = rng.normal(size=(2, 5, 4)).astype(np.float32)
    value_mask = lc.left_padding_mask([5, 2], 5)
    layer = TargetAttention(hidden_units=HIDDEN, normalize=normalize,
                            bias_initializer="random_normal")
    outputs, weights = layer([query, value], mask=[None, value_mask],
                             return_attention_scores=True)
    expected, attention = din_reference(query, value, value_mask, layer.get_weights(),
                                        normalize)
    assert [w.shape for w in layer.get_weights()[0::2]] == [(16, 5), (5, 3), (3, 1)]
    np.testing.assert_allclose(weights[:, 0], attention, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-6)
    if normalize == "none":  # raw scores: the weights are not a distribution
        assert not np.allclose(np.asarray(weights).sum(-1), 1.0)


def test_unnormalized_weights_are_exactly_zero_on_padding_and_padding_is_ignored():
    inputs, mask = lc.cross_attention_inputs(np.random.default_rng(1))
    layer = TargetAttention(hidden_units=HIDDEN, normalize="none")
    outputs, weights = layer(inputs, mask=mask, return_attention_scores=True)
    padded = np.broadcast_to(~mask[1][:, None, None, :], weights.shape)
    np.testing.assert_array_equal(np.asarray(weights)[padded], 0.0)
    assert np.all(np.asarray(weights)[~padded & np.broadcast_to(
        mask[0][:, None, :, None], weights.shape)] != 0.0)
    perturbed = lc.perturb_padding(inputs, mask)
    again = layer(perturbed, mask=mask)
    np.testing.assert_allclose(np.asarray(again)[mask[0]], np.asarray(outputs)[mask[0]],
                               atol=1e-6)
    np.testing.assert_array_equal(np.asarray(again)[~mask[0]], 0.0)


def test_a_single_candidate_and_an_empty_history_give_zero_interest():
    layer = TargetAttention(hidden_units=HIDDEN)
    history_mask = tf.constant([[False, False, False], [False, True, True]])
    outputs = layer([tf.ones((2, 1, 4)), tf.ones((2, 3, 4))], mask=[None, history_mask])
    assert outputs.shape == (2, 1, 4)
    np.testing.assert_array_equal(outputs[0], 0.0)
    np.testing.assert_allclose(outputs[1], 1.0, rtol=1e-6)  # softmax over equal values


def test_config_round_trip_keeps_din_arguments():
    layer = TargetAttention(hidden_units=[6], activation="relu", normalize="none", dropout=0.1)
    config = layer.get_config()
    assert (config["hidden_units"], config["activation"], config["normalize"]) == (
        [6], "relu", "none")
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert restored.hidden_units == (6,) and restored.normalize == "none"
    assert restored.get_config() == config


@pytest.mark.parametrize("kwargs, match", [
    ({"normalize": "sigmoid"}, "normalize must be one of"),
    ({"hidden_units": (8, 0)}, "hidden_units must be a tuple of positive ints"),
    ({"hidden_units": 8}, "hidden_units must be a tuple of positive ints"),
    ({"num_heads": 2}, "num_heads must be 1"),
    ({"use_projections": True}, "use_projections must be False"),
    ({"key_dim": 4}, "key_dim must be None"),
    ({"dropout": 1.0}, "dropout must be in"),
])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TargetAttention(**kwargs)


def test_query_and_key_sizes_must_match():
    with pytest.raises(ValueError, match="last dimensions must match"):
        TargetAttention()([tf.ones((1, 1, 4)), tf.ones((1, 3, 6))])


def _model(normalize):
    """`[candidates (B, 1, 8), history (B, 5, 8), history ids] -> interest`, explicit mask."""
    query = keras.Input((1, lc.DIM), name="query")
    value = keras.Input((lc.VALUE_LENGTH, lc.DIM), name="value")
    ids = keras.Input((lc.VALUE_LENGTH,), dtype="int32", name="ids")
    padding = PaddingMask(name="padding")(ids)
    layer = TargetAttention(hidden_units=HIDDEN, normalize=normalize, name="layer")
    return keras.Model([query, value, ids], layer([query, value], mask=[None, padding]))


def _feed(seed=0):
    rng = np.random.default_rng(seed)
    value_mask = lc.left_padding_mask(lc.VALUE_LENGTHS, lc.VALUE_LENGTH)
    query = rng.normal(size=(lc.BATCH, 1, lc.DIM)).astype(np.float32)
    value = rng.normal(size=(lc.BATCH, lc.VALUE_LENGTH, lc.DIM)).astype(np.float32)
    return [query, value * value_mask[..., None], lc.ids_from_mask(value_mask)[0]], value_mask


def test_unnormalized_pruning_reaches_sparsity_and_keeps_padding_masked():
    sparsity = tfmot.sparsity.keras
    feed, value_mask = _feed()
    pruned = sparsity.prune_low_magnitude(
        _model("none"), pruning_schedule=sparsity.ConstantSparsity(0.5, 0, frequency=1))
    pruned.compile(optimizer="sgd", loss="mse", run_eagerly=True)
    pruned.fit(feed, np.zeros((lc.BATCH, 1, lc.DIM), np.float32), verbose=0,
               callbacks=[sparsity.UpdatePruningStep()])
    wrapper = pruned.get_layer("prune_low_magnitude_layer")
    assert len(wrapper.pruning_vars) == len(HIDDEN)  # score_output (a vector) stays dense
    for weight, _, _ in wrapper.pruning_vars:
        assert lc.sparsity(weight) == pytest.approx(0.5, abs=0.05), weight.name
    noisy = np.where(value_mask[..., None], feed[1], 7.0).astype(np.float32)
    np.testing.assert_allclose(pruned([feed[0], noisy, feed[2]]), pruned(feed), atol=1e-6)


def test_quantize_config_quantizes_hidden_kernels_and_keeps_the_score_layer_float():
    """QAT training and TFLite conversion run in tests/optimization (the `target` case) and in
    tests/models/test_din.py (the DIN tower)."""
    layer = _model("none").get_layer("layer")
    pairs = quantize_config_for(layer).get_weights_and_quantizers(layer)
    assert [w.name for w, _ in pairs] == [
        f"layer/score_hidden_{i}/kernel:0" for i in range(len(HIDDEN))]
