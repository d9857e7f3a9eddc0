"""`--backup-dir`: an interrupted run resumes after its last completed epoch, its metrics.json
covers every epoch, a completed run leaves no backup, and two workers share one backup."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipelines import train as train_pipeline
from tfrec_attn._keras import keras, tf
from tfrec_attn.data import make_training_dataset
from tfrec_attn.testing import cluster, multi_worker
from tfrec_attn.testing.multi_worker import InterruptAt, Preempted
from tfrec_attn.training import EpochTimer, run_training
from tfrec_attn.training.backup import RunBackup

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--format", "synthetic", "--synthetic-users", "120", "--synthetic-items", "50",
        "--synthetic-length", "10", "--max-len", "8", "--dim", "8", "--blocks", "1",
        "--verbose", "0", "--epochs", "4", "--patience", "10", "--batch-size", "32", "--lr", "0.01",
        "--export-root", "", "--no-refit"]  # the first fit's backup (test_refit.py: the refit's)


def _options(tmp: Path, name: str, backup: Path | None):
    argv = TINY + ["--output", str(tmp / name)]
    return train_pipeline.options_from_args(argv + (["--backup-dir", str(backup)] if backup
                                                    else []))


def _iterations(run: Path) -> int:
    reader = tf.train.load_checkpoint(str(run / "checkpoint" / "weights"))
    return int(reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted 4-epoch run, and the same run interrupted after epoch 2 and resumed."""
    tmp = tmp_path_factory.mktemp("backup")
    backup = tmp / "backup"
    full = run_training(_options(tmp, "full", None))
    keras.backend.clear_session()
    with pytest.raises(Preempted):
        run_training(_options(tmp, "resumed", backup), callbacks=[InterruptAt(2)])
    left = sorted(p.name for p in backup.iterdir())
    state = json.loads((backup / "run_state-2.json").read_text())
    keras.backend.clear_session()
    resumed = run_training(_options(tmp, "resumed", backup))
    return tmp, full, resumed, (left, state)


