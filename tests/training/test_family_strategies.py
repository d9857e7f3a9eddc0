"""`--strategy` and `--jit-compile` for DIN, autoencoder and policy runs (as for SASRec,
`test_distribution.py`): a mirrored run trains (under XLA on full batches only) and exports on
the chief, a batch larger than the data and a bad strategy exit with code 2, and (slow) two
multi-worker DIN processes give the one-process run's losses and validation AUC."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from pipelines import train as train_pipeline
from tfrec_attn._keras import keras
from tfrec_attn.data import build_sequences
from tfrec_attn.testing import cluster
from tfrec_attn.training.autoencoder_run import (
    AutoencoderOptions,
    autoencoder_split,
    run_autoencoder_training,
)
from tfrec_attn.training.policy_run import PolicyOptions, policy_split, run_policy_training
from tfrec_attn.training.ranking_run import RankingOptions, ranking_split, run_ranking_training
from tfrec_attn.training.run import load_data

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 240  # seconds for the two-worker cluster; both workers are killed when it is exceeded
COMMON = ["--format", "synthetic", "--synthetic-items", "40", "--synthetic-length", "8",
          "--max-len", "8", "--dim", "8", "--verbose", "0", "--epochs", "1", "--lr", "0.01"]
TINY = {
    "din": ["--model", "din", "--synthetic-users", "60", "--valid-negatives", "5",
            "--test-negatives", "5", "--batch-size", "64", "--dropout", "0"],
    "autoencoder": ["--model", "autoencoder", "--synthetic-users", "120", "--k", "5",
                    "--valid-users", "20", "--test-users", "20", "--batch-size", "32",
                    "--blocks", "1"],
    "policy": ["--model", "policy", "--synthetic-users", "100", "--events-per-user", "3",
               "--k", "3", "--valid-users", "10", "--test-users", "10", "--batch-size", "64"],
}
RUNS = {"din": run_ranking_training, "autoencoder": run_autoencoder_training,
        "policy": run_policy_training}
OPTIONS = {"din": RankingOptions, "autoencoder": AutoencoderOptions, "policy": PolicyOptions}
MONITORS = {"din": "auc", "autoencoder": "ndcg@5", "policy": "reward@3"}


def _argv(model: str, tmp: Path, *extra: str) -> list[str]:
    return TINY[model] + COMMON + ["--output", str(tmp / "out"), *extra]


def _training_rows(options) -> int:
    """Rows one epoch trains on: DIN's (positive + negatives per position), the
    autoencoder's training users, the policy's logged events."""
    if isinstance(options, PolicyOptions):
        return len(policy_split(options).logs["action"])
    data = build_sequences(load_data(options), min_events=options.min_events)
    if isinstance(options, RankingOptions):
        train = ranking_split(data, options.model["max_len"], options.valid_negatives,
                              options.test_negatives, options.seed).train
        return (1 + options.negatives) * sum(len(s) - 1 for s in train if len(s) > 1)
    return len(autoencoder_split(data, options).train)


# One fast case a run type (XLA for DIN, plain mirrored for the others); the rest are slow.
RUN_CASES = [("din", True), pytest.param("din", False, marks=pytest.mark.slow),
             pytest.param("autoencoder", True, marks=pytest.mark.slow), ("autoencoder", False),
             pytest.param("policy", True, marks=pytest.mark.slow), ("policy", False)]


@pytest.mark.parametrize("model, jit", RUN_CASES)
def test_mirrored_run_trains_and_the_chief_exports(model, jit, tmp_path):
    """Under `MirroredStrategy` (one CPU replica) the run trains, and with `--jit-compile` the
    train step is XLA-compiled and runs on full batches only."""
    argv = _argv(model, tmp_path, "--strategy", "mirrored", "--export-root",
                 str(tmp_path / "models"), "--name", "tiny", *(["--jit-compile"] if jit else []))
    options = train_pipeline.options_from_args(argv)
    assert isinstance(options, OPTIONS[model])
    assert options.strategy == "mirrored" and options.jit_compile is jit
    steps, seen = [], []
    probe = keras.callbacks.LambdaCallback(
        on_train_begin=lambda logs: seen.append((probe.model.jit_compile, type(
            probe.model.distribute_strategy).__name__)),
        on_train_batch_end=lambda batch, logs: steps.append(batch))
    metrics = RUNS[model](options, callbacks=[probe])
    keras.backend.clear_session()
    assert seen == [(jit, "MirroredStrategy")]
    assert metrics["options"]["strategy"] == "mirrored" and metrics["options"]["jit_compile"] is jit
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["epochs"] == 1
    rows = _training_rows(options)
    assert rows % options.batch_size  # the data leave a partial batch: dropped under jit
    assert len(steps) == (rows // options.batch_size if jit else -(-rows // options.batch_size))
    assert np.isfinite(metrics["history"]["loss"]).all()
    assert all(0.0 <= value <= 1.0 for value in metrics["test"].values())
    assert (tmp_path / "models" / "tiny" / "1" / "saved_model.pb").exists()
    assert "tiny" in (tmp_path / "models" / "models.config").read_text()


@pytest.mark.parametrize("model", list(TINY))
def test_jit_batch_larger_than_the_data_is_named(model, tmp_path, capsys):
    argv = _argv(model, tmp_path, "--jit-compile", "--batch-size", "4096", "--export-root", "")
    assert train_pipeline.main(argv) == 2
    err = capsys.readouterr().err
    assert "less than one full batch" in err and "batch_size=4096" in err
    assert not (tmp_path / "out" / "metrics.json").exists()


@pytest.mark.parametrize("model", list(TINY))
def test_bad_strategy_and_jit_compile_are_rejected(model, tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:  # argparse: not one of the choices
        train_pipeline.main(TINY[model] + ["--strategy", "tpu"])
    assert exited.value.code == 2 and "--strategy" in capsys.readouterr().err
    for name, value, message in (("strategy", "tpu", "strategy='tpu'"),
                                 ("jit_compile", "yes", "jit_compile='yes'")):
        config = tmp_path / f"{name}.yaml"
        config.write_text(f"model_type: {model}\n{name}: '{value}'\n")
        assert train_pipeline.main(["--config", str(config)]) == 2
        assert message in capsys.readouterr().err
        with pytest.raises(ValueError, match=f"{name} must be"):
            OPTIONS[model](**{name: value})


def _cluster(argv: list[str], outputs: list[Path]) -> None:
    """Runs `pipelines.train argv` as two MultiWorkerMirroredStrategy workers on loopback
    (worker i writing to `outputs[i]`); fails with their stderr if either fails."""
    processes = {f"worker {i}": cluster.start_process(
        [sys.executable, "-m", "pipelines.train", *argv, "--strategy", "multi-worker",
         "--output", str(outputs[i])], ROOT, tf_config)
        for i, tf_config in enumerate(cluster.loopback_cluster(2))}
    failed = cluster.failures(cluster.finish(processes, TIMEOUT))
    assert not failed, failed


@pytest.mark.slow  # ~75 s: two TensorFlow processes start, then a one-process run
def test_two_din_workers_match_one_process(tmp_path):
    argv = TINY["din"] + COMMON + ["--epochs", "2", "--export-root", ""]
    _cluster(argv, [tmp_path / "chief", tmp_path / "worker1"])
    assert not (tmp_path / "worker1").exists()  # only the chief writes the run's outputs
    multi = json.loads((tmp_path / "chief" / "metrics.json").read_text())
    single = run_ranking_training(train_pipeline.options_from_args(
        argv + ["--output", str(tmp_path / "single")]))
    keras.backend.clear_session()
    assert multi["options"]["strategy"] == "multi-worker" and multi["epochs"] == 2
    # The same global batches: per-replica losses add up to the one-process mean.
    np.testing.assert_allclose(multi["history"]["loss"], single["history"]["loss"], rtol=1e-4)
    for got, want in zip(multi["history"]["valid"], single["history"]["valid"]):
        np.testing.assert_allclose(got["auc"], want["auc"], rtol=1e-4)
