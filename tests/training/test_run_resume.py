"""`--backup-dir` and `--ema-decay` for DIN and autoencoder runs (the training loop they share
with SASRec, `training/fitting.py`): an interrupted run resumes after its last completed epoch,
its metrics.json covers every epoch, and a completed run leaves no backup."""

import json
from pathlib import Path

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


def _options(model: str, tmp: Path):
    return train_pipeline.options_from_args(
        TINY[model] + COMMON + ["--output", str(tmp / "out"), "--backup-dir", str(tmp / "backup")])


@pytest.fixture(scope="module", params=["din", "autoencoder"])
def resumed(request, tmp_path_factory):
    """The model's run interrupted after epoch 1, its backup then, and the rerun's metrics."""
    model, tmp = request.param, tmp_path_factory.mktemp(request.param)
    run = RUNS[model]
    with pytest.raises(Preempted):
        run(_options(model, tmp), callbacks=[InterruptAt(1)])
    left = sorted(p.name for p in (tmp / "backup").iterdir())
    state = json.loads((tmp / "backup" / "run_state-1.json").read_text())
    keras.backend.clear_session()
    metrics = run(_options(model, tmp))
    keras.backend.clear_session()
    return model, tmp, left, state, metrics


def test_options_take_backup_dir_and_ema_decay(resumed):
    model, tmp, _, _, metrics = resumed
    options = _options(model, tmp)
    assert isinstance(options, {"din": RankingOptions, "autoencoder": AutoencoderOptions}[model])
    assert options.backup_dir == str(tmp / "backup") and options.ema_decay == 0.9
    assert metrics["options"]["ema_decay"] == 0.9
    assert metrics["options"]["backup_dir"] == str(tmp / "backup")


def test_resumed_run_reports_every_epoch(resumed):
    model, tmp, _, state, metrics = resumed
    name, monitor = EVALUATIONS[model]
    assert metrics["resumed_epochs"] == 1 and metrics["epochs"] == 3
    records = metrics["history"]["valid"]
    assert [r["epoch"] for r in records] == [1, 2, 3] and len(metrics["history"]["loss"]) == 3
    # epoch 1 is the interrupted run's, restored from the backup rather than evaluated again
    assert records[0][monitor] == state[name]["records"][0][monitor]
    assert metrics["history"]["loss"][0] == state["logs"][0]["loss"]
    elapsed = [r["elapsed_seconds"] for r in records]
    assert elapsed == sorted(elapsed) and metrics["train_seconds"] >= elapsed[0]
    assert metrics["best_epoch"] == max(records, key=lambda r: r[monitor])["epoch"]


def test_backup_holds_the_run_state_then_is_deleted(resumed):
    model, tmp, left, state, _ = resumed
    name, _ = EVALUATIONS[model]
    best = state["EarlyStopping"]["best_epoch"] + 1
    assert left == [f"best_weights-{best}.npz", "chief", "run_state-1.json"]
    assert [r["epoch"] for r in state[name]["records"]] == [1]
    assert len(state["EpochTimer"]["seconds"]) == 1 and state["TimeBudget"]["elapsed"] > 0
    assert not any((tmp / "backup").iterdir())  # a completed run deletes the backup


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
