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
