"""`tfrec-attn evaluate` / `optimize` inputs a user meets: a catalogue too small for the
default sampled protocol, a broken `metrics.json`, a file given as `--run-dir`, and pooling
synthetic runs of different seeds."""

import json
import types

import numpy as np
import pytest

from pipelines import evaluate as evaluate_pipeline
from pipelines import optimize as optimize_pipeline
from pipelines import train as train_pipeline
from tfrec_attn.training.run_evaluation import (
    evaluate_run,
    evaluate_runs,
    fitting_protocols,
)

# 50 items: fewer than 100 outside any history, so sampled-100 cannot be drawn.
SMALL = ["--format", "synthetic", "--synthetic-users", "80", "--synthetic-items", "50",
         "--synthetic-length", "8", "--max-len", "8", "--dim", "8", "--blocks", "1",
         "--verbose", "0", "--patience", "2", "--epochs", "1", "--export-root", "",
         "--eval-protocol", "full"]


@pytest.fixture(scope="module")
def small_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    for seed in (0, 1):
        assert train_pipeline.main(SMALL + ["--seed", str(seed), "--output",
                                            str(root / f"s{seed}")]) == 0
    return root / "s0", root / "s1"


def test_default_protocols_leave_out_a_sampled_one_the_catalogue_cannot_fit(
        small_runs, tmp_path, capsys):
    out = tmp_path / "out"
    assert evaluate_pipeline.main(["--run-dir", str(small_runs[0]), "--output", str(out),
                                   "--bootstrap", "50"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "evaluation.json").read_text())
    assert list(report["protocols"]) == ["full"]
    why = report["skipped_protocols"]["sampled-100"]
    assert "samples 100 negatives a user, but the catalogue has 4" in why  # 47-48 items
    assert f"not evaluated: {why}" in printed


def test_a_named_protocol_that_does_not_fit_is_an_error(small_runs, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--run-dir", str(small_runs[0]), "--output", str(out), "--protocols",
            "full,sampled-100"]
    assert evaluate_pipeline.main(argv) == 2
    err = capsys.readouterr().err
    assert "protocol 'sampled-100' samples 100 negatives" in err
    assert "evaluate it with fewer negatives ('sampled-" in err
    assert "Traceback" not in err and not out.exists()
    report = evaluate_run(small_runs[0], protocols=["sampled-20"], bootstrap=0, output=out)
    assert list(report["protocols"]) == ["sampled-20"] and "skipped_protocols" not in report


def test_sampled_zero_says_what_is_wrong(small_runs, capsys):
    argv = ["--run-dir", str(small_runs[0]), "--protocols", "sampled-0"]
    assert evaluate_pipeline.main(argv) == 2
    err = capsys.readouterr().err
    assert "--protocols: protocol 'sampled-0' must sample at least 1 negative" in err
    assert "unknown protocol" not in err


def test_pooling_synthetic_seeds_says_the_seed_made_other_data(small_runs, tmp_path):
    with pytest.raises(ValueError, match="both are synthetic runs, whose data --seed also "
                                         "generates"):
        evaluate_runs(list(small_runs), tmp_path / "pooled")
    assert not (tmp_path / "pooled").exists()
    other = tmp_path / "other_users"  # the same seed, other data: no word about --seed
    assert train_pipeline.main(SMALL + ["--synthetic-users", "90", "--output", str(other)]) == 0
    with pytest.raises(ValueError, match="differ from") as error:
        evaluate_runs([small_runs[0], other], tmp_path / "pooled")
    assert "--seed also" not in str(error.value)


def test_a_protocol_no_user_can_fit_suggests_full_only():
    split = types.SimpleNamespace(test_histories=[np.array([2, 3, 4])],
                                  test_targets=np.array([5]))
    with pytest.raises(ValueError, match=r"only 0 outside its history: evaluate it under "
                                         r"'full'\.$"):
        fitting_protocols(("full", "sampled-3"), split, vocab_size=6)
    assert fitting_protocols(None, split, vocab_size=6) == (("full",), {
        "sampled-100": "protocol 'sampled-100' samples 100 negatives a user, but the catalogue "
                       "has 4 items and some test user has only 0 outside its history"})


@pytest.mark.parametrize("command", ["evaluate", "optimize"])
def test_a_broken_metrics_json_is_named(command, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text("{bad")
    main = {"evaluate": evaluate_pipeline.main, "optimize": optimize_pipeline.main}[command]
    assert main(["--run-dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"Run metrics {run / 'metrics.json'} is not a JSON object" in err, err
    assert "Traceback" not in err and (run / "metrics.json").read_text() == "{bad"


def test_optimize_names_run_dir_when_it_is_a_file(tmp_path, capsys):
    path = tmp_path / "tiny.txt"
    path.write_text("1 2\n")
    assert optimize_pipeline.main(["--run-dir", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"--run-dir: no such run directory: {path}" in err and "output" not in err
