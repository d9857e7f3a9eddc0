"""Fine-tuning a `tfrs.Model` whose functional tower was wrapped by TFMOT, shared by
`prune_sasrec` / `qat_sasrec` (`optimization/sasrec.py`) and `prune_din` / `qat_din`
(`optimization/din.py`): the epoch check, the pruning schedule's steps, and compile + fit.
"""

from __future__ import annotations

from tfrec_attn._keras import keras, tf


def check_epochs(epochs: int) -> None:
    """`ValueError` unless `epochs` is at least 1.

    >>> check_epochs(0)
    Traceback (most recent call last):
    ...
    ValueError: epochs must be positive. Received: epochs=0
    """
    if epochs < 1:
        raise ValueError(f"epochs must be positive. Received: epochs={epochs}")


def steps_per_epoch(dataset: tf.data.Dataset) -> int:
    """Batches in one pass of `dataset` (counted when its cardinality is unknown)."""
    steps = int(dataset.cardinality())
    if steps < 0:  # unknown or infinite: count one pass
        steps = int(dataset.reduce(0, lambda count, _: count + 1))
    return steps


def pruning_steps(dataset: tf.data.Dataset, epochs: int, frequency: int) -> tuple[int, int]:
    """`(frequency, end_step)` of a schedule spanning `epochs` passes of `dataset`: the
    frequency is lowered so there are at least a few mask updates, and the last update (the
    target sparsity) falls on the last multiple of it (the wrappers count steps from 1).

    >>> pruning_steps(tf.data.Dataset.range(10).batch(1), epochs=1, frequency=100)
    (2, 10)
    """
    steps = epochs * steps_per_epoch(dataset)
    frequency = max(1, min(frequency, steps // 4))
    return frequency, steps // frequency * frequency


def compile_and_fit(model: keras.Model, dataset: tf.data.Dataset, epochs: int, optimizer,
                    learning_rate: float, callbacks, verbose: int):
    """Compiles `model` with `optimizer` (default `Adam(learning_rate)`) and fits it; returns
    the `fit` history."""
    if optimizer is None and not learning_rate > 0:
        raise ValueError(f"learning_rate must be positive. Received: {learning_rate}")
    model.compile(optimizer=optimizer or keras.optimizers.Adam(learning_rate))
    return model.fit(dataset, epochs=epochs, verbose=verbose, callbacks=list(callbacks))
