"""`tfrec-attn evaluate` on a tiny DIN run: a faithful reload, paired GAUC / AUC bootstraps
against popularity and another run, and refusals that write nothing."""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipelines import evaluate as evaluate_pipeline
from tfrec_attn.cli import main as cli_main
from tfrec_attn.evaluation import group_auc, paired_bootstrap, roc_auc
from tfrec_attn.evaluation.ctr_comparison import (
    _PooledAUC,
    cluster_bootstrap_auc,
    compare_ctr_scores,
    per_user_auc,
)
from tfrec_attn.training import TrainOptions
from tfrec_attn.training.ranking_evaluation import (
    evaluate_ranking_run,
    load_ranking_run,
    ranking_evaluation_table,
)
from tfrec_attn.training.ranking_run import RankingOptions, run_ranking_training

TEST_NEGATIVES = 10


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("din_eval") / "run"
    options = RankingOptions(
        output=str(path), export_root=None, synthetic_users=60, synthetic_items=50,
        synthetic_length=10.0, epochs=2, batch_size=128, learning_rate=1e-2,
        valid_negatives=5, test_negatives=TEST_NEGATIVES, verbose=0,
        model={"max_len": 8, "dim": 8, "attention_units": [8], "mlp_units": [8]})
    run_ranking_training(options)
    return path


