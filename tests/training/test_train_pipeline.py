"""The train command end to end on tiny synthetic data, and its error handling."""

import json
import re

import numpy as np
import pytest

from pipelines import train as train_pipeline
from tfrec_attn._keras import tf
from tfrec_attn.cli import main as cli_main
from tfrec_attn.data import pad_left
from tfrec_attn.models import SASRec, SASRecConfig

TINY = ["--format", "synthetic", "--synthetic-users", "150", "--synthetic-items", "60",
        "--synthetic-length", "12", "--max-len", "10", "--dim", "16", "--blocks", "1",
        "--verbose", "0", "--patience", "2"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    # With weight averaging: the checkpoint and the export then hold the average.
    argv = TINY + ["--epochs", "3", "--ema-decay", "0.9", "--output", str(root / "out"),
                   "--export-root", str(root / "models"), "--name", "tiny"]
    assert train_pipeline.main(argv) == 0
    return root


def test_metrics_json_has_the_documented_fields(run):
    metrics = json.loads((run / "out" / "metrics.json").read_text())
    for split in ("test", "valid"):
        assert {"ndcg@10", "hr@10", "mrr"} <= set(metrics[split])
    assert set(metrics["baselines"]) == {"popularity", "cooccurrence"}
    # Synthetic runs also report the Bayes-optimal ceiling, which no scorer can beat by much.
    assert metrics["oracle"]["ndcg@10"] > metrics["baselines"]["popularity"]["ndcg@10"]
    assert metrics["protocol"] == "full" and 1 <= metrics["epochs"] <= 3
    assert metrics["dataset"]["users"] == 150 and metrics["dataset"]["interactions"] > 0
    assert metrics["train_seconds"] > 0
    # --max-len was given, so only dropout, exclude_seen and the refit were chosen from the
    # data (and recorded); histories of ~10 events are short: the sparse-data dropout, a refit
    assert set(metrics["data_defaults"]) == {"dropout", "exclude_seen", "refit"}
    assert metrics["data_defaults"]["refit"]["value"] is metrics["options"]["refit"] is True
    assert metrics["model"]["exclude_seen"] is metrics["data_defaults"]["exclude_seen"]["value"]
    assert metrics["model"]["dropout"] == metrics["data_defaults"]["dropout"]["value"] == 0.5
    assert (run / "out" / "training_curves.png").stat().st_size > 1000
    assert any((run / "out" / "tensorboard").rglob("events.out.tfevents*"))


def test_exported_signature_matches_the_keras_model(run):
    metrics = json.loads((run / "out" / "metrics.json").read_text())
    export = run / "models" / "tiny" / "1"
    assert metrics["export_path"] == str(export)
    model = SASRec(SASRecConfig(**metrics["model"]))
    history = pad_left([np.array([2, 3, 4]), np.array([5, 6, 7, 8, 9, 10])], 10)
    model(tf.constant(history))
    model.load_weights(str(run / "out" / "checkpoint" / "weights")).expect_partial()
    want = model.topk_model(k=10)(tf.constant(history))
    got = tf.saved_model.load(str(export)).signatures["serving_default"](
        history=tf.constant(history))
    np.testing.assert_array_equal(got["item_ids"].numpy(), want["item_ids"].numpy())


def test_time_budget_stops_cleanly(tmp_path):
    argv = TINY + ["--epochs", "50", "--max-train-minutes", "0.001", "--output",
                   str(tmp_path / "out"), "--export-root", ""]
    assert train_pipeline.main(argv) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["stopped_by_time_budget"] and metrics["epochs"] == 1
    assert "export_path" not in metrics


def test_weight_averaging_run_keeps_the_average(run):
    metrics = json.loads((run / "out" / "metrics.json").read_text())
    assert metrics["options"]["ema_decay"] == 0.9
    # Patience 2 cannot stop a 3-epoch run before its last epoch.
    assert len(metrics["history"]["valid"]) == metrics["epochs"] == 3


def test_jit_batch_larger_than_the_data_is_named(tmp_path, capsys):
    argv = TINY + ["--jit-compile", "--batch-size", "4096", "--output", str(tmp_path / "out"),
                   "--export-root", ""]
    assert train_pipeline.main(argv) == 2  # a usage error, not a traceback
    assert re.search("less than one full batch.*batch_size=4096", capsys.readouterr().err)


def test_yaml_config_and_flag_precedence(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("format: synthetic\nepochs: 7\nmodel:\n  dim: 24\n  max_len: 30\n")
    options = train_pipeline.options_from_args(["--config", str(config), "--dim", "32"])
    assert options.epochs == 7 and options.model == {"dim": 32, "max_len": 30}


def test_uniform_negatives_flag_reaches_the_model_config():
    options = train_pipeline.options_from_args(["--format", "synthetic", "--loss", "sampled",
                                                "--uniform-negatives", "512"])
    assert options.model == {"loss": "sampled", "uniform_negatives": 512}


def test_input_dropout_flag_reaches_the_model_config_and_is_checked():
    options = train_pipeline.options_from_args(["--format", "synthetic", "--input-dropout", "0.1"])
    assert options.model == {"input_dropout": 0.1}
    with pytest.raises(ValueError, match="input_dropout must be in"):
        train_pipeline.options_from_args(["--format", "synthetic", "--input-dropout", "1.5"])


@pytest.mark.parametrize(
    "argv, message",
    [(["--format", "csv"], "--data is required"),
     (["--format", "synthetic", "--max-train-minutes", "-1"], "max_train_minutes"),
     (["--format", "synthetic", "--ema-decay", "1.5"], "ema_decay"),
     (["--epochs", "-3"], "epochs must be a positive int. Received: epochs=-3"),
     # --data without --format was silently replaced by the synthetic default
     (["--data", "ratings.csv"], "--data 'ratings.csv' is not read by format 'synthetic'"),
     # model settings: named before any data are read (were tracebacks after loading)
     (["--dropout", "1.5"], "dropout must be in [0, 1). Received: dropout=1.5"),
     (["--dim", "30", "--heads", "4"], "dim (30) must be divisible by num_heads (4)"),
     (["--max-len", "0"], "max_len must be"),
     (["--config", "no/such.yaml"], "--config no/such.yaml: no such file")],
)
def test_bad_options_exit_with_a_clear_message(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert train_pipeline.main(argv) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # no run directory, no export


def test_misspelt_model_field_in_yaml_is_named(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("model:\n  dimm: 32\n")
    assert train_pipeline.main(["--config", str(config), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"{config}: model: ['dimm'] are not SASRecConfig fields" in err
    assert "num_blocks for --blocks" in err
    assert not (tmp_path / "o").exists()


def test_a_non_integer_in_yaml_names_the_file(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("epochs: two\nmodel:\n  num_blocks: 1.5\n")
    assert train_pipeline.main(["--config", str(config), "--output", str(tmp_path / "o")]) == 2
    assert f"{config}: epochs must be an integer. Received: epochs='two'" in (
        capsys.readouterr().err)
    config.write_text("model:\n  num_blocks: 1.5\n")
    assert train_pipeline.main(["--config", str(config), "--output", str(tmp_path / "o")]) == 2
    assert f"{config}: model: num_blocks must be an integer" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_finished_run_is_not_overwritten_without_overwrite(tmp_path, capsys):
    out = tmp_path / "out"
    argv = TINY + ["--epochs", "1", "--output", str(out), "--export-root", ""]
    assert train_pipeline.main(argv) == 0
    (out / "optimize.json").write_text("{}")  # derived from this run by `tfrec-attn optimize`
    (out / "optimize.png").write_bytes(b"png")
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert train_pipeline.main(argv + ["--seed", "1"]) == 2
    assert "holds a finished run" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # untouched
    assert train_pipeline.main(argv + ["--seed", "1", "--overwrite"]) == 0
    assert json.loads((out / "metrics.json").read_text())["options"]["seed"] == 1
    assert not (out / "optimize.json").exists()  # it described the replaced model
    assert not (out / "optimize.png").exists()


def test_bad_data_leaves_no_empty_run_directory(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item\n1,2\n")  # no timestamp column
    out = tmp_path / "runs" / "x"
    argv = ["--format", "csv", "--data", str(bad), "--output", str(out), "--export-root", ""]
    assert train_pipeline.main(argv) == 2
    assert "timestamp" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("text, key", [("epochs: 3\nepochs: 5\n", "epochs"),
                                       ("model:\n  dim: 32\n  dim: 64\n", "dim")])
def test_yaml_key_given_twice_is_refused(tmp_path, text, key):
    config = tmp_path / "c.yaml"
    config.write_text(text)
    with pytest.raises(ValueError, match=f"not valid YAML: .*duplicate key '{key}'"):
        train_pipeline.options_from_args(["--config", str(config)])


def test_unknown_yaml_option_is_named(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("epoch: 3\n")
    with pytest.raises(ValueError, match="epoch"):
        train_pipeline.options_from_args(["--config", str(config)])


def test_cli_dispatches_and_rejects_unknown_commands(capsys):
    assert cli_main(["frobnicate"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'frobnicate'" in err and "usage: tfrec-attn" in err
    assert cli_main([]) == 2
    assert "a command is required" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_cli_help_lists_every_command(capsys, flag):
    assert cli_main([flag]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in ("train", "optimize", "tune", "benchmark",
                                                "evaluate"))
