"""Our MultiHeadAttention equals `keras.layers.MultiHeadAttention` given the same weights."""

import numpy as np
import pytest

from tfrec_attn._keras import keras, tf
from tfrec_attn.layers import MultiHeadAttention
from tfrec_attn.testing import layer_cases as lc


def _pair(query, value, causal: bool = False):
    """A built Keras MHA and a built tfrec_attn MHA holding the same weights."""
    reference = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)
    reference(query, value)
    ours = MultiHeadAttention(num_heads=2, key_dim=4, causal=causal)
    ours([query, value])
    lc.copy_keras_mha_weights(reference, ours)
    return reference, ours


@pytest.mark.parametrize("cross", [False, True], ids=["self", "cross"])
@pytest.mark.parametrize("padded", [False, True], ids=["dense", "padded"])
def test_matches_keras_multi_head_attention(cross, padded):
    rng = np.random.default_rng(0)
    if cross:
        (query, value), (query_mask, value_mask) = lc.cross_attention_inputs(rng)
    else:
        query, query_mask = lc.self_attention_inputs(rng)
        value, value_mask = query, query_mask
    if not padded:
        query_mask = np.ones_like(query_mask)
        value_mask = np.ones_like(value_mask)
    query, value = tf.constant(query), tf.constant(value)
    reference, ours = _pair(query, value)

    attention_mask = query_mask[:, :, None] & value_mask[:, None, :]
    expected, expected_weights = reference(
        query, value, attention_mask=tf.constant(attention_mask), return_attention_scores=True)
    if cross:
        inputs, mask = [query, value], [tf.constant(query_mask), tf.constant(value_mask)]
    else:
        inputs, mask = query, tf.constant(query_mask)
    actual, weights = ours(inputs, mask=mask, return_attention_scores=True)

    # Keras gives fully padded query rows a uniform distribution; ours zeroes them. Compare
    # the real query positions only; weights are (batch, heads, T, S) -> (batch, T, heads, S).
    np.testing.assert_allclose(actual.numpy()[query_mask], expected.numpy()[query_mask],
                               atol=1e-5)
    np.testing.assert_allclose(np.transpose(weights.numpy(), (0, 2, 1, 3))[query_mask],
                               np.transpose(expected_weights.numpy(), (0, 2, 1, 3))[query_mask],
                               atol=1e-5)


def test_causal_matches_keras_use_causal_mask():
    query = tf.constant(np.random.default_rng(1).normal(size=(2, 5, 8)).astype(np.float32))
    reference, ours = _pair(query, query, causal=True)
    expected = reference(query, query, use_causal_mask=True)
    np.testing.assert_allclose(ours(query), expected, atol=1e-5)


def test_copy_helper_copies_every_weight():
    """Four projections, kernel and bias each: 8 weights on both sides, all copied."""
    query = tf.ones((1, 3, 8))
    reference, ours = _pair(query, query)
    assert len(reference.weights) == len(ours.weights) == 8
    for ref, own in zip(reference.weights, ours.weights, strict=True):
        np.testing.assert_array_equal(np.reshape(ref.numpy(), own.shape), own.numpy())