@pytest.fixture(scope="module")
def before(run_dir):
    """The run directory's files and their bytes before any evaluation."""
    return {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def report(run_dir, before):
    return evaluate_ranking_run(run_dir, against=run_dir, bootstrap=200)


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def _copy_run(run_dir: Path, to: Path, edit) -> Path:
    """A copy of the run (without reports) whose metrics.json `edit` changes in place."""
    shutil.copytree(run_dir, to, ignore=shutil.ignore_patterns("evaluation.json", "tensorboard"))
    metrics = _metrics(to)
    edit(metrics)
    (to / "metrics.json").write_text(json.dumps(metrics))
    return to


def test_reload_reproduces_the_runs_metrics_json_exactly(report, run_dir):
    metrics = _metrics(run_dir)
    assert report["metrics"]["model"] == metrics["test"]
    assert report["metrics"]["popularity"] == metrics["baselines"]["popularity"]
    assert report["run_check"] == {name: {"max_abs_difference": 0.0}
                                   for name in ("model", "popularity", "against")}
    assert report["test_users"] == metrics["dataset"]["users"]
    assert report["test_rows"] == metrics["dataset"]["test_rows"]
    assert report["seed"] == 0 and report["model_type"] == "din"


def test_a_run_against_itself_is_an_exact_tie(report):
    record = report["comparisons"]["against"]
    assert report["metrics"]["against"] == report["metrics"]["model"]
    for metric in ("gauc", "auc"):
        result = record[metric]
        assert (result["mean_difference"], result["ci_low"], result["ci_high"]) == (0.0, 0.0, 0.0)
        assert result["verdict"] == "tie" and result["num_samples"] == 200
    assert record["verdict"] == "tie"


def test_comparison_with_popularity_matches_the_metrics(report):
    record = report["comparisons"]["popularity"]
    model, popularity = report["metrics"]["model"], report["metrics"]["popularity"]
    for metric in ("gauc", "auc"):
        result = record[metric]
        assert result["mean_a"] == pytest.approx(model[metric], abs=1e-12)
        assert result["mean_b"] == pytest.approx(popularity[metric], abs=1e-12)
        assert result["ci_low"] <= result["mean_difference"] <= result["ci_high"]
        expected = ("better" if result["ci_low"] > 0 else
                    "worse" if result["ci_high"] < 0 else "tie")
        assert result["verdict"] == expected
    assert record["verdict"] == record["gauc"]["verdict"]
    table = ranking_evaluation_table(report)
    assert "model vs popularity: gauc" in table and "model vs against: gauc" in table


def test_evaluation_json_is_written_and_the_run_untouched(report, run_dir, before):
    assert json.loads((run_dir / "evaluation.json").read_text()) == report
    after = {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert set(after) - set(before) == {Path("evaluation.json")}
    assert all(after[path] == data for path, data in before.items())


def test_against_a_run_with_another_history_width_uses_its_own_histories(run_dir, report,
                                                                          tmp_path):
    """DIN's weights do not depend on max_len, so a copy reading 4 items is another model."""
    other = _copy_run(run_dir, tmp_path / "short", lambda m: m["model"].update(max_len=4))
    out = evaluate_ranking_run(run_dir, against=other, bootstrap=0, output=tmp_path)
    assert out["comparisons"] == {} and out["metrics"]["model"] == report["metrics"]["model"]
    assert out["metrics"]["against"] != out["metrics"]["model"]
    reloaded = load_ranking_run(other)
    assert reloaded.split.test["history"].shape[1] == 4
    np.testing.assert_array_equal(reloaded.split.test["candidate"],
                                  load_ranking_run(run_dir).split.test["candidate"])


def test_command_line_prints_the_table_and_writes_only_the_report(run_dir, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["evaluate", "--run-dir", str(run_dir), "--bootstrap", "50", "--output", str(out)]
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert "model vs popularity" in printed and "gauc" in printed and "95%" in printed
    assert [p.name for p in out.iterdir()] == ["evaluation.json"]
    written = json.loads((out / "evaluation.json").read_text())
    assert list(written["comparisons"]) == ["popularity"] and written["against_run_dir"] is None


def test_a_reload_away_from_metrics_json_is_printed_as_a_warning(run_dir, tmp_path, capsys):
    """As for SASRec runs: a nonzero run_check is printed, not only stored in the report."""
    def edit(metrics):
        metrics["test"]["gauc"] += 0.25

    changed = _copy_run(run_dir, tmp_path / "changed", edit)
    argv = ["--run-dir", str(changed), "--bootstrap", "0", "--output", str(tmp_path / "out")]
    assert evaluate_pipeline.main(argv) == 0
    err = capsys.readouterr().err
    assert f"warning: model: the reloaded run {changed} differs from its metrics.json" in err
    assert "0.25" in err and "popularity:" not in err
    assert evaluate_pipeline.main(["--run-dir", str(run_dir), "--bootstrap", "0", "--output",
                                   str(tmp_path / "out2")]) == 0
    assert "warning" not in capsys.readouterr().err  # a faithful reload prints none


@pytest.mark.parametrize("edit, named", [
    pytest.param(lambda m: m["options"].update(seed=1), "seed: 0 vs 1", id="seed"),
    pytest.param(lambda m: m["options"].update(test_negatives=5), "test_negatives: 10 vs 5",
                 id="test_negatives"),
    pytest.param(lambda m: m["options"].update(synthetic_users=61),
                 "synthetic_users: 60 vs 61", id="synthetic_users"),
])
def test_against_a_run_on_other_test_rows_is_refused_writing_nothing(
        run_dir, tmp_path, capsys, edit, named):
    other = _copy_run(run_dir, tmp_path / "other", edit)
    out = tmp_path / "out"
    argv = ["--run-dir", str(run_dir), "--against", str(other), "--output", str(out)]
    assert evaluate_pipeline.main(argv) == 2
    err = capsys.readouterr().err
    assert "against" in err and named in err and str(other) in err
    assert not out.exists() and not (other / "evaluation.json").exists()


def test_sasrec_run_with_against_exits_2_naming_the_flag(run_dir, tmp_path, capsys):
    sasrec = tmp_path / "sasrec"
    sasrec.mkdir()
    options = {k: v for k, v in dataclasses.asdict(TrainOptions()).items() if k != "model"}
    (sasrec / "metrics.json").write_text(json.dumps({"options": options, "model": {}}))
    argv = ["--run-dir", str(sasrec), "--against", str(run_dir)]
    assert evaluate_pipeline.main(argv) == 2
    assert "--against compares two DIN runs" in capsys.readouterr().err
    assert [p.name for p in sasrec.iterdir()] == ["metrics.json"]


@pytest.mark.parametrize("flags, named", [
    (["--protocols", "full"], "--protocols: SASRec options"),
    (["--k", "10"], "--k: SASRec options"),
    (["--protocols", "full", "--k", "10"], "--protocols, --k: SASRec options"),
    (["--against", "nope"], "--against: no such run directory"),
])
def test_sasrec_flags_on_a_din_run_exit_2(run_dir, tmp_path, capsys, flags, named):
    out = tmp_path / "out"
    assert evaluate_pipeline.main(["--run-dir", str(run_dir), "--output", str(out), *flags]) == 2
    assert named in capsys.readouterr().err and not out.exists()


def test_changed_data_are_named_with_the_run_dir(run_dir, tmp_path):
    def edit(metrics):
        metrics["dataset"]["interactions"] += 1
    changed = _copy_run(run_dir, tmp_path / "changed", edit)
    with pytest.raises(ValueError, match=f"The data of {changed} no longer match.*interactions"):
        load_ranking_run(changed)


def test_per_user_auc_is_group_aucs_and_skips_single_class_users():
    rng = np.random.default_rng(1)
    labels = np.tile([1.0, 0.0, 0.0, 0.0], 30)
    labels[4:8] = 0.0  # user 1 has no positive: GAUC skips it
    scores = np.round(rng.normal(size=labels.size), 1)  # rounded: plenty of ties
    auc, valid = per_user_auc(labels, scores, 4)
    assert valid.sum() == 29 and not valid[1] and np.isnan(auc[1])
    reference = group_auc(labels, scores, np.arange(labels.size) // 4)
    assert np.mean(auc[valid]) == pytest.approx(reference["gauc"], abs=1e-12)


def test_pooled_auc_weights_rows_by_their_users_draws():
    rng = np.random.default_rng(2)
    labels = np.tile([1.0, 0.0, 0.0], 6)
    scores = np.round(rng.normal(size=labels.size), 1)
    pooled = _PooledAUC(labels.reshape(6, 3).astype(bool), scores.reshape(6, 3))
    draws = np.array([2.0, 0.0, 1.0, 3.0, 0.0, 1.0])
    repeated = np.repeat(np.arange(labels.size), np.repeat(draws, 3).astype(int))
    assert pooled(draws[None])[0] == pytest.approx(roc_auc(labels[repeated], scores[repeated]))
    assert pooled(np.ones((1, 6)))[0] == roc_auc(labels, scores)


def test_hand_built_scorers_identical_tie_and_clearly_better():
    rng = np.random.default_rng(3)
    labels = np.tile(np.r_[1.0, np.zeros(9)], 80)
    noisy = rng.normal(size=labels.size)
    same = compare_ctr_scores(labels, noisy, noisy.copy(), 10, num_samples=200)
    for metric in ("gauc", "auc"):
        assert (same[metric]["ci_low"], same[metric]["ci_high"]) == (0.0, 0.0)
        assert same[metric]["verdict"] == "tie"
    better = compare_ctr_scores(labels, noisy + 3.0 * labels, noisy, 10, num_samples=200)
    assert better["verdict"] == better["auc"]["verdict"] == "better"
    assert better["gauc"]["ci_low"] > 0.2 and better["auc"]["ci_low"] > 0.2
    # GAUC's interval is paired_bootstrap's over the per-user AUCs (equal weights per user).
    auc_a, _ = per_user_auc(labels, noisy + 3.0 * labels, 10)
    auc_b, _ = per_user_auc(labels, noisy, 10)
    expected = paired_bootstrap(auc_a, auc_b, num_samples=200)
    assert better["gauc"]["ci_low"] == expected["ci_low"]


@pytest.mark.parametrize("kwargs, match", [
    ({"group_size": 1}, "group_size must be an int >= 2"),
    ({"group_size": 3}, "whole groups of group_size = 3"),
    ({"num_samples": 0}, "num_samples must be a positive integer"),
    ({"confidence": 1.5}, "confidence must be in"),
])
def test_cluster_bootstrap_names_bad_arguments(kwargs, match):
    args = {"labels": np.tile([1.0, 0.0], 4), "scores_a": np.zeros(8), "scores_b": np.ones(8),
            "group_size": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        cluster_bootstrap_auc(**args)


def test_bootstrap_must_be_non_negative(run_dir):
    with pytest.raises(ValueError, match="bootstrap must be a non-negative integer"):
        evaluate_ranking_run(run_dir, bootstrap=-1)


def test_a_data_file_changed_since_training_is_refused(tmp_path):
    """Each user's events reversed: same users, items and sizes, another split. The reload
    compared only sizes and the vocabulary, so it re-created other test rows silently."""
    data = tmp_path / "log.txt"
    rows = [(u, (u * 7 + e * 3) % 40) for u in range(40) for e in range(8)]
    data.write_text("".join(f"u{u} i{i}\n" for u, i in rows))
    options = RankingOptions(
        output=str(tmp_path / "run"), export_root=None, data=str(data), format="sasrec",
        epochs=1, batch_size=128, valid_negatives=5, test_negatives=5, verbose=0,
        model={"max_len": 8, "dim": 8, "attention_units": [8], "mlp_units": [8]})
    metrics = run_ranking_training(options)
    assert metrics["dataset"]["path"] == str(data)
    assert set(metrics["dataset"]["fingerprint"]) == {"log.txt"}
    load_ranking_run(tmp_path / "run")  # unchanged: reloads
    by_user = {}
    for u, i in rows:
        by_user.setdefault(u, []).append(i)
    data.write_text("".join(f"u{u} i{i}\n" for u, items in by_user.items()
                            for i in reversed(items)))
    with pytest.raises(ValueError, match=f"trained on changed since: {data}"):
        load_ranking_run(tmp_path / "run")
