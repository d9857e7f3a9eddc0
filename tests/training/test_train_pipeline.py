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
    # --max-len was given, so only dropout and exclude_seen were chosen from the data (and
    # recorded); histories of ~10 events are short: the sparse-data dropout
    assert set(metrics["data_defaults"]) == {"dropout", "exclude_seen"}
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


@pytest.mark.parametrize(
    "argv, message",
    [(["--format", "csv"], "--data is required"),
     (["--format", "synthetic", "--max-train-minutes", "-1"], "max_train_minutes"),
     (["--format", "synthetic", "--ema-decay", "1.5"], "ema_decay")],
)
def test_bad_options_exit_with_a_clear_message(argv, message, capsys):
    assert train_pipeline.main(argv) == 2
    assert message in capsys.readouterr().err


def test_unknown_yaml_option_is_named(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("epoch: 3\n")
    with pytest.raises(SystemExit, match="epoch"):
        train_pipeline.options_from_args(["--config", str(config)])


def test_cli_dispatches_and_rejects_unknown_commands(capsys):
    assert cli_main(["frobnicate"]) == 2
    assert "usage: tfrec-attn" in capsys.readouterr().err