def test_resumed_run_reports_every_epoch(runs):
    _, full, resumed, _ = runs
    assert resumed["resumed_epochs"] == 2 and full["resumed_epochs"] == 0
    assert resumed["epochs"] == full["epochs"] == 4
    assert [r["epoch"] for r in resumed["history"]["valid"]] == [1, 2, 3, 4]
    assert len(resumed["history"]["loss"]) == 4
    assert resumed["best_epoch"] in (1, 2, 3, 4)
    # Epochs 1-2 are the interrupted run's, restored; they equal the uninterrupted run's.
    for got, want in zip(resumed["history"]["valid"][:2], full["history"]["valid"][:2]):
        np.testing.assert_allclose(got["ndcg@10"], want["ndcg@10"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(resumed["history"]["loss"][:2], full["history"]["loss"][:2],
                               rtol=1e-4)
    elapsed = [r["elapsed_seconds"] for r in resumed["history"]["valid"]]
    assert elapsed == sorted(elapsed) and resumed["train_seconds"] >= elapsed[1]


def test_training_continues_instead_of_restarting(runs):
    tmp, full, resumed, _ = runs
    losses, want = resumed["history"]["loss"], full["history"]["loss"]
    # The resumed epoch 3 starts from epoch 2's weights and optimizer: its loss is near the
    # uninterrupted epoch 3's (not equal: its shuffle order is the data pipeline's first), far
    # from the epoch-1 loss a run restarted from scratch would have.
    assert abs(losses[2] - want[2]) < 0.5 * (want[0] - want[2])
    # Optimizer steps continued: 4 epochs' worth (bucketed batches vary a little per epoch).
    full_steps, resumed_steps = _iterations(tmp / "full"), _iterations(tmp / "resumed")
    assert abs(resumed_steps - full_steps) <= 0.1 * full_steps and full_steps >= 8


def test_backup_holds_the_checkpoint_and_run_state_then_is_deleted(runs):
    tmp, _, resumed, (left, state) = runs
    best = state["EarlyStopping"]["best_epoch"] + 1
    assert left == [f"best_weights-{best}.npz", "chief", "run_identity.json", "run_state-2.json"]
    assert [r["epoch"] for r in state["RankingEvaluation"]["records"]] == [1, 2]
    assert len(state["EpochTimer"]["seconds"]) == 2 and state["TimeBudget"]["elapsed"] > 0
    assert [logs["loss"] for logs in state["logs"]] == resumed["history"]["loss"][:2]
    # the logs hold the validation metrics RankingEvaluation adds after RunBackup's on_epoch_end
    assert ([logs["val_ndcg@10"] for logs in state["logs"]]
            == [r["ndcg@10"] for r in state["RankingEvaluation"]["records"]])
    assert not any((tmp / "backup").iterdir())  # a completed run deletes the backup


def test_backup_dir_that_is_a_file_is_rejected(tmp_path, capsys):
    path = tmp_path / "not-a-dir"
    path.write_text("x")
    assert train_pipeline.main(TINY + ["--backup-dir", str(path)]) == 2
    err = capsys.readouterr().err
    assert "backup_dir must be a directory" in err and str(path) in err


def _tiny_fit(backup: Path, epochs: int, interrupt_at=None):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    timer = EpochTimer()
    callbacks = [RunBackup(backup, tracked=[timer]), timer]
    callbacks += [InterruptAt(interrupt_at)] if interrupt_at is not None else []
    x = np.arange(16, dtype="float32").reshape(8, 2) / 16
    model.fit(x, x.sum(1), epochs=epochs, batch_size=4, verbose=0, callbacks=callbacks)
    return callbacks[0], timer


def test_state_newer_than_the_checkpoint_is_ignored_and_missing_state_is_an_error(tmp_path):
    backup = tmp_path / "backup"
    with pytest.raises(Preempted):
        _tiny_fit(backup, 4, interrupt_at=2)
    # A crash between writing run_state-3.json and Keras' checkpoint of epoch 3 leaves both.
    (backup / "run_state-3.json").write_text(json.dumps(
        {"logs": [{"loss": 9.0}] * 3, "EpochTimer": {"seconds": [9.0] * 3}}))
    callback, timer = _tiny_fit(backup, 4)
    assert callback.resumed_epochs == 2 and len(timer.seconds) == 4 and 9.0 not in timer.seconds
    assert len(callback.history["loss"]) == 4 and 9.0 not in callback.history["loss"]
    assert not any(backup.iterdir())

    with pytest.raises(Preempted):
        _tiny_fit(tmp_path / "b2", 4, interrupt_at=2)
    (tmp_path / "b2" / "run_state-2.json").unlink()
    with pytest.raises(RuntimeError, match="run_state-2.json"):
        _tiny_fit(tmp_path / "b2", 4)


def _cluster(output: Path, backup: Path, *extra: str) -> list[subprocess.CompletedProcess]:
    """Runs the two-worker harness (`tfrec_attn.testing.multi_worker`) to the end."""
    command = [sys.executable, "-m", "tfrec_attn.testing.multi_worker", "--output", str(output),
               "--epochs", "3", "--backup-dir", str(backup), *extra]
    processes = {i: cluster.start_process(command, ROOT, tf_config)
                 for i, tf_config in enumerate(cluster.loopback_cluster(2))}
    return list(cluster.finish(processes, 240).values())


@pytest.mark.slow
def test_two_workers_resume_from_the_chiefs_backup(tmp_path):
    backup = tmp_path / "backup"
    interrupted = _cluster(tmp_path / "out", backup, "--interrupt-at-epoch", "2")
    assert all("Preempted" in p.stderr for p in interrupted), interrupted[0].stderr[-2000:]
    # Only the chief's files: no worker 1 scratch dir, one run state, one checkpoint.
    assert sorted(p.name for p in backup.iterdir()) == ["chief", "run_state-2.json"]
    state = json.loads((backup / "run_state-2.json").read_text())
    assert len(state["EpochTimer"]["seconds"]) == 2
    resumed = _cluster(tmp_path / "out", backup)
    assert all(p.returncode == 0 for p in resumed), resumed[1].stderr[-3000:]
    steps = len(list(make_training_dataset(multi_worker.chain_sequences(), multi_worker.MAX_LEN,
                                           8, seed=0)))
    losses = json.loads((tmp_path / "out" / "losses.json").read_text())
    assert len(losses) == steps  # the resumed cluster trained epoch 3 only
    assert not any(backup.iterdir())


@pytest.mark.parametrize("extra", [
    [],
    ["--model", "din", "--valid-negatives", "5", "--test-negatives", "5"],
])
def test_the_run_builds_its_model_so_the_backup_does_not_warn(tmp_path, monkeypatch, extra):
    """Keras' BackupAndRestore logged "you model must be built before you call `fit()`" for
    every SASRec and DIN run with --backup-dir (the run's models were first called in fit)."""
    logged = []
    logging = sys.modules[keras.callbacks.BackupAndRestore.__module__].logging
    monkeypatch.setattr(logging, "warning", lambda message, *args, **kwargs:
                        logged.append(str(message)))
    # --blocks and --no-refit: SASRec's only (SASRec's refit has a RunBackup too)
    common = [a for a in TINY if a not in ("--blocks", "1", "--no-refit")]
    argv = common + extra + ["--epochs", "1", "--output", str(tmp_path / "run"),
                             "--backup-dir", str(tmp_path / "backup")]
    assert train_pipeline.main(argv) == 0
    assert (tmp_path / "run" / "metrics.json").exists()
    assert not [m for m in logged if "must be built" in m]
