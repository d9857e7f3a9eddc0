"""`masking.masked_softmax`: exact zeros where masked, a softmax over the kept logits, and (with
`zero_masked_logits`) weights that masked logits' values cannot move at all."""

import numpy as np
import pytest

from tfrec_attn._keras import tf
from tfrec_attn.layers.masking import masked_softmax

RNG = np.random.default_rng(0)
LOGITS = RNG.normal(size=(2, 3, 5)).astype(np.float32)
MASK = RNG.random((2, 3, 5)) < 0.6
MASK[0, 1] = False  # a fully masked row
MASK[1, 2] = True  # a fully visible row


def _reference(logits, mask):
    """Softmax over the kept entries of each row, zeros elsewhere (all zeros if none kept)."""
    shifted = np.where(mask, logits - np.where(mask, logits, -np.inf).max(-1, keepdims=True), 0)
    exp = np.where(mask, np.exp(shifted), 0.0)
    total = exp.sum(-1, keepdims=True)
    return np.divide(exp, total, out=np.zeros_like(exp), where=total > 0)


@pytest.mark.parametrize("zero_masked_logits", [False, True])
def test_matches_softmax_over_kept_entries(zero_masked_logits):
    weights = masked_softmax(tf.constant(LOGITS), tf.constant(MASK),
                             zero_masked_logits=zero_masked_logits).numpy()
    np.testing.assert_allclose(weights, _reference(LOGITS, MASK), atol=1e-6)
    np.testing.assert_array_equal(weights[~MASK], 0.0)
    np.testing.assert_array_equal(weights[0, 1], 0.0)


def test_zero_masked_logits_makes_masked_values_irrelevant():
    """Zeroed before the fill, even huge masked logits leave the kept weights bit-identical."""
    noisy = np.where(MASK, LOGITS, RNG.normal(scale=1e4, size=LOGITS.shape)).astype(np.float32)
    clean = masked_softmax(tf.constant(LOGITS), tf.constant(MASK), zero_masked_logits=True)
    moved = masked_softmax(tf.constant(noisy), tf.constant(MASK), zero_masked_logits=True)
    np.testing.assert_array_equal(moved.numpy(), clean.numpy())


def test_broadcast_mask_and_no_mask():
    """A `(batch, 1, 1, S)` padding mask broadcasts over heads and queries; no mask is softmax."""
    logits = tf.constant(RNG.normal(size=(2, 2, 3, 4)).astype(np.float32))
    keep = np.array([[True, True, False, True], [False, True, True, True]])
    weights = masked_softmax(logits, tf.constant(keep[:, None, None, :]),
                             zero_masked_logits=True).numpy()
    np.testing.assert_allclose(weights, _reference(logits.numpy(), keep[:, None, None, :]),
                               atol=1e-6)
    np.testing.assert_allclose(masked_softmax(logits).numpy(),
                               tf.nn.softmax(logits).numpy(), atol=1e-7)


def test_rank_5_broadcast_mask_converts_to_tflite_without_logical_and(tmp_path):
    """Local and low-rank attention mask `(batch, 1, blocks, w, keys)` blocks. Broadcast with a
    LOGICAL_AND, they aborted TF 2.20's own TFLite kernel, the one its int8 calibrator runs."""
    from ai_edge_litert.interpreter import Interpreter

    from tfrec_attn.export import tflite_ops

    logits = RNG.normal(size=(2, 2, 3, 4, 5)).astype(np.float32)
    keep = RNG.random((2, 1, 3, 4, 5)) < 0.6

    @tf.function(input_signature=[tf.TensorSpec(logits.shape, tf.float32),
                                  tf.TensorSpec(keep.shape, tf.bool)])
    def softmax(logits, mask):
        return masked_softmax(logits, mask)

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [softmax.get_concrete_function()], softmax)
    path = tmp_path / "masked_softmax.tflite"
    path.write_bytes(converter.convert())
    assert "LOGICAL_AND" not in tflite_ops(path)
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():  # inputs are named after the arguments
        interpreter.set_tensor(detail["index"], keep if "mask" in detail["name"] else logits)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, _reference(logits, keep), atol=1e-6)
