"""Run callbacks hold the epochs of the latest `fit` only, and `RunBackup` still restores them."""

import numpy as np
import pytest

from tfrec_attn._keras import keras
from tfrec_attn.testing.multi_worker import InterruptAt, Preempted
from tfrec_attn.training.backup import RunBackup
from tfrec_attn.training.callbacks import EpochTimer, RankingEvaluation, best_epoch

VOCAB = 6
HISTORIES = [np.array([2]), np.array([3])]
TARGETS = np.array([4, 5])


class SwitchableScores:
    """Scores the target first (`hit=True`) or last, so records show which fit made them."""

    def __init__(self):
        self.hit = False

    def __call__(self, histories):  # evaluate() passes all rows in one batch, in order
        if self.hit:
            return np.eye(VOCAB, dtype=np.float32)[TARGETS[:len(histories)]]
        return -np.tile(np.arange(VOCAB, dtype=np.float32), (len(histories), 1))


def _evaluation(scores):
    return RankingEvaluation(scores, HISTORIES, TARGETS, VOCAB, ks=(1,), logged=("hr@1",))


def _fit(epochs: int, callbacks):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    x = np.ones((4, 2), np.float32)
    return model.fit(x, x.sum(1), epochs=epochs, batch_size=2, verbose=0, callbacks=callbacks)


@pytest.mark.parametrize("first_epochs, second_epochs", [(3, 2), (1, 2)])
def test_a_second_fit_reports_only_its_own_epochs(first_epochs, second_epochs):
    scores = SwitchableScores()
    evaluation, timer = _evaluation(scores), EpochTimer()
    _fit(first_epochs, [timer, evaluation])
    assert [r["hr@1"] for r in evaluation.records] == [0.0] * first_epochs
    scores.hit = True
    history = _fit(second_epochs, [timer, evaluation])
    assert [r["epoch"] for r in evaluation.records] == list(range(1, second_epochs + 1))
    assert [r["hr@1"] for r in evaluation.records] == [1.0] * second_epochs
    assert history.history["val_hr@1"] == [1.0] * second_epochs
    assert best_epoch(evaluation.records, "hr@1")["epoch"] == 1
    assert len(timer.seconds) == second_epochs


@pytest.mark.parametrize("same_callbacks", [True, False])
def test_a_resumed_fit_keeps_the_epochs_before_the_interruption(tmp_path, same_callbacks):
    """`RunBackup` restores in the first `on_epoch_begin`, after the clearing `on_train_begin`."""
    scores = SwitchableScores()
    evaluation, timer = _evaluation(scores), EpochTimer()
    with pytest.raises(Preempted):
        _fit(4, [RunBackup(tmp_path, tracked=[evaluation, timer]), timer, evaluation,
                 InterruptAt(2)])
    scores.hit = True  # the resumed epochs 3 and 4 score differently from the saved 1 and 2
    if not same_callbacks:  # a restarted process builds new callbacks
        evaluation, timer = _evaluation(scores), EpochTimer()
    backup = RunBackup(tmp_path, tracked=[evaluation, timer])
    _fit(4, [backup, timer, evaluation])
    assert backup.resumed_epochs == 2
    assert [r["epoch"] for r in evaluation.records] == [1, 2, 3, 4]
    assert [r["hr@1"] for r in evaluation.records] == [0.0, 0.0, 1.0, 1.0]
    assert len(timer.seconds) == 4
