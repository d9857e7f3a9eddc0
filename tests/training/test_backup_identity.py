"""A backup resumes only the run that made it: restarting from `--backup-dir` with another
setting (`--dim`, ...) is refused before anything is restored (exit 2, the backup untouched),
while output paths, verbosity and the time budget may change."""

import json
from pathlib import Path

import numpy as np
import pytest

from pipelines import train as train_pipeline
from tfrec_attn._keras import keras
from tfrec_attn.testing.multi_worker import InterruptAt, Preempted
from tfrec_attn.training.backup import BackupMismatchError, RunBackup
from tfrec_attn.training.policy_run import PolicyOptions, run_policy_training

COMMON = ["--format", "synthetic", "--synthetic-items", "40", "--synthetic-length", "8",
          "--max-len", "8", "--dim", "8", "--verbose", "0", "--epochs", "3", "--patience", "10",
          "--lr", "0.01", "--export-root", ""]
TINY = {
    "sasrec": ["--synthetic-users", "120", "--blocks", "1", "--batch-size", "32"],
    "din": ["--model", "din", "--synthetic-users", "80", "--valid-negatives", "5",
            "--test-negatives", "5", "--batch-size", "128"],
    "autoencoder": ["--model", "autoencoder", "--synthetic-users", "120", "--k", "5",
                    "--valid-users", "20", "--test-users", "20", "--batch-size", "32",
                    "--blocks", "1"],
}


def _files(directory: Path) -> dict:
    """Every file under `directory`: relative path -> (mtime, contents)."""
    return {p.relative_to(directory): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(directory.rglob("*")) if p.is_file()}


def _interrupt(argv, monkeypatch) -> None:
    """Runs `tfrec-attn train argv` until a callback interrupts it after epoch 1."""
    runs = {name: getattr(train_pipeline, name) for name in
            ("run_training", "run_ranking_training", "run_autoencoder_training")}
    for name, run in runs.items():
        monkeypatch.setattr(train_pipeline, name,
                            lambda options, run=run: run(options, callbacks=[InterruptAt(1)]))
    with pytest.raises(Preempted):
        train_pipeline.main(argv)
    monkeypatch.undo()
    keras.backend.clear_session()


