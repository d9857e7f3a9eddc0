"""`tfrec-attn evaluate` with several `--run-dir`: runs of the same data pooled user by user
(`evaluate_runs`), and the refusals that keep the pooled comparison meaningful."""

import json

import pytest

from pipelines import evaluate as evaluate_pipeline
from pipelines import train as train_pipeline
from tfrec_attn.data import generate_synthetic
from tfrec_attn.evaluation import hits, ndcg_gains, paired_bootstrap
from tfrec_attn.training import load_run
from tfrec_attn.training.run_evaluation import (
    evaluate_run,
    evaluate_runs,
    evaluation_table,
    rank_scorers,
    run_check_warnings,
    run_scorers,
)

TINY = ["--format", "sasrec", "--max-len", "10", "--dim", "16", "--blocks", "1", "--verbose",
        "0", "--patience", "2", "--epochs", "2", "--export-root", ""]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two seeds of the same data, and one run on other data (a `user item` file each: on
    `--format synthetic` the seed would also change the data)."""
    root = tmp_path_factory.mktemp("pooled")
    frame = generate_synthetic(num_users=150, num_items=200, mean_length=12, seed=0)
    lines = [f"{u} {i}" for u, i in zip(frame["user"], frame["item"])]
    (root / "data.txt").write_text("\n".join(lines) + "\n")
    kept = [line for line in lines if line.split()[0] != "1"]  # one user fewer
    (root / "other.txt").write_text("\n".join(kept) + "\n")
    paths = {}
    for name, extra in (("s0", ["--seed", "0", "--data", str(root / "data.txt")]),
                        ("s1", ["--seed", "1", "--data", str(root / "data.txt")]),
                        ("other", ["--seed", "0", "--data", str(root / "other.txt")])):
        paths[name] = root / name
        assert train_pipeline.main(TINY + extra + ["--output", str(paths[name])]) == 0
    return paths


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("pooled_report")
    return evaluate_runs([runs["s0"], runs["s1"]], out, bootstrap=200)


def test_model_row_is_the_mean_of_the_runs_which_match_their_own_reports(report, runs):
    for protocol, section in report["protocols"].items():
        metrics = section["metrics"]
        assert list(metrics) == ["model", "run 1", "run 2", "popularity", "cooccurrence"]
        for key, value in metrics["model"].items():
            assert value == pytest.approx((metrics["run 1"][key] + metrics["run 2"][key]) / 2)
        for i, name in enumerate(("s0", "s1"), 1):  # each run alone, same negatives
            alone = evaluate_run(runs[name], protocols=[protocol], bootstrap=0, seed=0,
                                 output=runs[name].parent / f"alone_{name}")
            assert metrics[f"run {i}"] == alone["protocols"][protocol]["metrics"]["model"]
            for baseline in ("popularity", "cooccurrence"):
                assert metrics[baseline] == alone["protocols"][protocol]["metrics"][baseline]
    assert metrics["run 1"]["ndcg@10"] != metrics["run 2"]["ndcg@10"]  # two different models


def test_comparisons_average_each_users_metric_over_the_runs(report, runs):
    loaded = [load_run(runs[name]) for name in ("s0", "s1")]
    split = loaded[0].split
    for protocol in ("full", "sampled-100"):
        ranks = [rank_scorers(run_scorers(run), split.test_histories, split.test_targets,
                              run.vocab_size, protocol, ks=(10,), seed=0)[1] for run in loaded]
        for metric, per_user in (("ndcg@10", ndcg_gains), ("hr@10", hits)):
            pooled = (per_user(ranks[0]["model"], 10) + per_user(ranks[1]["model"], 10)) / 2
            expected = paired_bootstrap(pooled, per_user(ranks[0]["cooccurrence"], 10), 200, 0)
            got = report["protocols"][protocol]["comparisons"]["cooccurrence"][metric]
            for key in ("mean_difference", "ci_low", "ci_high", "prob_better"):
                assert got[key] == pytest.approx(expected[key])


def test_run_checks_one_per_run(report, runs):
    full = report["protocols"]["full"]["run_check"]
    assert [check["run_dir"] for check in full] == [str(runs["s0"]), str(runs["s1"])]
    assert [check["max_abs_difference"] for check in full] == [0.0, 0.0]  # faithful reloads
    sampled = report["protocols"]["sampled-100"]["run_check"]
    assert all(set(check) == {"run_dir"} for check in sampled)  # the runs used "full"
    assert run_check_warnings(report) == []
    bad = json.loads(json.dumps(report))
    bad["protocols"]["full"]["run_check"][1]["max_abs_difference"] = 0.01
    (line,) = run_check_warnings(bad)
    assert str(runs["s1"]) in line and "0.01" in line


def test_command_line_pools_prints_and_writes_only_the_output(runs, tmp_path, capsys):
    before = {p: p.read_bytes() for name in ("s0", "s1") for p in runs[name].rglob("*")
              if p.is_file()}
    out = tmp_path / "pooled"
    argv = ["--run-dir", str(runs["s0"]), "--run-dir", str(runs["s1"]), "--protocols", "full",
            "--k", "10", "--bootstrap", "50", "--output", str(out)]
    assert evaluate_pipeline.main(argv) == 0
    printed = capsys.readouterr().out
    assert "model (mean of 2 runs) vs cooccurrence" in printed and "run 2" in printed
    written = json.loads((out / "evaluation.json").read_text())
    assert written["run_dirs"] == [str(runs["s0"]), str(runs["s1"])]
    assert printed.startswith(evaluation_table(written))
    after = {p: p.read_bytes() for name in ("s0", "s1") for p in runs[name].rglob("*")
             if p.is_file()}
    assert after == before


@pytest.mark.parametrize("case, message", [
    ("no_output", "--output: a directory for the pooled evaluation.json is required"),
    ("output_is_a_run", "output must not be one of the pooled runs"),
    ("output_inside_a_run", "output must not be one of the pooled runs or inside one"),
    ("same_run_twice", "run_dirs must be distinct runs"),
    ("other_data", "its data, split or training sequences differ from"),
    ("against", "--against compares two DIN runs"),
])
def test_refusals_exit_2_and_write_nothing(case, message, runs, tmp_path, capsys):
    first, second = runs["s0"], runs["s1"]
    extra = ["--output", str(tmp_path / "out")]
    if case == "no_output":
        extra = []
    elif case == "output_is_a_run":
        extra = ["--output", str(second)]
    elif case == "output_inside_a_run":
        extra = ["--output", str(second / "pooled")]
    elif case == "same_run_twice":
        second = first
    elif case == "other_data":
        second = runs["other"]
    elif case == "against":
        extra += ["--against", str(second)]
    before = (second / "evaluation.json").exists()
    argv = ["--run-dir", str(first), "--run-dir", str(second), *extra]
    assert evaluate_pipeline.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    if case == "other_data":
        assert str(runs["other"]) in err
    assert not (tmp_path / "out").exists()
    assert (second / "evaluation.json").exists() == before


def test_runs_of_other_models_are_refused(runs, tmp_path, capsys):
    other = tmp_path / "autoencoder"
    other.mkdir()
    (other / "metrics.json").write_text(json.dumps(
        {"test": {}, "options": {"holdout_fraction": 0.2, "k": 20}}))
    argv = ["--run-dir", str(runs["s0"]), "--run-dir", str(other), "--output", str(tmp_path / "o")]
    assert evaluate_pipeline.main(argv) == 2
    err = capsys.readouterr().err
    assert "is a `--model autoencoder` run; several --run-dir pool SASRec runs only" in err
    assert not (tmp_path / "o").exists()


def test_one_run_is_not_pooled(runs, tmp_path):
    with pytest.raises(ValueError, match="pools two or more runs"):
        evaluate_runs([runs["s0"]], tmp_path)
    assert not (tmp_path / "evaluation.json").exists()
