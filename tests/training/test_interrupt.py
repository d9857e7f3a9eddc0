"""Ctrl-C in `tfrec-attn train` / `tune`: one line saying what was left, exit code 130."""

import pytest

from pipelines import train as train_pipeline
from pipelines import tune as tune_pipeline

TINY = ["--format", "synthetic", "--export-root", ""]


def _interrupted(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize("model, run", [("sasrec", "run_training"),
                                        ("din", "run_ranking_training"),
                                        ("autoencoder", "run_autoencoder_training"),
                                        ("policy", "run_policy_training")])
def test_an_interrupted_train_says_how_to_resume(model, run, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train_pipeline, run, _interrupted)
    backup = tmp_path / "backup"
    (backup / "chief").mkdir(parents=True)  # an epoch was backed up
    argv = [*TINY, "--model", model, "--output", str(tmp_path / "out")]
    assert train_pipeline.main([*argv, "--backup-dir", str(backup)]) == 130
    err = capsys.readouterr().err
    assert err == (f"tfrec-attn train: interrupted; rerun the same command to resume from the "
                   f"backup in {backup} (after the last completed epoch)\n")
    assert train_pipeline.main(argv) == 130
    err = capsys.readouterr().err
    assert err.startswith("tfrec-attn train: interrupted; ") and err.count("\n") == 1
    assert f"{tmp_path / 'out'}/metrics.json was not written" in err
    assert "--backup-dir makes a run resumable" in err


def test_an_interrupt_before_the_first_backup_does_not_promise_a_resume(tmp_path, monkeypatch,
                                                                          capsys):
    monkeypatch.setattr(train_pipeline, "run_training", _interrupted)
    argv = [*TINY, "--output", str(tmp_path / "out"), "--backup-dir", str(tmp_path / "backup")]
    assert train_pipeline.main(argv) == 130
    err = capsys.readouterr().err
    assert "resume" not in err and "no epoch was backed up yet" in err


def test_an_interrupted_tune_says_how_to_resume(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tune_pipeline, "run_tuning", _interrupted)
    assert tune_pipeline.main(["--format", "synthetic", "--output", str(tmp_path / "t")]) == 130
    assert capsys.readouterr().err == (
        f"tfrec-attn tune: interrupted; rerun the same command to resume the search in "
        f"{tmp_path / 't'} (its completed trials are kept)\n")


def test_an_interrupted_overwrite_says_the_replaced_run_was_restored(tmp_path, monkeypatch,
                                                                      capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text("{}")  # the run being replaced, put back by the time
    monkeypatch.setattr(train_pipeline, "run_training", _interrupted)
    assert train_pipeline.main([*TINY, "--output", str(out), "--overwrite"]) == 130
    err = capsys.readouterr().err
    assert "was not written" not in err and err.count("\n") == 1
    assert f"the run it was replacing in {out} was restored as it was" in err
    assert (out / "metrics.json").read_text() == "{}"
    assert train_pipeline.main([*TINY, "--output", str(out)]) == 130  # nothing was replaced
    err = capsys.readouterr().err
    assert "restored" not in err and "was not written" in err


def test_an_interrupt_after_the_run_wrote_its_results_says_so(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"

    def finished_then_interrupted(options):
        out.mkdir()
        (out / "metrics.json").write_text("{}")
        raise KeyboardInterrupt  # e.g. while the table is printed

    monkeypatch.setattr(train_pipeline, "run_training", finished_then_interrupted)
    assert train_pipeline.main([*TINY, "--output", str(out)]) == 130
    err = capsys.readouterr().err
    assert err == (f"tfrec-attn train: interrupted after the run finished; its results are in "
                   f"{out / 'metrics.json'}\n")
