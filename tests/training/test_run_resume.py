"""`--backup-dir` and `--ema-decay` for DIN and autoencoder runs (the training loop they share
with SASRec, `training/fitting.py`): an interrupted run resumes after its last completed epoch,
its metrics.json covers every epoch, its restored epochs equal an uninterrupted run's and its
later epochs continue from them, and a completed run leaves no backup."""

import json
from pathlib import Path

import numpy as np
import pytest

from pipelines import train as train_pipeline
from tfrec_attn._keras import keras
from tfrec_attn.testing.multi_worker import InterruptAt, Preempted
from tfrec_attn.training.autoencoder_run import AutoencoderOptions, run_autoencoder_training
from tfrec_attn.training.ranking_run import RankingOptions, run_ranking_training

COMMON = ["--format", "synthetic", "--synthetic-items", "40", "--synthetic-length", "8",
          "--max-len", "8", "--dim", "8", "--verbose", "0", "--epochs", "3", "--patience", "10",
          "--lr", "0.01", "--export-root", "", "--ema-decay", "0.9"]
TINY = {
    "din": ["--model", "din", "--synthetic-users", "80", "--valid-negatives", "5",
            "--test-negatives", "5", "--batch-size", "128"],
    "autoencoder": ["--model", "autoencoder", "--synthetic-users", "120", "--k", "5",
                    "--valid-users", "20", "--test-users", "20", "--batch-size", "32",
                    "--blocks", "1"],
}
RUNS = {"din": run_ranking_training, "autoencoder": run_autoencoder_training}
EVALUATIONS = {"din": ("CTREvaluation", "auc"), "autoencoder": ("SetEvaluation", "ndcg@5")}


def _options(model: str, tmp: Path, backup: bool = True, output: str = "out"):
    return train_pipeline.options_from_args(
        TINY[model] + COMMON + ["--output", str(tmp / output)]
        + (["--backup-dir", str(tmp / "backup")] if backup else []))


@pytest.fixture(scope="module", params=["din", "autoencoder"])
def resumed(request, tmp_path_factory):
    """The model's run interrupted after epoch 2, its backup then, the rerun's metrics, and the
    metrics of the same run uninterrupted (no backup)."""
    model, tmp = request.param, tmp_path_factory.mktemp(request.param)
    run = RUNS[model]
    full = run(_options(model, tmp, backup=False, output="full"))
    keras.backend.clear_session()
    with pytest.raises(Preempted):
        run(_options(model, tmp), callbacks=[InterruptAt(2)])
    left = sorted(p.name for p in (tmp / "backup").iterdir())
    state = json.loads((tmp / "backup" / "run_state-2.json").read_text())
    keras.backend.clear_session()
    metrics = run(_options(model, tmp))
    keras.backend.clear_session()
    return model, tmp, left, state, metrics, full


def test_options_take_backup_dir_and_ema_decay(resumed):
    model, tmp, _, _, metrics, _ = resumed
    options = _options(model, tmp)
    assert isinstance(options, {"din": RankingOptions, "autoencoder": AutoencoderOptions}[model])
    assert options.backup_dir == str(tmp / "backup") and options.ema_decay == 0.9
    assert metrics["options"]["ema_decay"] == 0.9
    assert metrics["options"]["backup_dir"] == str(tmp / "backup")


def test_resumed_run_reports_every_epoch(resumed):
    model, tmp, _, state, metrics, _ = resumed
    name, monitor = EVALUATIONS[model]
    assert metrics["resumed_epochs"] == 2 and metrics["epochs"] == 3
    records = metrics["history"]["valid"]
    assert [r["epoch"] for r in records] == [1, 2, 3] and len(metrics["history"]["loss"]) == 3
    # epochs 1-2 are the interrupted run's, restored from the backup rather than evaluated again
    assert [r[monitor] for r in records[:2]] == [r[monitor] for r in state[name]["records"]]
    assert metrics["history"]["loss"][:2] == [logs["loss"] for logs in state["logs"]]
    elapsed = [r["elapsed_seconds"] for r in records]
    assert elapsed == sorted(elapsed) and metrics["train_seconds"] >= elapsed[1]
    assert metrics["best_epoch"] == max(records, key=lambda r: r[monitor])["epoch"]


def test_backup_holds_the_run_state_then_is_deleted(resumed):
    model, tmp, left, state, _, _ = resumed
    name, _ = EVALUATIONS[model]
    best = state["EarlyStopping"]["best_epoch"] + 1
    assert left == [f"best_weights-{best}.npz", "chief", "run_identity.json", "run_state-2.json"]
    assert [r["epoch"] for r in state[name]["records"]] == [1, 2]
    assert len(state["EpochTimer"]["seconds"]) == 2 and state["TimeBudget"]["elapsed"] > 0
    assert not any((tmp / "backup").iterdir())  # a completed run deletes the backup


def test_restored_epochs_equal_the_uninterrupted_run(resumed):
    model, _, _, _, metrics, full = resumed
    _, monitor = EVALUATIONS[model]
    assert full["resumed_epochs"] == 0 and full["epochs"] == 3
    # Epochs 1-2 are the interrupted run's: the same seeded data, model and steps as the
    # uninterrupted run's first two epochs.
    for got, want in zip(metrics["history"]["valid"][:2], full["history"]["valid"][:2]):
        np.testing.assert_allclose(got[monitor], want[monitor], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(metrics["history"]["loss"][:2], full["history"]["loss"][:2],
                               rtol=1e-4)


def test_training_continues_instead_of_restarting(resumed):
    model, _, _, _, metrics, full = resumed
    _, monitor = EVALUATIONS[model]
    losses, want = metrics["history"]["loss"], full["history"]["loss"]
    # The resumed epoch 3 starts from epoch 2's (averaged) weights and optimizer state: its loss
    # is near the uninterrupted epoch 3's (not equal: its shuffle order is the data pipeline's
    # first, and the weight average starts over), far from a restart's epoch-1 loss.
    assert want[2] < want[0]
    assert abs(losses[2] - want[2]) < 0.5 * (want[0] - want[2])
    np.testing.assert_allclose(metrics["history"]["valid"][2][monitor],
                               full["history"]["valid"][2][monitor], rtol=0.1)


@pytest.mark.parametrize("model", ["din", "autoencoder"])
@pytest.mark.parametrize("flags, message", [
    (["--ema-decay", "1.5"], "ema_decay must be in [0, 1)"),
    (["--backup-dir", "{file}"], "backup_dir must be a directory"),
])
def test_bad_backup_dir_and_ema_decay_are_rejected(model, flags, message, tmp_path, capsys):
    path = tmp_path / "not-a-dir"
    path.write_text("x")
    argv = TINY[model] + [flag.format(file=path) for flag in flags]
    assert train_pipeline.main(argv) == 2
    assert message in capsys.readouterr().err
