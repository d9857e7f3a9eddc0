"""`tfrec-attn train --on-error skip`: malformed lines of the data file are dropped, counted in
`metrics.json` and warned about, and the run reloads with the same lines dropped."""

import json
import warnings

import numpy as np
import pytest

from pipelines import train as train_pipeline
from pipelines import tune as tune_pipeline
from tfrec_attn.data import DataWarning
from tfrec_attn.training import load_run
from tfrec_attn.training.ranking_evaluation import evaluate_ranking_run

TINY = {
    "sasrec": ["--blocks", "1"],
    "din": ["--model", "din", "--valid-negatives", "5", "--test-negatives", "5"],
    "autoencoder": ["--model", "autoencoder", "--k", "5", "--valid-users", "10",
                    "--test-users", "10", "--blocks", "1"],
}
COMMON = ["--format", "sasrec", "--max-len", "8", "--dim", "8", "--epochs", "1", "--verbose",
          "0", "--export-root", "", "--batch-size", "32"]


def _file_with_bad_lines(path):
    rng = np.random.default_rng(0)
    lines = [f"{u} {i}" for u in range(1, 61) for i in rng.integers(1, 30, size=8)]
    lines[5] = "7"  # one field
    lines[40] = "3 x y"  # three fields
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("model", list(TINY))
def test_skip_drops_counts_and_warns(model, tmp_path, capsys):
    data = _file_with_bad_lines(tmp_path / "events.txt")
    argv = [*TINY[model], *COMMON, "--data", str(data)]
    assert train_pipeline.main([*argv, "--output", str(tmp_path / "raised")]) == 2
    assert "line 6: expected 2 fields, got 1" in capsys.readouterr().err
    assert not (tmp_path / "raised").exists()
    out = tmp_path / "skipped"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert train_pipeline.main([*argv, "--on-error", "skip", "--output", str(out)]) == 0
    assert any(issubclass(w.category, DataWarning) and "skipped 2 malformed line(s), kept 478"
               in str(w.message) for w in caught)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"]["skipped_lines"] == 2
    assert metrics["dataset"]["interactions"] == 60 * 8 - 2
    if model == "sasrec":  # reloads its data with the same lines dropped
        run = load_run(out)
        assert run.options.on_error == "skip" and len(run.frame) == 60 * 8 - 2
    if model == "din":  # so does a DIN run (evaluate's paired AUC on its test rows)
        report = evaluate_ranking_run(out, bootstrap=0, output=tmp_path / "evaluated")
        assert report["run_check"]["model"]["max_abs_difference"] == 0.0


def test_tune_reads_the_file_as_train_does(tmp_path, capsys):
    data = _file_with_bad_lines(tmp_path / "events.txt")
    argv = ["--format", "sasrec", "--data", str(data), "--max-trials", "1", "--epochs", "1",
            "--verbose", "0", "--output", str(tmp_path / "tune")]
    assert tune_pipeline.main(argv) == 2
    assert "line 6: expected 2 fields, got 1" in capsys.readouterr().err
    assert tune_pipeline.main([*argv, "--on-error", "skip"]) == 0
    report = json.loads((tmp_path / "tune" / "tuning.json").read_text())
    assert report["dataset"]["interactions"] == 60 * 8 - 2


def test_on_error_takes_raise_or_skip_only(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train_pipeline.main([*COMMON, "--on-error", "ignore", "--output", str(tmp_path / "o")])
    assert "invalid choice: 'ignore'" in capsys.readouterr().err


@pytest.mark.parametrize("model", ["sasrec", "din", "autoencoder", "policy"])
def test_skip_without_a_data_file_is_a_usage_error(model, tmp_path, capsys):
    """The synthetic generator reads no file, so `--on-error skip` there would do nothing: it is
    refused (exit 2) naming the option, before anything is written."""
    out = tmp_path / "o"
    argv = ["--model", model, "--on-error", "skip", "--epochs", "1", "--verbose", "0",
            "--export-root", "", "--output", str(out)]
    assert train_pipeline.main(argv) == 2
    assert "--on-error skip drops a data file's malformed lines; format 'synthetic'" in (
        capsys.readouterr().err)
    assert not out.exists()


def test_a_synthetic_run_recorded_with_skip_still_reloads():
    """Before `--on-error skip` was refused for synthetic data, such runs recorded it (it did
    nothing): `evaluate` and `optimize` reload them as read, without the option."""
    from tfrec_attn.training.run_dir import options_from_metrics

    options = options_from_metrics({"options": {"format": "synthetic", "on_error": "skip",
                                                "synthetic_users": 50},
                                    "model": {"vocab_size": 30, "dim": 8}})
    assert options.on_error == "raise" and options.synthetic_users == 50
