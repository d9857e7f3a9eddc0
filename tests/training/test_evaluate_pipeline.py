"""`tfrec-attn evaluate` on a tiny trained synthetic run: both protocols, paired verdicts,
a faithful reload, and error handling."""

import json
from pathlib import Path

import numpy as np
import pytest

from pipelines import evaluate as evaluate_pipeline
from pipelines import train as train_pipeline
from tfrec_attn.cli import main as cli_main
from tfrec_attn.evaluation import hits, ndcg_gains
from tfrec_attn.training import load_run
from tfrec_attn.training.run_evaluation import (
    evaluate_run,
    evaluation_table,
    rank_scorers,
    run_scorers,
)

# 200 items so that 100 sampled negatives fit outside every history.
TINY = ["--format", "synthetic", "--synthetic-users", "150", "--synthetic-items", "200",
        "--synthetic-length", "12", "--max-len", "10", "--dim", "16", "--blocks", "1",
        "--verbose", "0", "--patience", "2", "--epochs", "2", "--export-root", ""]
SCORERS = ["model", "popularity", "cooccurrence", "oracle"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("evaluate") / "run"
    assert train_pipeline.main(TINY + ["--output", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def before(run_dir):
    """The run directory's files and their bytes before any evaluation."""
    return {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def report(run_dir, before):
    return evaluate_run(run_dir, bootstrap=200)


def test_both_protocols_with_every_scorer_and_verdict(report):
    assert list(report["protocols"]) == ["full", "sampled-100"]
    assert report["seed"] == 0 and report["test_users"] == 150  # the run's seed by default
    for section in report["protocols"].values():
        assert list(section["metrics"]) == SCORERS
        assert list(section["comparisons"]) == ["popularity", "cooccurrence"]
        for record in section["comparisons"].values():
            for metric in ("ndcg@10", "hr@10"):
                result = record[metric]
                assert result["ci_low"] <= result["mean_difference"] <= result["ci_high"]
                expected = ("better" if result["ci_low"] > 0 else
                            "worse" if result["ci_high"] < 0 else "tie")
                assert result["verdict"] == expected and result["num_samples"] == 200
            assert record["verdict"] == record["ndcg@10"]["verdict"]
    full, sampled = report["protocols"]["full"], report["protocols"]["sampled-100"]
    # 101 candidates instead of 200: every scorer looks better under the sampled protocol.
    assert sampled["metrics"]["model"]["ndcg@10"] > full["metrics"]["model"]["ndcg@10"]
    assert "coverage@10" in full["metrics"]["model"]
    assert "coverage@10" not in sampled["metrics"]["model"]


def test_full_protocol_reproduces_the_runs_metrics_json(report, run_dir):
    """Same split, seed and scorers as `tfrec-attn train`: the reload path is faithful."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    full = report["protocols"]["full"]
    for key in ("ndcg@10", "hr@10", "ndcg@5", "mrr", "coverage@10"):
        assert full["metrics"]["model"][key] == metrics["test"][key]
        assert full["metrics"]["oracle"][key] == metrics["oracle"][key]
        for name in ("popularity", "cooccurrence"):
            assert full["metrics"][name][key] == metrics["baselines"][name][key]
    assert full["run_check"]["max_abs_difference"] == 0.0
    assert "ndcg@10" in full["run_check"]["metrics_compared"]
    assert report["protocols"]["sampled-100"]["run_check"] is None  # the run used "full"


def test_comparisons_pair_the_per_user_metrics_of_the_summaries(report):
    for section in report["protocols"].values():
        metrics = section["metrics"]
        for name, record in section["comparisons"].items():
            for metric in ("ndcg@10", "hr@10"):
                assert record[metric]["mean_a"] == pytest.approx(metrics["model"][metric])
                assert record[metric]["mean_b"] == pytest.approx(metrics[name][metric])
                assert record[metric]["users"] == 150


def test_rank_scorers_aligns_users_across_scorers(run_dir):
    run = load_run(run_dir)
    split = run.split
    scorers = run_scorers(run)
    metrics, ranks = rank_scorers(scorers, split.test_histories, split.test_targets,
                                  run.vocab_size, "sampled-100", ks=(10,), seed=0)
    assert {r.shape for r in ranks.values()} == {(150,)}
    for name, values in ranks.items():
        assert ndcg_gains(values, 10).mean() == metrics[name]["ndcg@10"]
        assert hits(values, 10).mean() == metrics[name]["hr@10"]
    # the Bayes-optimal oracle ranks the targets higher than popularity does, on average
    assert ranks["oracle"].mean() <= ranks["popularity"].mean()


@pytest.mark.parametrize("protocol, candidates", [("sampled-5", 6), ("full", 25)])
def test_rank_scorers_pairs_users_and_negatives(protocol, candidates):
    """A scorer and its reverse see the same candidates per user, so their ranks sum to
    `candidates - 1` user by user; a monotone transform of a scorer has its ranks exactly."""
    rng = np.random.default_rng(0)
    item_scores = rng.random(30)  # distinct: no ties
    histories = [rng.choice(np.arange(2, 30), size=3, replace=False) for _ in range(40)]
    targets = np.array([rng.choice(np.setdiff1d(np.arange(2, 30), h)) for h in histories])

    def score(batch):
        return np.tile(item_scores, (len(batch), 1))

    scorers = {"a": score, "scaled": lambda batch: 3.0 * score(batch) + 1.0,
               "reversed": lambda batch: -score(batch)}
    _, ranks = rank_scorers(scorers, histories, targets, 30, protocol, ks=(1,), seed=3)
    np.testing.assert_array_equal(ranks["a"], ranks["scaled"])
    np.testing.assert_array_equal(ranks["a"] + ranks["reversed"], candidates - 1)
    assert len(set(ranks["a"].tolist())) > 1  # the users differ, so a misalignment would show


def test_evaluation_json_is_written_and_the_run_untouched(report, run_dir, before):
    assert json.loads((run_dir / "evaluation.json").read_text()) == report
    after = {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert set(after) - set(before) == {Path("evaluation.json")}
    assert all(after[path] == data for path, data in before.items())


def test_command_line_writes_to_output_and_prints_the_table(report, run_dir, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["evaluate", "--run-dir", str(run_dir), "--protocols", "sampled-100", "--k", "10",
            "--bootstrap", "50", "--output", str(out)]
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert "sampled-100 protocol" in printed and "model vs cooccurrence" in printed
    assert [p.name for p in out.iterdir()] == ["evaluation.json"]
    written = json.loads((out / "evaluation.json").read_text())
    assert list(written["protocols"]) == ["sampled-100"] and written["ks"] == [10]
    # one seed: the sampled metrics equal those of the module's report
    assert (written["protocols"]["sampled-100"]["metrics"]
            == {name: {k: v for k, v in values.items() if "@" not in k or k.endswith("@10")}
                for name, values in report["protocols"]["sampled-100"]["metrics"].items()})
    assert "ndcg@10" in evaluation_table(report) and "oracle (ceiling)" in printed


@pytest.mark.parametrize(
    "args, message",
    [(["--protocols", "full,bogus"], "--protocols: unknown protocol 'bogus'"),
     (["--protocols", ""], "--protocols: protocols must name at least one"),
     (["--bootstrap", "-1"], "--bootstrap must be >= 0"),
     (["--k", "5,x"], "--k must be comma-separated positive integers")],
)
def test_bad_arguments_exit_2_naming_them(args, message, run_dir, capsys):
    assert cli_main(["evaluate", "--run-dir", str(run_dir), *args]) == 2
    assert message in capsys.readouterr().err


def test_missing_run_dir_exits_2(tmp_path, capsys):
    missing = tmp_path / "nope"
    assert evaluate_pipeline.main(["--run-dir", str(missing)]) == 2
    err = capsys.readouterr().err
    assert "--run-dir" in err and str(missing) in err
    with pytest.raises(FileNotFoundError, match="Run directory not found"):
        evaluate_run(missing)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"protocols": ("full", "full")}, "protocols must be distinct"),
     ({"protocols": ("sampled", "sampled-100")}, "'sampled' is 'sampled-100'"),
     ({"bootstrap": -5}, "bootstrap must be a non-negative integer"),
     ({"ks": ()}, "ks must name at least one")],
)
def test_evaluate_run_names_bad_arguments(kwargs, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        evaluate_run(tmp_path, **kwargs)


def test_bootstrap_zero_reports_metrics_only(run_dir, tmp_path):
    result = evaluate_run(run_dir, protocols=["full"], ks=[10], bootstrap=0, output=tmp_path)
    assert result["protocols"]["full"]["comparisons"] == {}
    assert np.isfinite(result["protocols"]["full"]["metrics"]["model"]["ndcg@10"])


@pytest.mark.parametrize("kind, options", [
    ("autoencoder", {"holdout_fraction": 0.2, "k": 20}),
    ("policy", {"events_per_user": 5, "k": 5}),
])
def test_runs_evaluate_cannot_rerank_are_named(kind, options, tmp_path, capsys):
    (tmp_path / "metrics.json").write_text(json.dumps({"test": {}, "options": options}))
    assert evaluate_pipeline.main(["--run-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"is a `--model {kind}` run; evaluate re-ranks SASRec and DIN runs" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]  # nothing written


@pytest.mark.parametrize("output", ["report.json", "report.json/sub", ""])
def test_output_that_cannot_be_a_directory_is_refused_first(tmp_path, capsys, output):
    # checked before the run is loaded: the (empty) run directory is never read
    (tmp_path / "report.json").write_text("{}")
    run = tmp_path / "run"
    run.mkdir()
    target = str(tmp_path / output) if output else ""
    assert evaluate_pipeline.main(["--run-dir", str(run), "--output", target]) == 2
    err = capsys.readouterr().err
    assert "--output" in err and "directory" in err and "Traceback" not in err
    assert (tmp_path / "report.json").read_text() == "{}"
