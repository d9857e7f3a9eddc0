"""`SASRecConfig.exclude_seen`: window items are not negatives; a position's target always is
its positive."""

import numpy as np
import pytest

from tfrec_attn._keras import tf
from tfrec_attn.models import SASRec, SASRecConfig
from tfrec_attn.models.losses import seen_items

HISTORY = tf.constant([[0, 2, 3, 4, 5, 6], [0, 0, 0, 7, 8, 7]], tf.int64)
TARGETS = tf.constant([[2, 3, 4, 5, 6, 7], [0, 0, 0, 8, 7, 9]], tf.int64)  # 7 repeats in row 2


def _model(loss: str, exclude_seen: bool, **fields) -> SASRec:
    tf.keras.utils.set_random_seed(0)
    return SASRec(SASRecConfig(vocab_size=12, max_len=6, dim=8, num_blocks=1, dropout=0.0,
                               loss=loss, exclude_seen=exclude_seen, **fields))


def _softmax_by_hand(model: SASRec) -> float:
    states = model.encoder(HISTORY).numpy()
    table = model.item_embedding.embeddings.numpy()
    seen = seen_items(HISTORY, TARGETS, 12).numpy()
    losses = []
    for b, t in zip(*np.nonzero(TARGETS.numpy() > 0), strict=True):
        logits = states[b, t] @ table.T
        target = TARGETS.numpy()[b, t]
        drop = seen[b].copy()
        drop[target] = False  # the own target stays
        logits = np.where(drop, -1e9, logits)
        losses.append(np.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits[target])
    return float(np.mean(losses))


def test_seen_items_marks_every_window_item():
    seen = seen_items(HISTORY, TARGETS, 12).numpy()
    assert np.flatnonzero(seen[0]).tolist() == [2, 3, 4, 5, 6, 7]
    assert np.flatnonzero(seen[1]).tolist() == [7, 8, 9]


def test_softmax_loss_equals_hand_computed_masked_cross_entropy():
    model = _model("softmax", True)
    got = float(model.compute_loss({"history": HISTORY, "targets": TARGETS}))
    np.testing.assert_allclose(got, _softmax_by_hand(model), rtol=1e-5)


@pytest.mark.parametrize("loss", ["softmax", "sampled"])
def test_excluding_seen_items_lowers_the_loss_and_stays_finite(loss):
    excluded = _model(loss, True)
    plain = _model(loss, False)
    plain.set_weights(excluded.get_weights())
    inputs = {"history": HISTORY, "targets": TARGETS}
    with_exclusion = float(excluded.compute_loss(inputs))
    without = float(plain.compute_loss(inputs))
    assert np.isfinite(with_exclusion) and with_exclusion < without


def test_sampled_loss_never_masks_the_own_positive():
    # Every in-batch candidate is seen in its own window: only the positives remain, so the
    # loss is ~0 (in-batch negatives only; uniform draws would add unseen items).
    model = _model("sampled", True, uniform_negatives=0)
    history = tf.constant([[2, 3, 4]], tf.int64)
    targets = tf.constant([[3, 4, 2]], tf.int64)
    assert float(model.compute_loss({"history": history, "targets": targets})) < 1e-6


def test_bce_rejects_exclude_seen():
    with pytest.raises(ValueError, match="exclude_seen"):
        SASRecConfig(vocab_size=12, loss="bce", exclude_seen=True)
