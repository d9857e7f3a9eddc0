"""`tfrec-attn optimize` for a DIN run, end to end on a tiny synthetic run: every method's
variant, its quality on the run's own test rows, exports, refusals before any work, and QAT of
a mean-pooling run."""

import json
import shutil

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from pipelines import optimize as optimize_pipeline
from pipelines import train as train_pipeline
from tfrec_attn._keras import tf
from tfrec_attn.cli import main as cli_main
from tfrec_attn.export import LiteRTRanker, assert_builtin_only
from tfrec_attn.export.serving import read_models_config
from tfrec_attn.optimization import optimize_run, optimize_table, prunable_weights
from tfrec_attn.optimization import ranker_report as optimize_ranker_report
from tfrec_attn.optimization.methods import METHODS
from tfrec_attn.training.ctr_evaluation import ctr_metrics, tower_logits
from tfrec_attn.training.ranking_evaluation import load_ranking_run

NEGATIVES = 20
TINY = ["--model", "din", "--format", "synthetic", "--synthetic-users", "150",
        "--synthetic-items", "60", "--synthetic-length", "12", "--max-len", "10", "--dim", "16",
        "--valid-negatives", "20", "--test-negatives", str(NEGATIVES), "--batch-size", "128",
        "--epochs", "3", "--lr", "0.01", "--patience", "2", "--verbose", "0",
        "--export-root", ""]
FIELDS = {"method", "path", "size_bytes", "gzip_bytes", "tflite_quantization", "int8_tensors",
          "auc", "gauc", "protocol", "sparsity", "keras", "latency", "saved_model"}
