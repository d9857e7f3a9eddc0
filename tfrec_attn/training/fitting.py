"""The one training loop of the train command's runs (SASRec, DIN, the autoencoder): `model.fit`
with the run callbacks in one order, and the per-epoch records those callbacks gather."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Protocol

import numpy as np

from tfrec_attn._keras import keras, tf
from tfrec_attn.training.backup import RESUMABLE_CHANGES, RunBackup
from tfrec_attn.training.callbacks import EpochEvaluation, EpochTimer, TimeBudget
from tfrec_attn.training.weight_averaging import WeightAveraging

# Options added after backups recorded their run's identity, with the default that older
# versions ran as (`identity_options` leaves them out at it).
LATER_OPTION_DEFAULTS = {"on_error": "raise"}


class FitOptions(Protocol):
    """The options `fit_with_run_callbacks` reads (`TrainOptions`, `RankingOptions` and
    `AutoencoderOptions` all have them)."""

    epochs: int
    patience: int
    max_train_minutes: float | None
    backup_dir: str | None
    ema_decay: float | None
    verbose: int


@dataclasses.dataclass
class FitResult:
    """What a run needs from its training: `history` (`{name: [value per epoch]}`, every epoch's
    when resumed), `records` (the evaluation's, with `epoch_seconds` / `elapsed_seconds`),
    the `budget` (`stopped`, `previous` seconds before a restart) and `resumed_epochs`."""

    history: dict
    records: list[dict]
    budget: TimeBudget
    resumed_epochs: int


def fit_with_run_callbacks(model: keras.Model, dataset: tf.data.Dataset,
                           evaluation: EpochEvaluation, options: FitOptions, monitor: str,
                           log_dir: str | Path, extra_callbacks=(),
                           source: dict | None = None) -> FitResult:
    """Fits `model` on `dataset` for `options.epochs` with the run callbacks, in this order:

    `RunBackup` (with `options.backup_dir`; first, as it restores the state the others resume
    from), `EpochTimer`, `WeightAveraging` (with `options.ema_decay`; before the evaluation, so
    epochs end on the averaged weights), `evaluation`, `EarlyStopping` on
    `evaluation.prefix + monitor` (mode max, `options.patience`, best weights restored),
    `TimeBudget(options.max_train_minutes)`, `TensorBoard(log_dir)`, then `extra_callbacks`.
    The backup records the run's `resume_identity` and the data's `source`: resuming it with
    other settings, or after the data file changed, raises a `backup.BackupMismatchError`
    before anything is restored.

    Args:
        model: a compiled model.
        dataset: the training batches.
        evaluation: the per-epoch evaluation; it must log `monitor`.
        options: the run's options (`FitOptions`).
        monitor: the evaluation metric early stopping maximizes, e.g. `"ndcg@10"`.
        log_dir: TensorBoard's directory.
        extra_callbacks: Keras callbacks run after the run's own ones.
        source: what identifies the data (`run_options.data_source`), part of the backup's
            identity; `None`: not recorded.

    Returns:
        A `FitResult`; each record gains the epoch's `epoch_seconds` and the cumulative
        `elapsed_seconds`.

    Example:
    >>> import tempfile, types
    >>> from tfrec_attn.training.callbacks import EpochEvaluation
    >>> class Bias(EpochEvaluation):
    ...     def compute_metrics(self):
    ...         return {"bias": float(self.model.layers[0].bias.numpy()[0])}
    >>> model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    >>> model.compile(keras.optimizers.SGD(0.1), "mse")
    >>> options = types.SimpleNamespace(epochs=3, patience=5, max_train_minutes=None,
    ...                                 backup_dir=None, ema_decay=None, verbose=0)
    >>> data = tf.data.Dataset.from_tensor_slices((np.zeros((4, 1)), np.ones(4))).batch(2)
    >>> result = fit_with_run_callbacks(model, data, Bias(), options, "bias", tempfile.mkdtemp())
    >>> len(result.history["loss"]), [r["epoch"] for r in result.records], result.resumed_epochs
    (3, [1, 2, 3], 0)
    """
    timer = EpochTimer()
    budget = TimeBudget(options.max_train_minutes)
    stopping = keras.callbacks.EarlyStopping(monitor=evaluation.prefix + monitor, mode="max",
                                             patience=options.patience,
                                             restore_best_weights=True)
    backup = (RunBackup(options.backup_dir, tracked=[timer, evaluation, stopping, budget],
                        identity=resume_identity(model, options, source))
              if options.backup_dir else None)
    averaging = [WeightAveraging(options.ema_decay)] if options.ema_decay is not None else []
    callbacks = [
        *([backup] if backup else []),  # first: it restores the state the others resume from
        timer,
        *averaging,  # before the evaluation: epochs end on the averaged weights
        evaluation,
        stopping,
        budget,
        keras.callbacks.TensorBoard(log_dir=str(log_dir)),
        *extra_callbacks,
    ]
    history = model.fit(dataset, epochs=options.epochs, callbacks=callbacks,
                        verbose=options.verbose).history
    if backup:  # the training logs of every epoch, those before a restart included
        history = backup.history
    records = evaluation.records
    for record, seconds, at in zip(records, timer.seconds, np.cumsum(timer.seconds)):
        record["epoch_seconds"] = round(float(seconds), 2)
        record["elapsed_seconds"] = round(float(at), 2)
    return FitResult(history, records, budget, backup.resumed_epochs if backup else 0)


def identity_options(values: dict, leave_out=()) -> dict:
    """`values` (a run's options) as a backup identity records them: without `leave_out`, and
    without options newer than the backup format that are at their default
    (`LATER_OPTION_DEFAULTS`), so a backup saved before they existed still resumes (it ran as
    their default does), while a run that sets one is told apart.

    >>> identity_options({"epochs": 3, "on_error": "raise", "verbose": 1}, ["verbose"])
    {'epochs': 3}
    >>> identity_options({"epochs": 3, "on_error": "skip"})
    {'epochs': 3, 'on_error': 'skip'}
    """
    return {key: value for key, value in values.items() if key not in leave_out
            and not (key in LATER_OPTION_DEFAULTS and value == LATER_OPTION_DEFAULTS[key])}


def resume_identity(model: keras.Model, options: FitOptions, source: dict | None = None) -> dict:
    """What a run resumed from its backup must repeat: its options but `RESUMABLE_CHANGES`
    (output paths, verbosity, the time budget), the size of its model (which also depends on
    the data, e.g. the vocabulary) and, given, the data's `source` (`run_options.data_source`:
    the file's fingerprint) under `"dataset"`.

    Example:
    >>> import types
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> resume_identity(model, types.SimpleNamespace(epochs=3, verbose=0, model={"dim": 8}))
    {'options': {'epochs': 3, 'model': {'dim': 8}}, 'model': {'parameters': 3, 'weights': 2}}
    """
    values = (dataclasses.asdict(options) if dataclasses.is_dataclass(options)
              else dict(vars(options)))
    return {"options": identity_options(values, RESUMABLE_CHANGES),
            "model": {"parameters": int(sum(np.prod(w.shape) for w in model.weights)),
                      "weights": len(model.weights)},
            **({"dataset": source} if source is not None else {})}
