"""Device placement of pruning/QAT (GPU branch forced on CPU) and fine-tuning settings."""

import numpy as np
import pytest

from pipelines import optimize as optimize_pipeline
from tfrec_attn._keras import tf
from tfrec_attn.data import make_training_dataset
from tfrec_attn.models import SASRec, SASRecConfig
from tfrec_attn.optimization import (
    optimization_device,
    optimization_scope,
    prune_sasrec,
    qat_sasrec,
)
from tfrec_attn.optimization import report as report_module
from tfrec_attn.optimization.report import fine_tune_learning_rate, optimize_run


@pytest.fixture
def fake_gpu(monkeypatch):
    """TensorFlow 'sees' a GPU; every `tf.device` scope entered is recorded."""
    real_list, real_device = tf.config.list_logical_devices, tf.device
    devices = []

    def list_logical_devices(device_type=None):
        if device_type == "GPU":
            return [tf.config.LogicalDevice(name="/device:GPU:0", device_type="GPU")]
        return real_list(device_type)

    def device(name):
        devices.append(name)
        return real_device(name)

    soft = tf.config.get_soft_device_placement()
    tf.config.set_soft_device_placement(False)
    monkeypatch.setattr(tf.config, "list_logical_devices", list_logical_devices)
    monkeypatch.setattr(tf, "device", device)
    yield devices
    tf.config.set_soft_device_placement(soft)


def test_gpu_branch_picks_gpu_with_soft_placement(fake_gpu):
    assert optimization_device() == "/GPU:0"
    with optimization_scope() as device:
        assert device == "/GPU:0" and tf.config.get_soft_device_placement()
        # No real GPU: soft placement runs the op on the CPU instead of failing.
        assert float(tf.reduce_sum(tf.ones(3))) == 3.0
    assert fake_gpu == ["/GPU:0"]


def test_cpu_branch_without_gpu(monkeypatch):
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda device_type=None: [])
    assert optimization_device() == "/CPU:0"


def _tiny(chain_sequences, **overrides):
    sequences, vocab = chain_sequences
    config = SASRecConfig(vocab_size=vocab, max_len=8, dim=8, num_blocks=1, dropout=0.0,
                          **overrides)
    dataset = make_training_dataset([s[:-1] for s in sequences[:128]], 8, 64)
    return SASRec(config), dataset


@pytest.mark.parametrize("method", ["prune", "qat"])
def test_pruning_and_qat_run_under_the_gpu_scope(fake_gpu, chain_sequences, method):
    model, dataset = _tiny(chain_sequences)
    if method == "prune":
        model, report = prune_sasrec(model, dataset, epochs=1, target_sparsity=0.5)
        assert report["sparsity"] > 0.4
    else:
        model, history = qat_sasrec(model, dataset, epochs=1, learning_rate=1e-3)
        assert np.isfinite(history.history["loss"][0])
    assert "/GPU:0" in fake_gpu and "/CPU:0" not in fake_gpu


def test_qat_under_the_gpu_scope_still_refuses_mixed_precision(fake_gpu, chain_sequences):
    from tfrec_attn._keras import keras

    keras.mixed_precision.set_global_policy("mixed_float16")  # restored by conftest
    model, dataset = _tiny(chain_sequences)
    with pytest.raises(ValueError, match="float32"):
        qat_sasrec(model, dataset, epochs=1)


def test_fine_tune_learning_rate_rule():
    assert fine_tune_learning_rate("prune", 3e-3) == pytest.approx(3e-3)
    assert fine_tune_learning_rate("qat", 3e-3) == pytest.approx(3e-4)
    with pytest.raises(ValueError, match="method must be one of"):
        fine_tune_learning_rate("ptq-int8", 1e-3)
    with pytest.raises(ValueError, match="run_learning_rate must be positive"):
        fine_tune_learning_rate("qat", 0.0)


class _Options:
    learning_rate, batch_size = 2e-3, 256


class _Run:
    options = _Options()


def test_fine_tune_settings_come_from_the_run():
    settings = report_module._fine_tune_settings(_Run(), ("prune", "qat", "ptq-int8"), None,
                                                 None)
    assert settings == {
        "prune": {"epochs": 3, "learning_rate": pytest.approx(2e-3), "batch_size": 256},
        "qat": {"epochs": 1, "learning_rate": pytest.approx(2e-4), "batch_size": 256}}
    forced = report_module._fine_tune_settings(_Run(), ("prune",), 2, 5e-4)
    assert forced == {"prune": {"epochs": 2, "learning_rate": 5e-4, "batch_size": 256}}


def test_command_line_defaults_and_overrides():
    args = optimize_pipeline.parser().parse_args(["--run-dir", "r"])
    assert args.epochs is None and args.learning_rate is None
    args = optimize_pipeline.parser().parse_args(
        ["--run-dir", "r", "--epochs", "2", "--learning-rate", "1e-4"])
    assert (args.epochs, args.learning_rate) == (2, 1e-4)


@pytest.mark.parametrize("kwargs, match", [
    ({"learning_rate": 0.0}, "learning_rate must be positive"),
    ({"epochs": 0}, "epochs"),
])
def test_bad_fine_tuning_settings_are_named(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        optimize_run(tmp_path / "never-read", **kwargs)
