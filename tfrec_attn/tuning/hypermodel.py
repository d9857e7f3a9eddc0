"""`SASRecHyperModel`: keras-tuner builds and trains one compiled `SASRec` per trial."""

import time

import keras_tuner

from tfrec_attn._keras import keras
from tfrec_attn.models import SASRec, SASRecConfig
from tfrec_attn.training.callbacks import EpochTimer, RankingEvaluation, TimeBudget, best_epoch
from tfrec_attn.training.run import compile_sasrec
from tfrec_attn.training.scoring import make_score_fn
from tfrec_attn.tuning.search_space import SearchSpace

MONITOR = "ndcg@10"
# RankingEvaluation writes `logs["val_" + name]`, so the objective is the key it logs.
OBJECTIVE = keras_tuner.Objective("val_" + MONITOR, "max")
REPORTED = ("ndcg@10", "hr@10", "mrr")  # validation metrics each trial reports


class SASRecHyperModel(keras_tuner.HyperModel):
    """A compiled `SASRec` from a `SearchSpace` sample, trained with per-epoch ranking validation.

    Each trial's model comes from `training.run.compile_sasrec`, as a train run's does (Adam,
    the sampled loss's item probabilities, the current distribution strategy).

    `fit` ranks the validation rows after every epoch (`RankingEvaluation`, which logs the
    objective `val_ndcg@10`), stops on `EarlyStopping` or the time budget (`TimeBudget`), and
    returns the trial's metrics as a dict (keras-tuner 1.4.8 only recognizes Keras 3 `History`
    objects, not tf-keras ones).

    Args:
        vocab_size: number of item ids including padding and OOV.
        space: the `SearchSpace` (its fields override `base`).
        base: fixed `SASRecConfig` fields (the `model:` mapping, e.g. `max_len`).
        learning_rate: Adam learning rate when the space does not tune `learning_rate`.
        item_probabilities: `(vocab,)` item frequencies for the sampled loss's log-Q correction.
        valid_histories / valid_targets: validation rows ranked after every epoch.
        protocol: `"full"` or `"sampled-100"`.
        patience: epochs without a better `val_ndcg@10` before a trial stops.
        deadline: `time.monotonic()` value at which any running trial stops; `None` for none.
        trial_minutes: wall-time cap of one trial; `None` for none.
        seed: every trial starts from this seed (same hyper-parameters, same initial weights).
        data_chosen: the `base` fields `choose_data_defaults` chose; a trial whose loss is
            `"bce"` drops a chosen `exclude_seen` (as `tfrec-attn train` never chooses it for
            that loss, which does not take it).

    Example:
    >>> import keras_tuner
    >>> hypermodel = SASRecHyperModel(vocab_size=30, space=SearchSpace({"dim": [8]}),
    ...                               base={"max_len": 5}, valid_histories=[], valid_targets=[])
    >>> model = hypermodel.build(keras_tuner.HyperParameters())
    >>> model.config.dim, model.config.max_len
    (8, 5)
    """

    def __init__(self, vocab_size: int, space: SearchSpace, base: dict | None = None,
                 learning_rate: float = 3e-3, item_probabilities=None, valid_histories=(),
                 valid_targets=(), protocol: str = "full", patience: int = 5,
                 deadline: float | None = None, trial_minutes: float | None = None,
                 seed: int = 0, data_chosen=()):
        super().__init__(name="sasrec")
        self.vocab_size = vocab_size
        self.space = space
        self.base = dict(base or {})
        self.learning_rate = learning_rate
        self.item_probabilities = item_probabilities
        self.valid_histories = list(valid_histories)
        self.valid_targets = valid_targets
        self.protocol = protocol
        self.patience = patience
        self.deadline = deadline
        self.trial_minutes = trial_minutes
        self.seed = seed
        self.data_chosen = frozenset(data_chosen)

    def declare_hyperparameters(self, hp) -> None:
        self.space.sample(hp)

    def build(self, hp) -> SASRec:
        values = self.space.sample(hp)
        learning_rate = values.pop("learning_rate", self.learning_rate)
        keras.backend.clear_session()  # drop the previous trial's graph state
        keras.utils.set_random_seed(self.seed)
        fields = {**self.base, **values}
        if fields.get("loss") == "bce" and "exclude_seen" in self.data_chosen:
            fields.pop("exclude_seen")
        config = SASRecConfig(vocab_size=self.vocab_size, **fields)
        return compile_sasrec(config, learning_rate, self.item_probabilities)

    def fit(self, hp, model: SASRec, dataset, *, epochs: int, initial_epoch: int = 0,
            callbacks=(), verbose: int = 0) -> dict:
        """Trains `model` on `dataset`; returns `val_*` metrics of its best epoch and its cost.

        `dataset` is a `tf.data.Dataset` or a function of no argument that makes one. Pass the
        function (`tfrec-attn tune` does): each trial then shuffles as a `train` run does. A
        dataset shared by the trials reshuffles on, so trial n would see epochs a retrain of
        its settings never sees.

        `callbacks` run after the evaluation, so they see `val_ndcg@10` in the logs.
        """
        if callable(dataset):
            dataset = dataset()
        evaluation = RankingEvaluation(
            make_score_fn(model.scorer, model.config.max_len), self.valid_histories,
            self.valid_targets, self.vocab_size, protocol=self.protocol, seed=self.seed)
        budget = TimeBudget(self._minutes_left())
        started = time.monotonic()
        model.fit(dataset, epochs=epochs, initial_epoch=initial_epoch, verbose=verbose,
                  callbacks=[
                      EpochTimer(), evaluation,
                      keras.callbacks.EarlyStopping(monitor=OBJECTIVE.name, mode="max",
                                                    patience=self.patience),
                      budget, *callbacks])
        if not evaluation.records:
            raise RuntimeError("the trial ended before its first epoch did (empty dataset?)")
        best = best_epoch(evaluation.records, MONITOR)
        metrics = {"val_" + name: float(best[name]) for name in REPORTED}
        metrics.update(epochs=len(evaluation.records), best_epoch=best["epoch"],
                       seconds=round(time.monotonic() - started, 2),
                       stopped_by_time_budget=float(budget.stopped))
        return metrics

    def _minutes_left(self) -> float | None:
        """The trial's budget: the search deadline or `trial_minutes`, whichever comes first."""
        limits = [] if self.trial_minutes is None else [self.trial_minutes]
        if self.deadline is not None:
            limits.append(max(self.deadline - time.monotonic(), 0.0) / 60.0)
        return min(limits) if limits else None