@pytest.mark.parametrize("model", ["sasrec", "din", "autoencoder"])
def test_a_restart_with_another_setting_is_refused_and_keeps_the_backup(
        model, tmp_path, monkeypatch, capsys):
    backup = tmp_path / "backup"
    argv = TINY[model] + COMMON + ["--output", str(tmp_path / "out"), "--backup-dir",
                                   str(backup)]
    _interrupt(argv, monkeypatch)
    before = _files(backup)
    assert "run_identity.json" in {p.name for p in before}
    capsys.readouterr()
    assert train_pipeline.main(argv + ["--dim", "16"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tfrec-attn train: backup_dir={str(backup)!r}")
    assert "model.dim: 8 there, 16 now" in err and "delete the directory" in err
    assert "max_len" not in err  # only what changed, by its full path
    assert len(err.strip().splitlines()) == 1  # no traceback
    assert _files(backup) == before


def test_a_restart_with_other_output_and_verbosity_resumes(tmp_path, monkeypatch, capsys):
    backup = tmp_path / "backup"
    argv = TINY["sasrec"] + COMMON + ["--backup-dir", str(backup)]
    _interrupt(argv + ["--output", str(tmp_path / "first")], monkeypatch)
    assert train_pipeline.main(argv + ["--output", str(tmp_path / "second"), "--verbose", "2",
                                       "--max-train-minutes", "30"]) == 0
    metrics = json.loads((tmp_path / "second" / "metrics.json").read_text())
    assert metrics["resumed_epochs"] == 1 and metrics["epochs"] == 3
    assert not any(backup.iterdir())  # the completed run deleted its backup, identity included


def test_the_policys_fit_is_refused_with_another_setting(tmp_path):
    def options(dim):
        return PolicyOptions(synthetic_users=80, synthetic_items=10, events_per_user=2,
                             valid_users=10, test_users=10, epochs=3, patience=10, batch_size=32,
                             k=2, verbose=0, export_root=None, output=str(tmp_path / "out"),
                             backup_dir=str(tmp_path / "backup"), behaviour_refit_epochs=0,
                             model={"max_len": 4, "dim": dim})

    with pytest.raises(Preempted):
        run_policy_training(options(8), callbacks=[InterruptAt(1)])
    keras.backend.clear_session()
    before = _files(tmp_path / "backup")
    with pytest.raises(BackupMismatchError, match=r"model\.dim: 8 there, 16 now"):
        run_policy_training(options(16))
    assert _files(tmp_path / "backup") == before


def test_run_backup_checks_the_identity_before_keras_restores(tmp_path):
    (tmp_path / "run_identity.json").write_text(json.dumps({"options": {"epochs": 3}}))
    RunBackup(tmp_path, identity={"options": {"epochs": 3}})  # the same run: resumes
    RunBackup(tmp_path)  # nothing to check against
    with pytest.raises(BackupMismatchError, match=r"options.epochs: 3 there, 4 now"):
        RunBackup(tmp_path, identity={"options": {"epochs": 4}})


def _write_events(path: Path, users: int = 120, items: int = 40, length: int = 8) -> None:
    """`user item` lines (the SASRec format), every user `length` events."""
    rng = np.random.default_rng(0)
    path.write_text("".join(f"{u} {i}\n" for u in range(1, users + 1)
                            for i in rng.integers(1, items + 1, size=length)))


@pytest.mark.parametrize("model", ["sasrec", "din", "autoencoder"])
def test_a_restart_after_the_data_file_changed_is_refused(model, tmp_path, monkeypatch, capsys):
    data = tmp_path / "events.txt"
    _write_events(data)
    backup = tmp_path / "backup"
    argv = (_without_synthetic(TINY[model] + COMMON)
            + ["--format", "sasrec", "--data", str(data), "--output", str(tmp_path / "out"),
               "--backup-dir", str(backup)])
    _interrupt(argv, monkeypatch)
    before = _files(backup)
    lines = data.read_text().splitlines()  # same users and items, one event moved
    data.write_text("\n".join([lines[1], lines[0], *lines[2:]]) + "\n")
    capsys.readouterr()
    assert train_pipeline.main(argv) == 2
    err = capsys.readouterr().err
    assert "dataset.fingerprint" in err and "delete the directory" in err, err
    assert _files(backup) == before


def _without_synthetic(argv: list) -> list:
    """`argv` without its `--synthetic-*` flags and their values."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg.startswith("--synthetic"):
            skip = True
        else:
            kept.append(arg)
    return kept


def test_a_backup_from_before_the_data_fingerprint_still_resumes(tmp_path):
    """A saved identity without a `"dataset"` section (older versions) is not compared on it."""
    (tmp_path / "run_identity.json").write_text(json.dumps({"options": {"epochs": 3}}))
    RunBackup(tmp_path, identity={"options": {"epochs": 3}, "dataset": {"path": "/x"}})
    with pytest.raises(BackupMismatchError, match=r"options.epochs: 3 there, 4 now"):
        RunBackup(tmp_path, identity={"options": {"epochs": 4}, "dataset": {"path": "/x"}})


def test_a_backup_from_before_on_error_resumes_unless_the_rerun_skips_lines(tmp_path):
    """`on_error` is newer than backups' identities: at its default ("raise", how older
    versions read) it is left out of the identity; `skip` is recorded and told apart."""
    from tfrec_attn.training.fitting import identity_options

    (tmp_path / "run_identity.json").write_text(json.dumps({"options": {"epochs": 3}}))
    RunBackup(tmp_path, identity={"options": identity_options({"epochs": 3,
                                                               "on_error": "raise"})})
    with pytest.raises(BackupMismatchError, match=r"options.on_error: \(not set\) there, "
                                                  r"'skip' now"):
        RunBackup(tmp_path, identity={"options": identity_options({"epochs": 3,
                                                                   "on_error": "skip"})})


def test_a_stage_whose_identity_recorded_a_resumable_option_still_loads(tmp_path):
    """The policy's kept fit once recorded `max_train_minutes` (it now leaves out every
    option a resumed run may change): a stage saved that way loads in an unchanged rerun, and a
    rerun with another time budget, instead of being refused as "(not set) now"."""
    from tfrec_attn.training.backup import CompletedStage

    CompletedStage(tmp_path, "policy_fitted", {"options": {"epochs": 2, "max_train_minutes": None,
                                                           "verbose": 1}}).save(
        [np.ones(2)], {"epochs": 2})
    weights, results = CompletedStage(tmp_path, "policy_fitted",
                                      {"options": {"epochs": 2}}).load()
    assert results == {"epochs": 2} and weights[0].tolist() == [1.0, 1.0]
    with pytest.raises(BackupMismatchError, match=r"options.epochs: 2 there, 3 now"):
        CompletedStage(tmp_path, "policy_fitted", {"options": {"epochs": 3}}).load()
