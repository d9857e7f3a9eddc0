"""`SASRecConfig.future_targets`: each position also learns its window's next items."""

import numpy as np
import pytest

from tfrec_attn._keras import tf
from tfrec_attn.models import SASRec, SASRecConfig
from tfrec_attn.models.losses import seen_items
from tfrec_attn.models.sasrec import later_targets

HISTORY = tf.constant([[0, 2, 3, 4, 5, 6], [0, 0, 0, 7, 8, 7]], tf.int64)
TARGETS = tf.constant([[2, 3, 4, 5, 6, 7], [0, 0, 0, 8, 7, 9]], tf.int64)  # 7 repeats in row 2
VOCAB = 12


def _model(future_targets: int, exclude_seen: bool) -> SASRec:
    tf.keras.utils.set_random_seed(0)
    return SASRec(SASRecConfig(vocab_size=VOCAB, max_len=6, dim=8, num_blocks=1, dropout=0.0,
                               loss="softmax", exclude_seen=exclude_seen,
                               future_targets=future_targets))


def _logsumexp(x):
    return np.log(np.exp(x - x.max()).sum()) + x.max()


def _by_hand(model: SASRec, k: int, exclude_seen: bool) -> float:
    """Mean over positions of the mean over positives p of -log(e^s_p / (e^s_p + negatives))."""
    states = model.encoder(HISTORY).numpy()
    table = model.item_embedding.embeddings.numpy()
    targets = TARGETS.numpy()
    seen = seen_items(HISTORY, TARGETS, VOCAB).numpy()
    losses = []
    for b, t in zip(*np.nonzero(targets > 0), strict=True):
        logits = states[b, t] @ table.T
        positives = [targets[b, t + j] for j in range(k)
                     if t + j < targets.shape[1] and targets[b, t + j] > 0]
        terms = []
        for p in positives:
            if exclude_seen:  # negatives: items outside the window
                negatives = logits[~seen[b]]
                terms.append(_logsumexp(np.append(negatives, logits[p])) - logits[p])
            else:
                terms.append(_logsumexp(logits) - logits[p])
        losses.append(np.mean(terms))
    return float(np.mean(losses))


@pytest.mark.parametrize("exclude_seen", [True, False])
@pytest.mark.parametrize("k", [1, 2, 3, 8])
def test_loss_equals_hand_computed_multi_positive_cross_entropy(k, exclude_seen):
    model = _model(k, exclude_seen)
    got = float(model.compute_loss({"history": HISTORY, "targets": TARGETS}))
    np.testing.assert_allclose(got, _by_hand(model, k, exclude_seen), rtol=1e-5)


@pytest.mark.parametrize("exclude_seen", [True, False])
def test_one_future_target_is_the_original_objective(exclude_seen):
    one, three = _model(1, exclude_seen), _model(3, exclude_seen)
    three.set_weights(one.get_weights())
    inputs = {"history": HISTORY, "targets": TARGETS}
    original = float(one.compute_loss(inputs))
    np.testing.assert_allclose(original, _by_hand(one, 1, exclude_seen), rtol=1e-5)
    assert not np.isclose(float(three.compute_loss(inputs)), original)


def test_later_targets_stop_at_the_window_end():
    got = later_targets(TARGETS, 3).numpy()
    assert got.shape == (2, 6, 2)
    assert got[0, 0].tolist() == [3, 4] and got[0, 5].tolist() == [0, 0]
    assert got[1, 4].tolist() == [9, 0] and got[1, 0].tolist() == [0, 0]


def test_training_with_future_targets_stays_finite():
    model = _model(3, True)
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-2))
    data = tf.data.Dataset.from_tensors({"history": HISTORY, "targets": TARGETS}).repeat(5)
    losses = model.fit(data, epochs=1, verbose=0).history["loss"]
    assert np.all(np.isfinite(losses))


@pytest.mark.parametrize("fields, message", [
    ({"future_targets": 0}, "future_targets"),
    ({"future_targets": 3, "loss": "sampled"}, "future_targets > 1 needs loss='softmax'"),
    ({"future_targets": 2, "loss": "bce"}, "future_targets > 1 needs loss='softmax'"),
])
def test_bad_future_targets_are_named(fields, message):
    with pytest.raises(ValueError, match=message):
        SASRecConfig(vocab_size=VOCAB, **fields)
