"""Hand-computed golden values (TFRS `dcn_test` style: `kernel_initializer="ones"`)."""

import math

import numpy as np
import pytest

from tfrec_attn._keras import tf
from tfrec_attn.layers import (
    AdditiveAttention,
    MultiHeadAttention,
    PositionEmbedding,
    ScaledDotProductAttention,
    SinusoidalPositionEmbedding,
)

# Rows sum to 1 and 2, so with all-ones kernels and key_dim=1 every projection of position i is
# its row sum: q = k = v = [1, 2].
X = tf.constant([[[1.0, 0.0], [0.0, 2.0]]])


def _softmax(*logits):
    exps = [math.exp(v) for v in logits]
    return [e / sum(exps) for e in exps]


def test_multi_head_attention_with_ones_kernels():
    layer = MultiHeadAttention(num_heads=1, key_dim=1, kernel_initializer="ones")
    outputs, weights = layer(X, return_attention_scores=True)
    # Logits q_i * k_j / sqrt(1): [[1, 2], [2, 4]].
    w0 = [1 / (1 + math.e), math.e / (1 + math.e)]  # 0.2689, 0.7311
    w1 = [1 / (1 + math.e**2), math.e**2 / (1 + math.e**2)]  # 0.1192, 0.8808
    np.testing.assert_allclose(weights[0, 0], [w0, w1], rtol=1e-6)
    out0 = w0[0] * 1 + w0[1] * 2  # 1.7311; the output Dense (ones, 1 -> 2) copies it twice.
    out1 = w1[0] * 1 + w1[1] * 2  # 1.8808
    np.testing.assert_allclose(outputs[0], [[out0, out0], [out1, out1]], rtol=1e-6)
    np.testing.assert_allclose(outputs[0], [[1.7310586, 1.7310586], [1.8807971, 1.8807971]],
                               rtol=1e-6)


def test_multi_head_attention_with_ones_kernels_and_left_padding():
    layer = MultiHeadAttention(num_heads=1, key_dim=1, kernel_initializer="ones")
    outputs, weights = layer(X, mask=tf.constant([[False, True]]), return_attention_scores=True)
    # The padded query row sees nothing; the real one sees only itself (v = 2).
    np.testing.assert_array_equal(weights[0, 0], [[0.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(outputs[0], [[0.0, 0.0], [2.0, 2.0]], rtol=1e-6)


def test_additive_attention_with_ones_kernels():
    layer = AdditiveAttention(num_heads=1, key_dim=1, kernel_initializer="ones")
    outputs, weights = layer(X, return_attention_scores=True)
    # score(q_i, k_j) = v * tanh(q_i + k_j) with v = 1: [[tanh 2, tanh 3], [tanh 3, tanh 4]].
    w0 = _softmax(math.tanh(2), math.tanh(3))
    w1 = _softmax(math.tanh(3), math.tanh(4))
    np.testing.assert_allclose(weights[0, 0], [w0, w1], rtol=1e-6)
    out0, out1 = w0[0] + 2 * w0[1], w1[0] + 2 * w1[1]
    np.testing.assert_allclose(outputs[0], [[out0, out0], [out1, out1]], rtol=1e-6)


@pytest.mark.parametrize("causal", [False, True])
def test_scaled_dot_product_attention(causal):
    x = tf.constant([[[1.0, 0.0], [0.0, 1.0]]])
    outputs = ScaledDotProductAttention(causal=causal)(x)
    # Logits x x^T / sqrt(2) = [[a, 0], [0, a]] with a = 0.7071: p = e^a / (e^a + 1) = 0.6698.
    p = math.exp(2**-0.5) / (math.exp(2**-0.5) + 1)
    first = [1.0, 0.0] if causal else [p, 1 - p]
    np.testing.assert_allclose(outputs[0], [first, [1 - p, p]], rtol=1e-6)
    assert p == pytest.approx(0.66976155)


def test_position_embedding_is_right_aligned():
    layer = PositionEmbedding(max_length=4)
    layer.build((None, 2, 3))
    table = np.arange(12, dtype=np.float32).reshape(4, 3)
    layer.set_weights([table])
    outputs = layer(tf.zeros((1, 2, 3)))
    np.testing.assert_array_equal(outputs[0], table[2:])  # the last two rows


def test_sinusoidal_position_embedding_values():
    outputs = SinusoidalPositionEmbedding(max_length=10)(tf.zeros((1, 3, 4)))
    expected = []
    for position in (7, 8, 9):  # right-aligned: the last 3 of 10 positions
        row = []
        for i in range(2):
            angle = position / 10000.0 ** (2 * i / 4)
            row += [math.sin(angle), math.cos(angle)]
        expected.append(row)
    np.testing.assert_allclose(outputs[0], expected, atol=1e-6)
