"""FLOPs from the traced graph, throughput fields, and XLA training of SASRec on CPU."""

import json

import numpy as np
import pytest

from tfrec_attn._keras import keras, tf
from tfrec_attn.benchmarking import throughput
from tfrec_attn.models import SASRec, SASRecConfig
from tfrec_attn.training import TrainOptions
from tfrec_attn.training.run import build_model, training_dataset


def test_float_ops_fill_data_dependent_shapes():
    keep = tf.constant([True, False, True, True, False, True])

    def fn(d):
        return tf.matmul(tf.boolean_mask(d["a"], d["keep"]), d["b"])

    example = {"a": tf.ones((6, 5)), "keep": keep, "b": tf.ones((5, 3))}
    assert throughput.graph_float_ops(fn, example) == 2 * 4 * 5 * 3


def test_train_step_throughput_counts_the_sasrec_step():
    keras.utils.set_random_seed(0)
    model = SASRec(SASRecConfig(vocab_size=30, max_len=6, dim=8, num_blocks=1, loss="softmax"))
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    batch = {"history": tf.constant(np.arange(2, 26).reshape(4, 6), tf.int64),
             "targets": tf.constant(np.arange(3, 27).reshape(4, 6), tf.int64)}
    result = throughput.train_step_throughput(model, batch, repeats=2, warmup=1, peak_gflops=1.0)
    # The catalogue logits alone (24 positions x 30 items x 8 dims, forward) are 2*24*30*8 FLOPs.
    assert result["flops_per_step"] > 2 * 24 * 30 * 8
    assert result["sequences_per_second"] > 0 and result["achieved_gflops"] > 0
    assert result["fraction_of_peak"] == pytest.approx(result["achieved_gflops"], rel=0.01)


def test_bad_peak_arguments():
    with pytest.raises(ValueError, match="n and repeats must be positive"):
        throughput.peak_matmul_gflops(n=0)


def test_jit_compile_runs_train_on_fixed_shape_batches(chain_sequences):
    """XLA compiles once per input shape: under jit_compile every batch is (batch, max_len)."""
    sequences, _ = chain_sequences
    shapes = {tuple(b["history"].shape) for b in training_dataset(
        sequences, 8, TrainOptions(jit_compile=True, batch_size=5))}
    assert shapes == {(5, 8)}
    bucketed = {tuple(b["history"].shape) for b in training_dataset(
        sequences, 8, TrainOptions(batch_size=5))}
    assert len(bucketed) > 1


@pytest.mark.slow  # XLA compilation on the CPU takes ~1 minute per objective
@pytest.mark.parametrize("loss", ["sampled", "softmax", "bce"])
def test_xla_trains_sasrec_on_cpu(chain_sequences, loss):
    sequences, vocab = chain_sequences
    options = TrainOptions(jit_compile=True, learning_rate=1e-2, batch_size=64,
                           model={"max_len": 8, "dim": 16, "num_blocks": 1, "loss": loss})
    model = build_model(options, vocab, sequences)
    assert model.jit_compile is True
    losses = model.fit(training_dataset(sequences, 8, options), epochs=3,
                       verbose=0).history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < losses[0]


def test_speed_command_with_no_epochs_times_only_the_fixed_step(tmp_path, monkeypatch, capsys):
    """`--output` is a directory, as for the other benchmarks: the record goes to
    `speed.json` there (the printed JSON), and the directory's other files are kept."""
    from pipelines import benchmark
    from tfrec_attn.benchmarking import speed

    monkeypatch.setattr(speed, "peak_matmul_gflops", lambda: 100.0)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("kept")
    assert benchmark.main(["speed", "--users", "40", "--items", "30", "--length", "6",
                           "--max-len", "8", "--dim", "8", "--blocks", "1", "--batch-size", "16",
                           "--loss", "sampled", "--epochs", "0", "--throughput-steps", "1",
                           "--verbose", "0", "--output", str(out)]) == 0
    record = json.loads((out / "speed.json").read_text())
    assert json.loads(capsys.readouterr().out) == record
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "speed.json"]
    assert (out / "notes.txt").read_text() == "kept"
    assert record["epoch_seconds"] is None and record["first_epoch_seconds"] is None
    assert record["fixed_batch_step"]["step_ms"] > 0
    assert record["fixed_batch_step"]["peak_gflops"] == 100.0
    with pytest.raises(SystemExit):
        benchmark.main(["speed", "--epochs", "-1"])
