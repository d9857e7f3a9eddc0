"""`tfrec-attn optimize` end to end on a tiny synthetic run: variants, report, errors."""

import json
import shutil

import numpy as np
import pytest

from pipelines import optimize as optimize_pipeline
from pipelines import train as train_pipeline
from tfrec_attn.cli import main as cli_main
from tfrec_attn.data import pad_left
from tfrec_attn.evaluation import evaluate
from tfrec_attn.export import LiteRTRecommender
from tfrec_attn.export.serving import read_models_config
from tfrec_attn.optimization import optimize_run, optimize_table
from tfrec_attn.optimization import ranker_report as optimize_ranker_report
from tfrec_attn.optimization import report as optimize_report
from tfrec_attn.optimization.methods import remove_stale_exports
from tfrec_attn.training import load_run

TINY = ["--format", "synthetic", "--synthetic-users", "150", "--synthetic-items", "60",
        "--synthetic-length", "12", "--max-len", "10", "--dim", "16", "--blocks", "1",
        "--verbose", "0", "--patience", "2", "--epochs", "2", "--export-root", ""]
# Each TFLite variant costs two conversions (~7 s each on two busy cores), so the default suite
# covers float32, pruning and int8; all methods run in the slow test.
FAST_METHODS = ("prune", "ptq-int8")
FIELDS = {"method", "path", "size_bytes", "gzip_bytes", "tflite_quantization", "int8_tensors",
          "ndcg@10", "hr@10", "protocol", "sparsity", "keras", "latency", "saved_model"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("optimize") / "run"
    assert train_pipeline.main(TINY + ["--output", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def report(run_dir):
    return optimize_run(run_dir, methods=FAST_METHODS, epochs=1, latency_runs=3)


@pytest.fixture
def no_loading(monkeypatch):
    """Makes loading the run an error: what a test checks is refused before any work."""
    def refuse(*args, **kwargs):
        raise AssertionError("the run was loaded")

    monkeypatch.setattr(optimize_report, "load_run", refuse)


def _listing(path) -> list:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def _check_latency(latency: dict) -> None:
    assert set(latency) == {"single", "batch_256"}
    for value in latency.values():
        assert 0 < value["p50_ms"] <= value["p99_ms"]


def _check_variant(name: str, record: dict, run_dir) -> None:
    assert FIELDS <= set(record), (name, sorted(FIELDS - set(record)))
    assert record["method"] == name and record["protocol"] == "full"
    tflite = run_dir / "optimized" / "tflite" / f"{name}.tflite"
    assert record["path"] == str(tflite) and record["size_bytes"] == tflite.stat().st_size
    assert 0 < record["gzip_bytes"] < record["size_bytes"]
    assert 0.0 <= record["ndcg@10"] <= record["hr@10"] <= 1.0
    _check_latency(record["latency"]["tflite"])
    saved = record["saved_model"]
    if saved is None:
        assert record["latency"]["saved_model"] is None
    else:
        assert saved["path"] == str(run_dir / "optimized" / "saved_models" / name / "1")
        assert (run_dir / "optimized" / "saved_models" / name / "1" / "saved_model.pb").exists()
        assert saved["size_bytes"] > saved["gzip_bytes"] > 0
        _check_latency(record["latency"]["saved_model"])


def test_report_records_every_variant(report, run_dir):
    assert list(report["variants"]) == ["float32", *FAST_METHODS]
    for name, record in report["variants"].items():
        _check_variant(name, record, run_dir)
    assert json.loads((run_dir / "optimize.json").read_text()) == report
    assert not list(run_dir.glob("*.tmp"))
    assert (run_dir / "optimize.png").stat().st_size > 1000
    assert _config_names(run_dir) == ["float32", "prune"]


def _config_names(root) -> list:
    config = read_models_config(root / "optimized" / "saved_models" / "models.config")
    return [entry.name for entry in config.model_config_list.config]


def test_float32_tflite_quality_equals_keras_and_the_run(report, run_dir):
    """Same split, protocol and seed as `metrics.json`; the deployed file's ranking matches
    Keras' except for the users whose rank its top-k cannot settle (histories longer than
    `max_len` here: `uncertain_users`)."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    float32 = report["variants"]["float32"]
    slack = float32["uncertain_users"] / report["test_users"] + 1e-12
    for metric in ("ndcg@10", "hr@10"):
        assert float32[metric] == pytest.approx(float32["keras"][metric], abs=slack)
        assert float32["keras"][metric] == pytest.approx(metrics["test"][metric], abs=1e-12)
    assert report["reference"]["ndcg@10"] == metrics["test"]["ndcg@10"]
    assert report["test_users"] == metrics["dataset"]["users"]


@pytest.mark.parametrize("name", ["float32", *FAST_METHODS])
def test_quality_is_read_from_the_deployed_file(name, report, run_dir):
    """Not from an evaluation twin (whose int8 calibration differs): the file's own top-k,
    history and all, under the run's full protocol, matches `evaluate` on its scores."""
    record = report["variants"][name]
    assert record["quality_source"] == "deployed"
    run = load_run(run_dir)
    runner = LiteRTRecommender(record["path"])
    floor = np.finfo(np.float32).min

    def listed_scores(histories):  # the file's list; every other item below it
        out = runner.recommend(pad_left(histories, runner.max_len))
        scores = np.full((len(histories), run.vocab_size), floor, np.float32)
        for row, (ids, values) in enumerate(zip(out["item_ids"], out["scores"])):
            keep = ids >= 2
            scores[row, ids[keep]] = values[keep]
        return scores

    expected = evaluate(listed_scores, run.split.test_histories, run.split.test_targets,
                        run.vocab_size, "full", seed=run.options.seed)
    for metric in ("ndcg@10", "hr@10"):
        assert record[metric] == pytest.approx(expected[metric], abs=1e-12)
    assert 0 <= record["uncertain_users"] <= report["test_users"]


def test_sampled_protocol_quality_comes_from_the_twin_and_says_so(tmp_path):
    """Sampled negatives can fall outside any top-k: the twin (whole catalogue) scores them."""
    run_dir = tmp_path / "run"
    argv = TINY + ["--epochs", "1", "--synthetic-items", "150", "--eval-protocol", "sampled-100",
                   "--output", str(run_dir)]
    assert train_pipeline.main(argv) == 0
    report = optimize_run(run_dir, methods="ptq-dynamic", latency_runs=1)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    float32 = report["variants"]["float32"]
    assert {v["quality_source"] for v in report["variants"].values()} == {"twin"}
    assert "twin" in report["evaluation"] and "uncertain_users" not in float32
    assert float32["ndcg@10"] == pytest.approx(metrics["test"]["ndcg@10"], abs=1e-12)
    dynamic = report["variants"]["ptq-dynamic"]
    assert ("note: ptq-dynamic" in optimize_table(report)) == (dynamic["int8_tensors"] == 0)


def test_a_file_that_holds_nothing_quantized_is_noted(report):
    """TFLite keeps weights under 1,024 elements in float32: a tiny model's `dynamic` file can
    be a float32 file, which the table says rather than letting the label stand."""
    variants = report["variants"]
    assert variants["float32"]["int8_tensors"] == 0 and variants["ptq-int8"]["int8_tensors"] > 0
    assert "note:" not in optimize_table(report)
    emptied = json.loads(json.dumps(report))
    emptied["variants"]["ptq-int8"]["int8_tensors"] = 0
    (note,) = [line for line in optimize_table(emptied).splitlines() if line.startswith("note:")]
    assert "ptq-int8's file holds no int8 tensor" in note


def test_int8_is_smaller_and_pruning_is_sparse(report):
    variants = report["variants"]
    assert variants["ptq-int8"]["size_bytes"] < variants["float32"]["size_bytes"]
    assert variants["ptq-int8"]["tflite_quantization"] == "int8"
    assert variants["ptq-int8"]["keras"] is None
    assert variants["float32"]["sparsity"] == 0.0
    assert variants["prune"]["sparsity"] >= 0.75
    # Pruned weights are stored dense: the savings show after compression.
    assert variants["prune"]["gzip_bytes"] < variants["float32"]["gzip_bytes"]
    assert (variants["prune"]["saved_model"]["gzip_bytes"]
            < variants["float32"]["saved_model"]["gzip_bytes"])


def test_fine_tuning_settings_follow_the_run(report, run_dir):
    options = json.loads((run_dir / "metrics.json").read_text())["options"]
    settings = report["fine_tuning"]["prune"]
    assert settings["epochs"] == 1 and settings["batch_size"] == options["batch_size"]
    assert settings["learning_rate"] == pytest.approx(options["learning_rate"])  # prune: 1x
    assert report["variants"]["prune"]["fine_tuning"] == settings


def test_table_lists_every_variant(report):
    table = optimize_table(report)
    for name in report["variants"]:
        assert name in table


def test_load_run_restores_options_and_split(run_dir):
    run = load_run(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert run.vocab_size == metrics["model"]["vocab_size"] == run.model.config.vocab_size
    assert run.options.eval_protocol == "full" and run.options.model["dim"] == 16
    assert len(run.split.test_targets) == metrics["dataset"]["users"]


@pytest.mark.parametrize("methods", ["prune,frobnicate", "PTQ-int8"])
def test_unknown_method_exits_2_naming_it(methods, run_dir, capsys):
    assert optimize_pipeline.main(["--run-dir", str(run_dir), "--methods", methods]) == 2
    assert repr(methods.split(",")[-1]) in capsys.readouterr().err
    assert cli_main(["optimize", "--run-dir", str(run_dir), "--methods", methods]) == 2


@pytest.mark.parametrize("methods", ["", " ", "prune,,qat", "prune,", ",ptq-int8"])
def test_empty_method_items_exit_2_naming_methods(methods, run_dir, tmp_path, capsys,
                                                  no_loading):
    """Once silently dropped (`--methods ''` ran float32 alone)."""
    out = tmp_path / "out"
    argv = ["--run-dir", str(run_dir), "--methods", methods, "--output", str(out)]
    assert optimize_pipeline.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("tfrec-attn optimize: --methods must ") and repr(methods) in err, err
    with pytest.raises(ValueError, match=f"^methods must .* Received: methods={methods!r}"):
        optimize_run(run_dir, methods=methods, output=out)
    assert not out.exists()


@pytest.mark.parametrize("methods, error, message", [
    ("ptq-int8,frobnicate", ValueError, r"unknown optimization method\(s\) \['frobnicate'\]"),
    (5, TypeError, "methods must be a comma-separated string or a sequence"),
    (["prune", None], TypeError, "methods must be a comma-separated string or a sequence"),
])
def test_bad_methods_argument_is_named(methods, error, message, run_dir, tmp_path, no_loading):
    """A string is split on commas as `--methods` is (once, `"ptq-int8"` became `['p', 't',
    ...]`); anything but strings is a `TypeError`."""
    with pytest.raises(error, match=message):
        optimize_run(run_dir, methods=methods, output=tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["file", "inside_file", "optimized_file", "tflite_file"])
def test_output_that_cannot_hold_the_reports_exits_2_before_loading(where, run_dir, tmp_path,
                                                                     capsys, no_loading):
    """Once a raw `NotADirectoryError` after the run was loaded."""
    output = {"file": tmp_path / "afile", "inside_file": tmp_path / "afile" / "sub",
              "optimized_file": tmp_path, "tflite_file": tmp_path}[where]
    (tmp_path / "afile").write_text("mine")
    if where == "optimized_file":
        (tmp_path / "optimized").write_text("mine")
    elif where == "tflite_file":
        (tmp_path / "optimized").mkdir()
        (tmp_path / "optimized" / "tflite").write_text("mine")
    before = _listing(tmp_path)
    argv = ["--run-dir", str(run_dir), "--methods", "ptq-dynamic", "--output", str(output)]
    assert optimize_pipeline.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("tfrec-attn optimize: --output"), err
    assert "not a directory" in err or "is a file" in err, err
    with pytest.raises(ValueError, match="^output.*(not a directory|is a file)"):
        optimize_run(run_dir, methods="ptq-dynamic", output=output)
    assert _listing(tmp_path) == before


@pytest.mark.parametrize("module", [optimize_report, optimize_ranker_report])
def test_optimize_run_docstring_names_each_reports_latency_keys(module):
    """SASRec reports time batches of 256 histories, DIN reports batches of 16 requests."""
    assert f"`single` (one history) / `batch_{optimize_report.BATCH}`" in optimize_run.__doc__
    assert f"`batch_{module.BATCH}`" in optimize_run.__doc__


@pytest.mark.parametrize("kept", [(), ("prune",), ("ptq-int8",), ("prune", "ptq-int8")])
def test_remove_stale_exports_keeps_this_runs_variants_and_foreign_files(kept, tmp_path):
    root = tmp_path / "optimized"
    earlier = ("float32", "prune", "qat", "ptq-int8", "ptq-dynamic")
    for name in earlier:
        (root / "tflite").mkdir(parents=True, exist_ok=True)
        (root / "tflite" / f"{name}.tflite").write_bytes(b"x")
        if not name.startswith("ptq"):
            (root / "saved_models" / name / "1").mkdir(parents=True)
    foreign = [root / "tflite" / "mine.tflite", root / "notes.txt",
               root / "saved_models" / "mine" / "1" / "saved_model.pb"]
    for path in foreign:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("mine")
    names = ("float32", *kept)
    variants = {name: {"saved_model": None if name.startswith("ptq") else {"path": "p"}}
                for name in names}
    removed = remove_stale_exports(root, variants)
    assert sorted(p.name for p in (root / "tflite").iterdir()) == sorted(
        ["mine.tflite", *(f"{name}.tflite" for name in names)])
    assert sorted(p.name for p in (root / "saved_models").iterdir()) == sorted(
        ["mine", *(name for name in names if not name.startswith("ptq"))])
    assert all(path.read_text() == "mine" for path in foreign)
    assert len(removed) == len(set(earlier) - set(names)) + len(
        {"float32", "prune", "qat"} - set(names))


def test_rerun_with_fewer_methods_leaves_only_what_its_report_lists(report, run_dir,
                                                                    tmp_path):
    """A re-run regenerates `optimized/` as a whole: the earlier run's `prune` exports go (and
    `methods` may be one comma-separated string, as `--methods` takes it)."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    assert (copy / "optimized" / "tflite" / "prune.tflite").exists()
    (copy / "optimized" / "tflite" / "mine.tflite").write_text("mine")
    rerun = optimize_run(copy, methods=" ptq-dynamic", latency_runs=1)
    assert list(rerun["variants"]) == ["float32", "ptq-dynamic"]
    listed = {record["path"] for record in rerun["variants"].values()}
    assert {str(p) for p in (copy / "optimized" / "tflite").iterdir()} == listed | {
        str(copy / "optimized" / "tflite" / "mine.tflite")}
    saved = {p.name for p in (copy / "optimized" / "saved_models").iterdir()}
    assert saved == {"float32", "models.config"}
    assert _config_names(copy) == ["float32"]  # the deleted `prune` SavedModel is not served
    assert json.loads((copy / "optimize.json").read_text()) == rerun
    assert _listing(copy / "checkpoint") == _listing(run_dir / "checkpoint")


def test_interrupted_rerun_leaves_no_report_of_replaced_files(report, run_dir, tmp_path,
                                                             monkeypatch):
    """Ctrl-C after `float32`'s exports were replaced: no `optimize.json`, `optimize.png` or
    `models.config` is left describing the earlier run's (now replaced or missing) files."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    convert = optimize_report.convert_to_tflite

    def interrupted(model, path, *args, **kwargs):
        if "ptq-dynamic" in str(path):
            raise KeyboardInterrupt
        return convert(model, path, *args, **kwargs)

    monkeypatch.setattr(optimize_report, "convert_to_tflite", interrupted)
    with pytest.raises(KeyboardInterrupt):
        optimize_run(copy, methods="ptq-dynamic", latency_runs=1)
    assert not (copy / "optimize.json").exists() and not (copy / "optimize.png").exists()
    assert not (copy / "optimized" / "saved_models" / "models.config").exists()
    assert (copy / "optimized" / "saved_models" / "float32" / "1" / "saved_model.pb").exists()
    monkeypatch.undo()
    rerun = optimize_run(copy, methods="ptq-dynamic", latency_runs=1)  # a re-run restores all
    assert json.loads((copy / "optimize.json").read_text()) == rerun
    assert _config_names(copy) == ["float32"]


def test_ctrl_c_in_the_command_prints_one_line(run_dir, tmp_path, monkeypatch, capsys):
    """As `train` and `tune`: exit 130 and one line saying what was not written, not Keras'
    traceback."""
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(optimize_pipeline, "optimize_run", interrupted)
    out = tmp_path / "out"
    assert optimize_pipeline.main(["--run-dir", str(run_dir), "--output", str(out)]) == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        f"tfrec-attn optimize: interrupted; {out}/optimize.json was not written (exports under "
        f"{out}/optimized/ may be missing): rerun the same command to optimize the run again"]


def test_missing_run_dir_is_a_clear_error(tmp_path, capsys):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="Run directory not found: .*nope"):
        optimize_run(missing)
    assert optimize_pipeline.main(["--run-dir", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err


@pytest.mark.parametrize("option, value", [
    ("--target-sparsity", "1.5"), ("--target-sparsity", "-0.1"), ("--target-sparsity", "nan"),
    ("--learning-rate", "inf"), ("--learning-rate", "0"), ("--epochs", "0"),
    ("--latency-runs", "0"), ("--k", "9"), ("--k", "items+1"),
])
def test_bad_numeric_option_exits_2_before_anything_is_written(option, value, run_dir,
                                                               tmp_path, capsys):
    if value == "items+1":  # more items than the run's catalogue holds
        value = str(json.loads((run_dir / "metrics.json").read_text())["model"]["vocab_size"] - 1)
    out = tmp_path / "out"
    argv = ["--run-dir", str(run_dir), "--methods", "prune,qat", "--output", str(out),
            option, value]
    assert optimize_pipeline.main(argv) == 2
    err = capsys.readouterr().err
    assert f"{option[2:].replace('-', '_')} must" in err and value in err, err
    assert not out.exists()


@pytest.mark.parametrize("kind, options", [
    ("autoencoder", {"holdout_fraction": 0.2, "k": 20}),
    ("policy", {"events_per_user": 5, "k": 5}),
])
def test_runs_of_other_models_are_named_before_anything_is_done(kind, options, tmp_path,
                                                                capsys):
    """The run type comes from `metrics.json` (`ranking_evaluation.run_type`, as `evaluate`);
    DIN runs are optimized too (tests/optimization/test_optimize_din.py)."""
    (tmp_path / "metrics.json").write_text(json.dumps({"test": {}, "options": options}))
    assert cli_main(["optimize", "--run-dir", str(tmp_path), "--target-sparsity", "0.5"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path} is a `--model {kind}` run; optimize supports only SASRec and DIN " \
           "runs" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]  # nothing written
    with pytest.raises(ValueError, match=f"`--model {kind}` run"):
        optimize_run(tmp_path, methods=("ptq-int8",))



@pytest.mark.parametrize("attention", ["local", "low_rank"])
def test_int8_methods_accept_local_and_low_rank_runs(attention, tmp_path):
    """No longer refused up front (their int8 conversion once aborted TF's calibrator): the
    first complaint about this bare run directory is its missing checkpoint."""
    (tmp_path / "metrics.json").write_text(json.dumps(
        {"test": {}, "options": {}, "model": {"attention": attention, "vocab_size": 60}}))
    with pytest.raises(FileNotFoundError, match="Checkpoint not found"):
        optimize_run(tmp_path, methods=("qat", "ptq-int8"))


def test_missing_checkpoint_is_named(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("checkpoint"))
    with pytest.raises(FileNotFoundError, match="Checkpoint not found: .*checkpoint"):
        load_run(copy)


@pytest.mark.slow
def test_all_methods_through_the_command_line(run_dir, tmp_path, capsys):
    out = tmp_path / "all"
    argv = ["optimize", "--run-dir", str(run_dir), "--output", str(out), "--latency-runs", "3"]
    assert cli_main(argv) == 0
    assert "ptq-dynamic" in capsys.readouterr().out
    report = json.loads((out / "optimize.json").read_text())
    variants = report["variants"]
    assert list(variants) == ["float32", "prune", "qat", "ptq-int8", "ptq-float16",
                              "ptq-dynamic"]
    for name, record in variants.items():
        _check_variant(name, record, out)
    assert variants["qat"]["keras"] is not None and variants["qat"]["saved_model"] is not None
    assert variants["qat"]["tflite_quantization"] == "int8"
    assert report["fine_tuning"]["qat"]["epochs"] == 1
    assert variants["ptq-float16"]["size_bytes"] < variants["float32"]["size_bytes"]
    assert (out / "optimize.png").stat().st_size > 1000
