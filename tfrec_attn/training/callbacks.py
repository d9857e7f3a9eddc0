"""Keras callbacks for recommender training: evaluation each epoch (the base of the run's
evaluation callbacks, and the ranking one), epoch times and a time budget."""

import time

import numpy as np

from tfrec_attn._keras import keras
from tfrec_attn.evaluation import evaluate
from tfrec_attn.training.distribution import any_worker, num_workers


class EpochEvaluation(keras.callbacks.Callback):
    """Base of the per-epoch evaluation callbacks: metrics into `records` and `logs`.

    After every epoch `compute_metrics()` (the hook subclasses implement) gives
    `{name: value}`; the epoch's `{"epoch", **metrics}` is appended to `records` (cleared in
    `on_train_begin`, so they hold the epochs of the latest `fit`) and the `logged` metrics land
    in `logs` as `{prefix}{name}` (e.g. `val_ndcg@10`), so Keras' `EarlyStopping`,
    `TensorBoard` and `History` see them: put it before those in the callback list.
    `get_state` / `set_state` let `RunBackup` carry the records over a restart.

    Args:
        prefix: log-name prefix. Defaults to `"val_"`.
        logged: names of the metrics put in `logs` (`None`: all; `records` keep all).

    Example:
    >>> class Constant(EpochEvaluation):
    ...     def compute_metrics(self):
    ...         return {"auc": 0.5, "gauc": 0.25}
    >>> evaluation, logs = Constant(logged=("auc",)), {"loss": 1.0}
    >>> evaluation.on_epoch_end(0, logs)
    >>> logs, evaluation.records
    ({'loss': 1.0, 'val_auc': 0.5}, [{'epoch': 1, 'auc': 0.5, 'gauc': 0.25}])
    """

    def __init__(self, prefix: str = "val_", logged=None):
        super().__init__()
        self.prefix = prefix
        self.logged = None if logged is None else tuple(logged)
        self.records: list[dict] = []

    def compute_metrics(self) -> dict:
        """`{name: value}` of the model now (called at the end of every epoch)."""
        raise NotImplementedError(f"{type(self).__name__} must implement compute_metrics().")

    def on_train_begin(self, logs=None):
        self.records = []  # a new `fit` reports its own epochs (`RunBackup` restores after this)

    def on_epoch_end(self, epoch, logs=None):
        metrics = self.compute_metrics()
        self.records.append({"epoch": epoch + 1, **metrics})
        if logs is not None:
            logs.update({self.prefix + name: value for name, value in metrics.items()
                         if self.logged is None or name in self.logged})

    def get_state(self) -> dict:
        """The records so far, as JSON (`RunBackup` saves it to resume an interrupted run)."""
        return {"records": self.records}

    def set_state(self, state: dict) -> None:
        """Restores `get_state()`'s records; call it after `on_train_begin`."""
        self.records = [dict(r) for r in state["records"]]


# The cut-offs a run ranks its validation users at (`RankingEvaluation`'s default).
RANKING_CUTOFFS = (1, 5, 10, 20)


class RankingEvaluation(EpochEvaluation):
    """Computes ranking metrics on held-out rows at the end of every epoch into `logs`.

    Metrics land in `logs` as `{prefix}{name}` (e.g. `val_ndcg@10`), so Keras' `EarlyStopping`,
    `TensorBoard` and `History` see them. It must come before those in the callback list.
    `records` holds the epochs of the latest `fit` (cleared in `on_train_begin`).

    Args:
        score_fn: `list[np.ndarray] -> (batch, vocab)` scores (see `make_score_fn`).
        histories / targets: the held-out rows.
        vocab_size: number of ids.
        protocol: `"full"` or `"sampled-100"`.
        prefix: log-name prefix. Defaults to `"val_"`.
        logged: metrics put in `logs` (all of them are kept in `records`).
    """

    def __init__(self, score_fn, histories, targets, vocab_size: int, protocol: str = "full",
                 ks=RANKING_CUTOFFS, prefix: str = "val_", seed: int = 0,
                 logged=("ndcg@10", "hr@10", "mrr")):
        super().__init__(prefix=prefix, logged=logged)
        self.score_fn = score_fn
        self.histories = histories
        self.targets = targets
        self.vocab_size = vocab_size
        self.protocol = protocol
        self.ks = ks
        self.seed = seed

    def compute_metrics(self) -> dict:
        metrics = evaluate(self.score_fn, self.histories, self.targets, self.vocab_size,
                           protocol=self.protocol, ks=self.ks, seed=self.seed)
        return {name: value for name, value in metrics.items() if name != "users"}


class TimeBudget(keras.callbacks.Callback):
    """Stops training cleanly once `minutes` of wall time have passed (checked every batch).

    The epoch in progress ends early, its `on_epoch_end` callbacks still run (so evaluation and
    best-weight tracking see it), and `fit` returns normally. With several workers the clocks
    are compared every batch (an all-reduce), so all workers stop at the same step.
    """

    def __init__(self, minutes: float | None):
        super().__init__()
        self.seconds = None if minutes is None else float(minutes) * 60.0
        self.started = None
        self.stopped = False
        self.elapsed = 0.0
        self.previous = 0.0  # seconds trained before a restart (`set_state`)

    def on_train_begin(self, logs=None):
        self.started = time.monotonic()
        self.previous = 0.0

    def get_state(self) -> dict:
        """The wall time trained so far, as JSON (`RunBackup` saves it to resume a run)."""
        return {"elapsed": time.monotonic() - self.started}

    def set_state(self, state: dict) -> None:
        """Counts `state["elapsed"]` as already spent; call it after `on_train_begin`."""
        self.previous = float(state["elapsed"])
        self.started = time.monotonic() - self.previous
        self.elapsed = self.previous

    def on_train_batch_end(self, batch, logs=None):
        self.elapsed = time.monotonic() - self.started
        if self.seconds is None:
            return
        over = self.elapsed >= self.seconds
        strategy = self.model.distribute_strategy
        if num_workers(strategy) > 1:
            over = any_worker(over, strategy)
        if over:
            self.stopped = True
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        self.elapsed = time.monotonic() - self.started


def best_epoch(records: list[dict], monitor: str) -> dict:
    """The record with the highest `monitor` value (first one on ties)."""
    values = [r.get(monitor, -np.inf) for r in records]
    return records[int(np.argmax(values))] if records else {}


class EpochTimer(keras.callbacks.Callback):
    """Records wall seconds per epoch of the latest `fit` (for benchmarks and reports)."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []
        self._start = 0.0

    def on_train_begin(self, logs=None):
        self.seconds = []  # a new `fit` times its own epochs (`RunBackup` restores after this)

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.monotonic() - self._start)

    def get_state(self) -> dict:
        """The seconds per epoch so far, as JSON (`RunBackup` saves it to resume a run)."""
        return {"seconds": self.seconds}

    def set_state(self, state: dict) -> None:
        """Restores `get_state()`'s seconds per epoch; call it after `on_train_begin`."""
        self.seconds = [float(s) for s in state["seconds"]]
