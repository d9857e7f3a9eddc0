"""TransformerEncoderBlock against a NumPy reference: standard and gated (LiGR) blocks."""

import numpy as np
import pytest

from tfrec_attn._keras import keras, tf
from tfrec_attn.layers import TransformerEncoderBlock
from tfrec_attn.optimization import quantize_config_for

DIM, HEADS, T = 8, 2, 5


def _gelu(x):  # Keras' default gelu is the exact (erf) form
    from math import erf, sqrt

    return 0.5 * x * (1.0 + np.vectorize(erf)(x / sqrt(2.0)))


def _layer_norm(x, gamma, beta, eps):
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _reference(block, x, mask):
    """The block's forward pass in NumPy, from its own weights (dropout off, causal)."""
    w = {v.name.split("/", 1)[1].rsplit(":", 1)[0]: v.numpy() for v in block.weights}

    def dense(name, h):
        return h @ w[f"{name}/kernel"] + w[f"{name}/bias"]

    def attention(h):
        def split(a):  # (batch, T, dim) -> (batch, heads, T, dim / heads)
            return a.reshape(a.shape[0], T, HEADS, DIM // HEADS).transpose(0, 2, 1, 3)

        q, k, v = (split(dense(f"self_attention/{n}", h)) for n in ("query", "key", "value"))
        logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(DIM // HEADS)
        allowed = np.tril(np.ones((T, T), bool))[None, None] & mask[:, None, None, :]
        logits = np.where(allowed, logits, -1e9)
        weights = np.exp(logits - logits.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        out = (weights @ v).transpose(0, 2, 1, 3).reshape(x.shape)
        return dense("self_attention/attention_output", out)

    def feed_forward(h):
        hidden = _gelu(dense("ffn_inner", h))
        if block.gated:
            hidden = hidden * dense("ffn_value", h)
        return dense("ffn_outer", hidden)

    def norm_of(h, norm):
        return _layer_norm(h, w[f"{norm}/gamma"], w[f"{norm}/beta"], block.layer_norm_epsilon)

    def sublayer(h, norm, fn, gate):
        branch = fn(norm_of(h, norm) if block.norm_first else h)
        if block.gated:
            branch = _sigmoid(dense(gate, h)) * branch
        if block.norm_first:
            return h + branch
        return norm_of(h + branch, norm)

    h = sublayer(x, "attention_norm", attention, "attention_gate")
    return sublayer(h, "ffn_norm", feed_forward, "ffn_gate")


def _randomize(block, seed):
    rng = np.random.default_rng(seed)
    for v in block.weights:  # non-trivial norms and biases too
        v.assign(rng.normal(0.0, 0.4, v.shape).astype(np.float32) + (
            1.0 if "gamma" in v.name else 0.0))


@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("norm_first", [True, False])
def test_block_matches_numpy_reference(gated, norm_first):
    block = TransformerEncoderBlock(num_heads=HEADS, causal=True, norm_first=norm_first,
                                    gated=gated, intermediate_dim=12)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, T, DIM)).astype(np.float32)
    mask = np.ones((3, T), bool)
    mask[1, :2] = False  # left padding
    block(x, mask=mask)
    _randomize(block, 2)
    out = block(x, mask=tf.constant(mask)).numpy()
    expected = _reference(block, x.astype(np.float64), mask)
    np.testing.assert_allclose(out[mask], expected[mask], rtol=1e-4, atol=1e-4)


def test_gated_block_has_gate_weights_and_prunes_them():
    block = TransformerEncoderBlock(num_heads=HEADS, gated=True)
    block(tf.ones((1, T, DIM)))
    names = {v.name.split("/")[-2] for v in block.get_prunable_weights()}
    assert {"ffn_value", "attention_gate", "ffn_gate", "ffn_inner", "ffn_outer"} <= names
    plain = TransformerEncoderBlock(num_heads=HEADS)
    plain(tf.ones((1, T, DIM)))
    assert len(block.get_prunable_weights()) == len(plain.get_prunable_weights()) + 3


def test_gated_block_quantize_config_covers_its_kernels():
    block = TransformerEncoderBlock(num_heads=HEADS, gated=True)
    block(tf.ones((1, T, DIM)))
    quantized = {id(w) for w, _ in quantize_config_for(block).get_weights_and_quantizers(block)}
    assert quantized == {id(w) for w in block.get_prunable_weights()}


def test_gated_config_round_trip_and_bad_value():
    block = TransformerEncoderBlock(num_heads=HEADS, gated=True, causal=True)
    x = np.random.default_rng(0).normal(size=(2, T, DIM)).astype(np.float32)
    out = block(x)
    clone = keras.layers.deserialize(keras.layers.serialize(block))
    assert clone.gated
    clone(x)
    clone.set_weights(block.get_weights())
    np.testing.assert_allclose(clone(x), out, atol=1e-6)
    with pytest.raises(ValueError, match="gated must be a bool"):
        TransformerEncoderBlock(gated="yes")


def test_attention_options_take_the_variants_base_arguments():
    """The efficient variants pass `**kwargs` on to `BaseAttention`: `key_dim` and `use_bias`
    are their options too (the name check must not refuse them), while `output_dim` is the
    block's own (its residual needs the input width)."""
    block = TransformerEncoderBlock(attention="local", attention_options={
        "window": 2, "key_dim": 4, "use_bias": False})
    out = block(tf.ones((2, 5, 8)))
    assert out.shape == (2, 5, 8) and block.attention.key_dim == 4
    assert not block.attention.use_bias
    restored = TransformerEncoderBlock.from_config(block.get_config())
    assert restored.attention_options == block.attention_options
    with pytest.raises(ValueError, match=r"must not set \['output_dim'\]"):
        TransformerEncoderBlock(attention="local", attention_options={"output_dim": 4})