OWN_MODEL = ("float32", "prune", "qat")  # variants with their own Keras tower and SavedModel
TARGET_SPARSITY = 0.8
# Measured on this run: int8 post-training quantization moved AUC / GAUC by 0.001, the QAT
# file 0.004 from its fake-quantized Keras tower.
INT8_TOLERANCE = 0.015


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("optimize_din") / "run"
    assert train_pipeline.main(TINY + ["--output", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def report(run_dir):
    """Every method at once (~40 s on two busy cores: five conversions, two fine-tunings)."""
    return optimize_run(run_dir, methods=METHODS, epochs=1, latency_runs=3,
                        target_sparsity=TARGET_SPARSITY)


@pytest.fixture(scope="module")
def run(run_dir):
    return load_ranking_run(run_dir)


def _requests(run) -> tuple[np.ndarray, np.ndarray]:
    group = 1 + run.split.test_negatives
    return run.split.test["history"][::group], run.split.test["candidate"].reshape(-1, group)


def test_report_records_every_variant(report, run_dir):
    assert list(report["variants"]) == ["float32", *METHODS]
    assert report["model_type"] == "din" and report["num_candidates"] == 1 + NEGATIVES
    assert report["test_users"] == 150 and report["test_rows"] == 150 * (1 + NEGATIVES)
    for name, record in report["variants"].items():
        assert FIELDS <= set(record), (name, sorted(FIELDS - set(record)))
        tflite = run_dir / "optimized" / "tflite" / f"{name}.tflite"
        assert record["path"] == str(tflite) and record["size_bytes"] == tflite.stat().st_size
        assert 0 < record["gzip_bytes"] < record["size_bytes"]
        assert 0.5 < record["auc"] <= 1.0 and 0.5 < record["gauc"] <= 1.0
        for runtime in ("tflite", "saved_model"):
            latency = record["latency"][runtime]
            if runtime == "saved_model" and name not in OWN_MODEL:
                assert latency is None and record["saved_model"] is None
                continue
            assert set(latency) == {"single", "batch_16"}
            assert all(0 < v["p50_ms"] <= v["p99_ms"] for v in latency.values())
    assert json.loads((run_dir / "optimize.json").read_text()) == report
    assert (run_dir / "optimize.png").stat().st_size > 1000
    config = (run_dir / "optimized" / "saved_models" / "models.config").read_text()
    assert all((name in config) == (name in OWN_MODEL) for name in report["variants"])


def test_float32_file_scores_the_runs_own_test_rows(report, run_dir):
    """Same rows as `metrics.json` (and `tfrec-attn evaluate`): the Keras AUC / GAUC are the
    run's, and the float TFLite file ranks them as Keras does."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    float32 = report["variants"]["float32"]
    for metric in ("auc", "gauc"):
        assert float32["keras"][metric] == pytest.approx(metrics["test"][metric], abs=1e-12)
        assert float32[metric] == pytest.approx(float32["keras"][metric], abs=1e-4)
    assert report["reference"] == metrics["test"]


def test_pruned_sparsity_reaches_the_target(report, run):
    prune = report["variants"]["prune"]
    assert prune["sparsity"] == pytest.approx(TARGET_SPARSITY, abs=0.01)
    assert prune["gzip_bytes"] < 0.6 * report["variants"]["float32"]["gzip_bytes"]
    # Read back from the export, not from the report: each prunable weight of the tower.
    exported = {v.name: v.numpy()
                for v in tf.saved_model.load(prune["saved_model"]["path"]).tower.variables}
    names = {w.name for layer in run.tower.layers for w in prunable_weights(layer)}
    assert len(names) >= 6 and names <= set(exported)  # table, attention and prediction MLPs
    for name in names:
        assert np.mean(exported[name] == 0) == pytest.approx(TARGET_SPARSITY, abs=0.01), name
    assert report["variants"]["float32"]["sparsity"] == 0.0


@pytest.mark.parametrize("name", ["ptq-int8", "qat"])
def test_int8_file_runs_in_litert_close_to_the_float_model(report, run, name):
    variant = report["variants"][name]
    path = variant["path"]
    assert_builtin_only(path)
    tensors = Interpreter(model_path=path).get_tensor_details()
    assert sum(t["dtype"] == np.int8 for t in tensors) > 10  # full-integer internals
    assert variant["size_bytes"] < 0.6 * report["variants"]["float32"]["size_bytes"]
    history, candidates = _requests(run)
    scores = LiteRTRanker(path).score(history, candidates)
    assert scores.shape == candidates.shape and np.isfinite(scores).all()
    measured = ctr_metrics(scores.reshape(-1), run.split.test, run.split.test_negatives)
    reference = report["variants"]["float32"]["keras"] if name == "ptq-int8" else variant["keras"]
    for metric in ("auc", "gauc"):
        assert measured[metric] == pytest.approx(variant[metric], abs=1e-9)
        assert variant[metric] == pytest.approx(reference[metric], abs=INT8_TOLERANCE)


@pytest.mark.parametrize("name", OWN_MODEL)
def test_saved_model_reloads_and_scores_like_keras(report, run, name):
    variant = report["variants"][name]
    loaded = tf.saved_model.load(variant["saved_model"]["path"])
    history, candidates = _requests(run)
    scores = loaded.signatures["serving_default"](
        history=tf.constant(history), candidates=tf.constant(candidates))["scores"].numpy()
    measured = ctr_metrics(scores.reshape(-1), run.split.test, run.split.test_negatives)
    for metric in ("auc", "gauc"):
        assert measured[metric] == pytest.approx(variant["keras"][metric], abs=1e-6)
    if name == "float32":  # the run's own tower, pair by pair
        np.testing.assert_allclose(scores.reshape(-1), tower_logits(run.tower, run.split.test),
                                   rtol=1e-5, atol=1e-5)
    ranked = loaded.signatures["rank"](history=tf.constant(history[:4]),
                                       candidates=tf.constant(candidates[:4]))
    assert ranked["item_ids"].shape == (4, report["k"])
    best = np.take_along_axis(candidates[:4], scores[:4].argmax(1)[:, None], axis=1)[:, 0]
    np.testing.assert_array_equal(ranked["item_ids"].numpy()[:, 0], best)


def test_fine_tuning_follows_the_run_and_the_table_lists_every_variant(report, run_dir):
    options = json.loads((run_dir / "metrics.json").read_text())["options"]
    for method, scale in (("prune", 1.0), ("qat", 0.1)):
        settings = report["variants"][method]["fine_tuning"]
        assert settings == report["fine_tuning"][method]
        assert settings["epochs"] == 1 and settings["batch_size"] == options["batch_size"]
        assert settings["learning_rate"] == pytest.approx(scale * options["learning_rate"])
    table = optimize_table(report)
    assert "gauc" in table and all(name in table for name in report["variants"])
    # the tiny tower's dynamic file quantized nothing, or something: the table says which
    variants = report["variants"]
    assert variants["float32"]["int8_tensors"] == 0 and variants["ptq-int8"]["int8_tensors"] > 0
    assert ("note: ptq-dynamic" in table) == (variants["ptq-dynamic"]["int8_tensors"] == 0)
    assert "note: ptq-int8" not in table


def _listing(path) -> list:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.mark.parametrize("argv, message", [
    (["--methods", "prune,frobnicate"], "'frobnicate'"),
    (["--k", "0"], "k must be a positive int"),
    (["--target-sparsity", "1.5"], "target_sparsity must be in [0, 1)"),
    (["--latency-runs", "0"], "latency_runs must be"),
])
def test_bad_method_or_setting_exits_2_before_anything_is_written(argv, message, run_dir,
                                                                  tmp_path, capsys):
    before, out = _listing(run_dir), tmp_path / "out"
    assert cli_main(["optimize", "--run-dir", str(run_dir), "--output", str(out), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and _listing(run_dir) == before


@pytest.mark.parametrize("methods, output", [
    ("ptq-dynamic", "afile"), ("ptq-dynamic", "afile/sub"), ("prune,,qat", "out"),
    ("", "out"), ("ptq-int8,frobnicate", "out")])
def test_bad_output_or_methods_are_refused_before_loading(methods, output, run_dir, tmp_path,
                                                          monkeypatch):
    """The DIN path checks `output` and `methods` (a comma-separated string is split as
    `--methods` is) before `load_ranking_run`."""
    def refuse(*args, **kwargs):
        raise AssertionError("the run was loaded")

    monkeypatch.setattr(optimize_ranker_report, "load_ranking_run", refuse)
    (tmp_path / "afile").write_text("mine")
    before = _listing(tmp_path)
    match = "^output must be a directory" if output != "out" else "^methods"
    with pytest.raises(ValueError, match=match):
        optimize_run(run_dir, methods=methods, output=tmp_path / output)
    assert _listing(tmp_path) == before


def test_rerun_with_fewer_methods_leaves_only_what_its_report_lists(report, run_dir, tmp_path):
    """Exports of the earlier run's other methods go; `optimized/` matches `optimize.json`."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    rerun = optimize_run(copy, methods="ptq-dynamic", latency_runs=1)
    assert list(rerun["variants"]) == ["float32", "ptq-dynamic"]
    tflite = {str(p) for p in (copy / "optimized" / "tflite").iterdir()}
    assert tflite == {record["path"] for record in rerun["variants"].values()}
    assert {p.name for p in (copy / "optimized" / "saved_models").iterdir()} == {
        "float32", "models.config"}
    config = read_models_config(copy / "optimized" / "saved_models" / "models.config")
    assert [entry.name for entry in config.model_config_list.config] == ["float32"]
    assert json.loads((copy / "optimize.json").read_text()) == rerun
    assert all(v["quality_source"] == "deployed" for v in rerun["variants"].values())


def test_qat_of_a_mean_pooling_run_follows_its_qat_model(tmp_path):
    """Once refused: with `GlobalAveragePooling1D` the int8 file did not follow the QAT model
    (LiteRT's int8 `DIV`, see `MaskedMeanPooling`). ~13 s: a second run, one fine-tuning."""
    run_dir = tmp_path / "mean"
    assert train_pipeline.main(TINY + ["--pooling", "mean", "--output", str(run_dir)]) == 0
    argv = ["--run-dir", str(run_dir), "--methods", "qat", "--epochs", "1",
            "--latency-runs", "2"]
    assert optimize_pipeline.main(argv) == 0
    report = json.loads((run_dir / "optimize.json").read_text())
    assert list(report["variants"]) == ["float32", "qat"]
    qat = report["variants"]["qat"]
    assert qat["tflite_quantization"] == "int8"
    assert_builtin_only(qat["path"])
    for metric in ("auc", "gauc"):
        assert 0.5 < qat[metric] == pytest.approx(qat["keras"][metric], abs=INT8_TOLERANCE)


def test_broken_run_is_named_before_anything_is_written(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("checkpoint", "optimize*"))
    before = _listing(copy)
    with pytest.raises(FileNotFoundError, match="Checkpoint not found: .*checkpoint"):
        optimize_run(copy, methods=("ptq-int8",))
    assert _listing(copy) == before
