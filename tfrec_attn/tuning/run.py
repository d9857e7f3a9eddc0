"""One search end to end: data (the train split) -> keras-tuner trials -> report + best config."""

import dataclasses
import os
import time
from pathlib import Path

from tfrec_attn._keras import keras
from tfrec_attn.data import make_training_dataset
from tfrec_attn.models import SASRecConfig
from tfrec_attn.training.data_defaults import choose_data_defaults
from tfrec_attn.training.run import (
    TrainOptions,
    check_sequence_data,
    item_probabilities,
    load_sequences,
    validation_rows,
    write_json,
)
from tfrec_attn.tuning.hypermodel import OBJECTIVE, SASRecHyperModel
from tfrec_attn.tuning.report import (
    best_config,
    best_record,
    plot_trials,
    trial_records,
    write_best_config,
)
from tfrec_attn.tuning.search_space import SearchSpace
from tfrec_attn.tuning.settings import (
    check_resume,
    check_tuner,
    discard_other_searches,
    record_settings,
    trial_settings,
)
from tfrec_attn.tuning.tuners import TUNERS, SearchStopped, make_tuner
from tfrec_attn.validation import check_positive_int


@dataclasses.dataclass
class TuneOptions:
    """Everything one search needs; `pipelines/tune.py` fills it from flags and a YAML file.

    Args:
        train: the run options every trial shares: data and split, `batch_size`, the base
            `model:` fields, `epochs` per trial, `patience`, `max_train_minutes` per trial,
            and `output`, the tuning directory.
        tuner: `"random"`, `"bayesian"` or `"hyperband"`.
        max_trials: trials in the search, counting those of a resumed search.
        max_tune_minutes: wall-time budget of this call; `None` for none.
        search_space: per-field overrides of `DEFAULT_SEARCH_SPACE` (see `SearchSpace`).
        overwrite: start afresh instead of resuming the search in `train.output`.
    """

    train: TrainOptions = dataclasses.field(default_factory=TrainOptions)
    tuner: str = "random"
    max_trials: int = 10
    max_tune_minutes: float | None = None
    search_space: dict | None = None
    overwrite: bool = False

    def __post_init__(self):
        if self.tuner not in TUNERS:
            raise ValueError(f"tuner must be one of {list(TUNERS)}. Received: {self.tuner!r}")
        check_positive_int("max_trials", self.max_trials)
        if self.max_tune_minutes is not None and self.max_tune_minutes <= 0:
            raise ValueError(
                f"max_tune_minutes must be positive. Received: {self.max_tune_minutes}")
        self.space()  # fail before loading data on a bad search space

    def space(self) -> SearchSpace:
        return SearchSpace(self.search_space, base=self.train.model)


def run_tuning(options: TuneOptions) -> dict:
    """Searches the space; writes `tuning.json`, `best_config.yaml`, `tuning.png` to the output.

    Loads the data once (the same split as `tfrec-attn train`), then runs keras-tuner trials
    until `max_trials` exist or `max_tune_minutes` of search pass (a running trial stops at the
    end of its current batch; a fresh search always runs at least part of one trial).
    Re-running on the same output resumes the search unless `overwrite`; a resume must keep
    the tuner and the data and training options its trials ran with (`settings.check_tuner`,
    `settings.trial_settings`); `overwrite` discards the earlier search, whatever its tuner.

    Returns:
        The report written to `tuning.json`.

    Raises:
        TuneSettingsError: on a resume with another tuner or other trial settings, before
            anything is written.
    """
    train = options.train
    out = Path(train.output)
    settings = trial_settings(train)
    if not options.overwrite:
        check_tuner(out, options.tuner)  # one search per output: another tuner's is refused
        check_resume(out / options.tuner, settings)  # keras-tuner's project directory
    keras.utils.set_random_seed(train.seed)
    space = options.space()
    data, split = load_sequences(train)
    check_sequence_data(train, data, split)  # as `tfrec-attn train` does, before any trial
    out.mkdir(parents=True, exist_ok=True)
    vocab_size = data.vocab_size
    base, chosen = choose_data_defaults(train.model, split.train)  # as `tfrec-attn train` does
    max_len = SASRecConfig(vocab_size=vocab_size, **base).max_len

    def dataset():  # one per trial: every trial shuffles as `tfrec-attn train` does
        return make_training_dataset(split.train, max_len, train.batch_size, seed=train.seed,
                                     sliding=train.sliding)

    started = time.monotonic()  # the budget covers the search, not loading the data
    minutes = options.max_tune_minutes
    deadline = None if minutes is None else started + 60.0 * minutes
    rows = validation_rows(len(split.valid_targets), train.valid_users, train.seed)
    hypermodel = SASRecHyperModel(
        vocab_size, space, base=base, learning_rate=train.learning_rate,
        item_probabilities=item_probabilities(split.train, vocab_size),
        valid_histories=[split.valid_histories[i] for i in rows],
        valid_targets=split.valid_targets[rows], protocol=train.eval_protocol,
        patience=train.patience, deadline=deadline, trial_minutes=train.max_train_minutes,
        seed=train.seed, data_chosen=chosen)
    if options.overwrite:  # the output holds this search only
        discard_other_searches(out, options.tuner)
    tuner = make_tuner(options.tuner, hypermodel, out, max_trials=options.max_trials,
                       max_epochs=train.epochs, seed=train.seed, overwrite=options.overwrite,
                       deadline=deadline)
    record_settings(tuner.project_dir, settings)  # after `overwrite` has cleared the directory
    stopped = False
    try:
        tuner.search(dataset, epochs=train.epochs, verbose=train.verbose)
    except SearchStopped as stop:
        stopped = stop.by_time_budget
    stopped = stopped or (deadline is not None and time.monotonic() >= deadline)
    records = trial_records(tuner.oracle.trials.values(), list(space.entries))
    best = best_record(records)
    if best is None:
        errors = "; ".join(r.get("error", r["status"]) for r in records) or "no trial ran"
        raise RuntimeError(f"tuning produced no scored trial in {out}: {errors}")
    report = {
        "tuner": options.tuner,
        "objective": {"name": OBJECTIVE.name, "direction": OBJECTIVE.direction},
        "eval_protocol": train.eval_protocol,
        "max_trials": options.max_trials,
        "epochs_per_trial": train.epochs,
        "search_space": space.to_dict(),
        "dataset": {"name": train.data or "synthetic", "format": train.format,
                    "users": data.num_users, "items": vocab_size - 2,
                    "interactions": data.num_interactions, "valid_rows": len(rows)},
        "stopped_by_time_budget": stopped,
        "search_seconds": round(time.monotonic() - started, 2),
        "keras_tuner_dir": os.fspath(tuner.project_dir),
        "trials": records,
        "best": best,
    }
    out = out.absolute()  # the config and the command it prints work from any directory
    config = best_config(train, best["hyperparameters"], os.fspath(out / "best_run"))
    write_best_config(config, out / "best_config.yaml",
                      f"Best of {len(records)} {options.tuner} trials: trial {best['trial_id']}, "
                      f"val NDCG@10 = {best[OBJECTIVE.name]:.4f} ({train.eval_protocol})"
                      + (f"; the time budget cut it after {best['epochs']} of {train.epochs} "
                         "epochs (a run of this config trains up to all of them)"
                         if best["stopped_by_time_budget"] else "") + ".\n"
                      f"tfrec-attn train --config {out / 'best_config.yaml'}")
    report["best_config"] = os.fspath(out / "best_config.yaml")
    report["plot"] = os.fspath(plot_trials(records, out / "tuning.png"))
    write_json(out / "tuning.json", report)
    return report
