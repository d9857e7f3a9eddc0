"""A tiny SASRec training run under a `tf.distribute` strategy (one process of a test cluster).

`tests/training/test_distribution.py` starts two of these as a `MultiWorkerMirroredStrategy`
cluster on localhost (each with its own `TF_CONFIG`) and one with the default strategy, and
compares their per-step losses and checkpoints. Everything is deterministic: seeded chain data,
the same seeded shuffle on every worker, dropout 0.

Run: `python -m tfrec_attn.testing.multi_worker --strategy multi-worker --output DIR`.
The chief writes `DIR/losses.json` (the global loss after each step), `DIR/predictions.npy`
(scores of `probe_histories()`), `DIR/checkpoint/weights` and `DIR/config.json`; other workers
write theirs to a temporary directory. With `--backup-dir` it trains with `RunBackup` (tracking an
`EpochTimer`), and `--interrupt-at-epoch N` raises `Preempted` when epoch N (0-based) begins, after
the backup of the epochs before it: a rerun without it resumes at epoch N.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from tfrec_attn._keras import keras, tf
from tfrec_attn.data import make_training_dataset, pad_left
from tfrec_attn.models import SASRec
from tfrec_attn.training.backup import RunBackup
from tfrec_attn.training.callbacks import EpochTimer
from tfrec_attn.training.distribution import STRATEGIES, make_strategy, output_dir, shard_by_data

MAX_LEN = 8


def chain_sequences(num_users: int = 40, vocab_size: int = 42, seed: int = 0) -> list:
    """Histories where each item is followed by a fixed successor 80% of the time."""
    rng = np.random.default_rng(seed)
    successor = rng.integers(2, vocab_size, size=vocab_size)
    sequences = []
    for _ in range(num_users):
        seq = [int(rng.integers(2, vocab_size))]
        for _ in range(int(rng.integers(3, 12))):
            follow = rng.random() < 0.8
            seq.append(int(successor[seq[-1]]) if follow else int(rng.integers(2, vocab_size)))
        sequences.append(np.array(seq, np.int64))
    return sequences


def probe_histories() -> np.ndarray:
    """Fixed padded histories whose scores the chief saves (to check a restored checkpoint)."""
    return pad_left([np.array([2, 3, 4]), np.arange(5, 15)], MAX_LEN)


def model_config(vocab_size: int, loss: str) -> dict:
    return {"vocab_size": vocab_size, "max_len": MAX_LEN, "dim": 8, "num_blocks": 1,
            "num_heads": 2, "dropout": 0.0, "loss": loss}


class Preempted(RuntimeError):
    """The interruption `InterruptAt` simulates."""


class InterruptAt(keras.callbacks.Callback):
    """Raises `Preempted` when epoch `epoch` (0-based) begins, as a preempted machine would stop.

    Example:
    >>> InterruptAt(2).epoch
    2
    """

    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise Preempted(f"interrupted at the start of epoch {epoch + 1}")


def train(strategy_name: str, output: str, batch_size: int = 8, loss: str = "sampled",
          epochs: int = 1, seed: int = 0, backup_dir: str | None = None,
          interrupt_at_epoch: int | None = None) -> list[float]:
    """Trains the tiny model under `strategy_name`; returns the global loss after every step
    (of the epochs this call trained, after a resume from `backup_dir` only those)."""
    strategy = make_strategy(strategy_name)  # first: multi-worker configures TF at startup
    keras.utils.set_random_seed(seed)
    sequences = chain_sequences(seed=seed)
    config = model_config(42, loss)
    dataset = shard_by_data(make_training_dataset(sequences, MAX_LEN, batch_size, seed=seed))
    with strategy.scope():
        model = SASRec(config)
        model.compile(optimizer=keras.optimizers.Adam(1e-2))
    losses: list[float] = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: losses.append(float(logs["loss"])))
    callbacks = [record]
    if backup_dir:
        timer = EpochTimer()
        callbacks = [RunBackup(backup_dir, tracked=[timer]), timer, record]
    if interrupt_at_epoch is not None:
        callbacks.append(InterruptAt(interrupt_at_epoch))
    model.fit(dataset, epochs=epochs, callbacks=callbacks, verbose=0)
    with output_dir(output, strategy) as out:
        out.mkdir(parents=True, exist_ok=True)
        model.save_weights(str(out / "checkpoint" / "weights"))  # every worker saves
        np.save(out / "predictions.npy", model(tf.constant(probe_histories())).numpy())
        (out / "losses.json").write_text(json.dumps(losses))
        (out / "config.json").write_text(json.dumps(config))
    return losses


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tfrec_attn.testing.multi_worker",
                                description=__doc__.splitlines()[0])
    p.add_argument("--strategy", choices=STRATEGIES, default="multi-worker")
    p.add_argument("--output", required=True)
    p.add_argument("--batch-size", type=int, default=8, help="the global batch")
    p.add_argument("--loss", choices=["sampled", "softmax"], default="sampled")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--backup-dir", help="train with RunBackup writing here")
    p.add_argument("--interrupt-at-epoch", type=int, help="raise when this epoch (0-based) begins")
    args = p.parse_args(argv)
    train(args.strategy, args.output, args.batch_size, args.loss, args.epochs,
          backup_dir=args.backup_dir, interrupt_at_epoch=args.interrupt_at_epoch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
