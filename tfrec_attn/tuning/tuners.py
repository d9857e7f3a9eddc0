"""`make_tuner`: keras-tuner's random, Bayesian and Hyperband searches over tf-keras models."""

import os
import time

import keras_tuner

from tfrec_attn._keras import keras
from tfrec_attn.tuning.hypermodel import OBJECTIVE
from tfrec_attn.validation import check_positive_int


class SearchStopped(Exception):
    """Raised between trials when the search's time budget is spent or its trial cap reached.

    Args:
        by_time_budget: whether the time budget (rather than the trial cap) stopped it.
    """

    def __init__(self, by_time_budget: bool):
        super().__init__("time budget spent" if by_time_budget else "trial cap reached")
        self.by_time_budget = by_time_budget


class TfKerasTrials:
    """Mixin that runs keras-tuner trials on tf-keras models and stops searches between trials.

    keras-tuner 1.4.8 checks built models and histories against Keras 3 even under
    `TF_USE_LEGACY_KERAS=1` (keras-team/keras-tuner#1039), so its stock `run_trial` rejects a
    tf-keras model. This overrides the documented `run_trial` hook: build, restore the
    checkpoint a Hyperband round continues from, fit with a tf-keras `ModelCheckpoint` of the
    best epoch, and return the hypermodel's metrics dict. One execution per trial.

    Attributes:
        deadline: `time.monotonic()` value after which no new trial starts (a search without
            any trial yet still starts one, so it always has a best config); `None` for none.
        trial_cap: no new trial once this many exist (Hyperband has no `max_trials`).
    """

    deadline: float | None = None
    trial_cap: int | None = None

    def pre_create_trial(self):
        super().pre_create_trial()
        if self.trial_cap is not None and len(self.oracle.trials) >= self.trial_cap:
            raise SearchStopped(by_time_budget=False)
        spent = self.deadline is not None and time.monotonic() >= self.deadline
        if spent and self.oracle.trials:  # a fresh search always runs (at least part of) one
            raise SearchStopped(by_time_budget=True)

    def run_trial(self, trial, *args, **kwargs):
        hp = trial.hyperparameters
        if "tuner/epochs" in hp.values:  # a Hyperband round trains up to its epoch budget
            kwargs["epochs"] = hp.values["tuner/epochs"]
            kwargs["initial_epoch"] = hp.values["tuner/initial_epoch"]
        model = self.hypermodel.build(hp)
        if "tuner/trial_id" in hp.values:  # ... continuing the trial it was promoted from
            model.load_weights(self.checkpoint_path(hp.values["tuner/trial_id"])).expect_partial()
        checkpoint = keras.callbacks.ModelCheckpoint(
            self.checkpoint_path(trial.trial_id), monitor=OBJECTIVE.name, mode="max",
            save_best_only=True, save_weights_only=True)
        return self.hypermodel.fit(hp, model, *args, callbacks=[checkpoint], **kwargs)

    def checkpoint_path(self, trial_id: str) -> str:
        """The TF checkpoint prefix of the best epoch's weights of trial `trial_id`."""
        return os.path.join(self.get_trial_dir(trial_id), "checkpoint", "weights")

    def load_model(self, trial):
        """The trial's model with its best epoch's weights (behind `get_best_models`)."""
        model = self.hypermodel.build(trial.hyperparameters)
        model.load_weights(self.checkpoint_path(trial.trial_id)).expect_partial()
        return model


class RandomSearch(TfKerasTrials, keras_tuner.RandomSearch):
    """`keras_tuner.RandomSearch` over tf-keras models (see `TfKerasTrials`)."""


class BayesianOptimization(TfKerasTrials, keras_tuner.BayesianOptimization):
    """`keras_tuner.BayesianOptimization` over tf-keras models (see `TfKerasTrials`)."""


class Hyperband(TfKerasTrials, keras_tuner.Hyperband):
    """`keras_tuner.Hyperband` over tf-keras models (see `TfKerasTrials`)."""


TUNERS = {"random": RandomSearch, "bayesian": BayesianOptimization, "hyperband": Hyperband}


def make_tuner(kind: str, hypermodel, directory: str, max_trials: int, max_epochs: int,
               seed: int = 0, overwrite: bool = False, deadline: float | None = None):
    """A tuner maximizing `val_ndcg@10`, keeping its state in `directory/kind`.

    With `overwrite=False` an existing search in that directory resumes: finished trials are
    kept and count towards `max_trials`.

    Args:
        kind: `"random"`, `"bayesian"` or `"hyperband"`.
        hypermodel: a `keras_tuner.HyperModel` whose `fit` returns the objective in a dict.
        directory: where keras-tuner writes `kind/trial_*/` and its oracle state.
        max_trials: trials in the whole search (Hyperband repeats its brackets up to it).
        max_epochs: Hyperband's largest epoch budget (the other tuners take `epochs` in
            `search`).
        seed: the oracle's random seed.
        overwrite: discard an existing search instead of resuming it.
        deadline: `time.monotonic()` value after which no new trial starts.

    Returns:
        A `TfKerasTrials` tuner; `search` raises `SearchStopped` when it stops early.

    Example:
    >>> make_tuner("grid", None, "/tmp/t", max_trials=2, max_epochs=2)
    Traceback (most recent call last):
    ...
    ValueError: tuner must be one of ['random', 'bayesian', 'hyperband']. Received: 'grid'
    """
    if kind not in TUNERS:
        raise ValueError(f"tuner must be one of {list(TUNERS)}. Received: {kind!r}")
    check_positive_int("max_trials", max_trials)
    common = {"objective": OBJECTIVE, "seed": seed, "directory": os.fspath(directory),
              "project_name": kind, "overwrite": overwrite}
    if kind == "hyperband":
        # Brackets repeat until the trial cap (or the deadline): `max_trials` means the same
        # for every tuner.
        tuner = Hyperband(hypermodel, max_epochs=max_epochs, hyperband_iterations=None,
                          **common)
        tuner.trial_cap = max_trials
    else:
        tuner = TUNERS[kind](hypermodel, max_trials=max_trials, **common)
    tuner.deadline = deadline
    return tuner
