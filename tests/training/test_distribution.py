"""tf.distribute training: a two-worker cluster on localhost matches one process step by step,
its checkpoint restores in one process, `--strategy mirrored` runs the train pipeline, and bad
strategies / TF_CONFIG values fail with clear errors."""

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import tensorflow_recommenders as tfrs

from pipelines import train as train_pipeline
from tfrec_attn._keras import keras, tf
from tfrec_attn.layers import ItemEmbedding
from tfrec_attn.models.losses import SampledSoftmaxLoss
from tfrec_attn.testing import cluster, multi_worker
from tfrec_attn.training import TrainOptions
from tfrec_attn.training.distribution import (
    is_chief,
    make_strategy,
    read_tf_config,
    replica_batch_size,
)
from tfrec_attn.training.run_dir import restore_model

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 240  # seconds for the whole cluster; both workers are killed when it is exceeded
LOSS_RTOL = 1e-3  # float32 all-reduce vs one-process sums: observed differences are ~1e-7


def _start(strategy: str, output: Path, tf_config: dict | None):
    return cluster.start_process(
        [sys.executable, "-m", "tfrec_attn.testing.multi_worker", "--strategy", strategy,
         "--output", str(output)], ROOT, tf_config)


@pytest.fixture(scope="module")
def cluster_runs(tmp_path_factory):
    """Two MultiWorkerMirroredStrategy workers on loopback and, while they run, the same
    training under the default strategy in this process (saves a third TensorFlow start-up)."""
    root = tmp_path_factory.mktemp("distribution")
    processes = {f"worker {i}": _start("multi-worker", root / "multi", tf_config)
                 for i, tf_config in enumerate(cluster.loopback_cluster(2))}
    try:
        multi_worker.train("default", str(root / "single"))
    finally:  # the workers are waited for (or killed at TIMEOUT) whatever happened here
        results = cluster.finish(processes, TIMEOUT)
    keras.backend.clear_session()
    failed = cluster.failures(results)
    assert not failed, failed
    return root


def test_two_workers_match_one_process_step_by_step(cluster_runs):
    multi = json.loads((cluster_runs / "multi" / "losses.json").read_text())
    single = json.loads((cluster_runs / "single" / "losses.json").read_text())
    assert len(multi) == len(single) >= 4
    np.testing.assert_allclose(multi, single, rtol=LOSS_RTOL)
    assert single[-1] < single[0]  # it trains: the check is not between two untrained models
    # Only the chief (worker 0) wrote to the output directory.
    assert sorted(p.name for p in (cluster_runs / "multi").iterdir()) == [
        "checkpoint", "config.json", "losses.json", "predictions.npy"]


def test_multi_worker_checkpoint_restores_in_one_process(cluster_runs):
    run = cluster_runs / "multi"
    config = json.loads((run / "config.json").read_text())
    model = restore_model(config, run / "checkpoint" / "weights")
    probe = tf.constant(multi_worker.probe_histories())
    np.testing.assert_allclose(model(probe).numpy(), np.load(run / "predictions.npy"),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.load(cluster_runs / "single" / "predictions.npy"),
                               np.load(run / "predictions.npy"), rtol=1e-3, atol=1e-3)


TINY = ["--format", "synthetic", "--synthetic-users", "60", "--synthetic-items", "40",
        "--synthetic-length", "8", "--max-len", "8", "--dim", "8", "--blocks", "1",
        "--verbose", "0", "--epochs", "1", "--batch-size", "32"]


def test_mirrored_strategy_runs_the_train_pipeline(tmp_path):
    argv = TINY + ["--strategy", "mirrored", "--output", str(tmp_path / "out"),
                   "--export-root", str(tmp_path / "models"), "--name", "tiny"]
    assert train_pipeline.main(argv) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["options"]["strategy"] == "mirrored" and metrics["epochs"] == 1
    assert np.isfinite(metrics["history"]["loss"]).all()
    assert (tmp_path / "models" / "tiny" / "1" / "saved_model.pb").exists()
    assert (tmp_path / "out" / "checkpoint" / "checkpoint").exists()


@pytest.mark.parametrize("value, message", [
    (None, "is not set"),
    ("{cluster", "is not valid JSON"),
    ('{"cluster": {}, "task": {"type": "worker", "index": 0}}', "'worker' list"),
    ('{"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}}',
     "'host:port'"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}', "'type'"),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}',
     "task index 2"),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": true}}',
     "task index True"),
])
def test_bad_tf_config_names_the_variable(monkeypatch, value, message):
    if value is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", value)
    with pytest.raises(ValueError, match="TF_CONFIG") as err:
        make_strategy("multi-worker")
    assert message in str(err.value)


def test_tf_config_is_read_and_default_process_is_chief():
    config = read_tf_config({"TF_CONFIG": json.dumps(
        {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}})})
    assert config["cluster"]["worker"] == ["a:1", "b:2"]
    assert is_chief(make_strategy("default"))


def test_unknown_strategy_is_rejected(capsys):
    with pytest.raises(ValueError, match="strategy must be one of"):
        make_strategy("tpu")
    with pytest.raises(ValueError, match="strategy='tpu'"):
        TrainOptions(strategy="tpu")
    with pytest.raises(SystemExit):
        train_pipeline.options_from_args(["--strategy", "tpu"])
    assert "--strategy" in capsys.readouterr().err


def test_global_batch_must_split_evenly_over_replicas():
    two_replicas = types.SimpleNamespace(num_replicas_in_sync=2)  # only the count is read
    assert replica_batch_size(128, two_replicas) == 64
    with pytest.raises(ValueError, match="batch_size=127"):
        replica_batch_size(127, two_replicas)


def test_sampled_loss_equals_tfrs_retrieval_in_one_process():
    """The loss the distributed runs share is TFRS `Retrieval`'s loss (float32, no strategy)."""
    rng = np.random.default_rng(0)
    embedding = ItemEmbedding(30, 8)
    embedding(tf.constant([[1]]))
    probabilities = rng.random(30) / 15.0
    states = tf.constant(rng.normal(size=(40, 8)), tf.float32)
    targets = tf.constant(rng.integers(2, 30, 40), tf.int64)  # with repeats: accidental hits
    ours = SampledSoftmaxLoss(30, probabilities)(states, targets, embedding)
    task = tfrs.tasks.Retrieval(loss=keras.losses.CategoricalCrossentropy(from_logits=True),
                                remove_accidental_hits=True)
    want = task(states, tf.gather(embedding.embeddings, targets),
                candidate_sampling_probability=tf.gather(
                    tf.constant(probabilities, tf.float32), targets),
                candidate_ids=targets, compute_metrics=False, compute_batch_metrics=False)
    np.testing.assert_allclose(float(ours), float(want), rtol=1e-6)
