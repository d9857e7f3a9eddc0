"""One training run end to end: data -> fit -> evaluate (+ baselines) -> report -> export."""

import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tfrec_attn._keras import keras, tf
from tfrec_attn.data import (
    build_sequences,
    generate_synthetic,
    leave_one_out,
    make_training_dataset,
    pad_left,
    read_interactions,
)
from tfrec_attn.evaluation import evaluate, evaluate_baselines
from tfrec_attn.evaluation._ids import FIRST_ITEM_ID
from tfrec_attn.evaluation.oracle import SyntheticOracle
from tfrec_attn.evaluation.protocols import fewest_negatives, parse_protocol
from tfrec_attn.export import export_saved_model
from tfrec_attn.export.serving import read_models_config, write_models_config
from tfrec_attn.models import SASRec, SASRecConfig, build_scoring_model
from tfrec_attn.training.backup import CompletedStage, RunBackup, remove_backup
from tfrec_attn.training.callbacks import (
    RANKING_CUTOFFS,
    EpochTimer,
    RankingEvaluation,
    TimeBudget,
)
from tfrec_attn.training.data_defaults import choose_data_defaults, choose_refit
from tfrec_attn.training.distribution import (
    any_worker,
    check_cluster_batch,
    is_chief,
    make_strategy,
    output_dir,
    replica_batch_size,
    shard_by_data,
)
from tfrec_attn.training.fitting import FitResult, fit_with_run_callbacks, resume_identity
from tfrec_attn.training.plots import plot_training_curves
from tfrec_attn.training.run_options import (
    RunOptions,
    check_data_source,
    check_int_at_least,
    check_non_negative_number,
    check_output_dir,
    check_positive_numbers,
    check_synthetic_sizes,
    data_source,
    model_config,
    replacing_run,
    require_full_batch,
)
from tfrec_attn.training.scoring import make_score_fn
from tfrec_attn.training.transition_prior import (
    fill_item_item,
    fill_transition_prior,
    fit_item_item,
    fit_transition_prior,
)
from tfrec_attn.training.weight_averaging import WeightAveraging
from tfrec_attn.validation import (
    DataOptionError,
    check_optional_positive_int,
    check_positive_ints,
)

MONITOR = "ndcg@10"
SAMPLED_NEGATIVES = 100  # `evaluate`'s default: "sampled" is "sampled-100"
# A run's `SASRecConfig.transition_neighbors` unless its config sets one (0 turns the prior
# off): successors kept per item. 50 ranked as 100 and the whole rows on ML-100K, and 20 as 100
# on Amazon Toys (BENCHMARKS 3m); the table costs vocab x width x 8 bytes in every export.
TRANSITION_NEIGHBORS = 50
# And its `item_item_neighbors` (the prior's EASE table, BENCHMARKS 3p) on catalogues of at most
# ITEM_ITEM_MAX_ITEMS items: EASE inverts an items x items matrix, a few such matrices at once
# (2,048 items: 164 MB and 2 s measured; 4,096: about 650 MB and 15 s, for each of its 4 L2
# weights). Asked for explicitly, it is refused above ITEM_ITEM_LIMIT items (about 10 GB).
ITEM_ITEM_NEIGHBORS = 200
ITEM_ITEM_MAX_ITEMS = 4096
ITEM_ITEM_LIMIT = 16384
# in --backup-dir while the run refits: the first fit, the refit's epochs, the refitted model
FITTED_STAGE, REFIT_BACKUP, REFITTED_STAGE = "sasrec_fitted", "refit", "sasrec_refitted"


@dataclasses.dataclass
class TrainOptions(RunOptions):
    """Everything one SASRec run needs; `pipelines/train.py` fills it from flags and a YAML
    file. The fields every run type shares (`data`, `format`, `export_root`, `seed`,
    `strategy`, ...) are `RunOptions`'."""

    output: str = "runs/latest"
    name: str = "sasrec"
    export_k: int = 10
    epochs: int = 200
    batch_size: int = 128
    learning_rate: float = 3e-3  # measured best of 1e-3 / 3e-3 (docs/BENCHMARKS.md)
    patience: int = 5
    eval_protocol: str = "full"
    min_events: int = 3
    synthetic_users: int = 2000
    synthetic_items: int = 1000
    synthetic_length: float = 30.0
    sliding: bool = True
    valid_users: int | None = 10000  # validation subsample for per-epoch early stopping
    # after early stopping, a fresh model trains on the training and validation events for the
    # best epoch count, and is the one tested, saved and exported (`_refit`); None: chosen
    # from the training data (on for short histories; data_defaults.choose_refit)
    refit: bool | None = None
    model: dict = dataclasses.field(default_factory=dict)  # SASRecConfig fields; max_len,
    # dropout and exclude_seen, when absent, are chosen from the training data (data_defaults.py)

    def __post_init__(self):
        check_data_source(self)
        check_model_options(self.model)
        check_positive_ints(self, ("epochs", "batch_size"))
        check_int_at_least(self, "patience", 0)
        check_int_at_least(self, "min_events", 3, " (leave-one-out holds out two events a user)")
        check_optional_positive_int("valid_users", self.valid_users)
        check_positive_numbers(self, ("learning_rate", "max_train_minutes"))
        check_synthetic_sizes(self)
        super().__post_init__()


def check_model_options(model: dict) -> None:
    """The SASRec fields in `model` are known and valid, checked before any data is read.

    Fields left to the data (`None`: `max_len`, `dropout`, `exclude_seen`) take
    `SASRecConfig`'s defaults for the check, and `loss="auto"` the objective the other fields
    need (the catalogue size decides it later).

    Example:
    >>> check_model_options({"dim": 30, "num_heads": 4})
    Traceback (most recent call last):
    ...
    ValueError: dim (30) must be divisible by num_heads (4)
    """
    fields = {name: value for name, value in model.items() if value is not None}
    if "l2" in fields:
        check_non_negative_number(fields, "l2")
    if fields.get("loss", "auto") == "auto":
        fields["loss"] = "sampled" if fields.get("uniform_negatives") else "softmax"
    fields.setdefault("transition_neighbors", TRANSITION_NEIGHBORS)  # as `_run` sets it
    model_config(SASRecConfig, fields, vocab_size=3)


def load_data(options: TrainOptions):
    """The interaction frame for `options` (a reader, or the seeded synthetic generator)."""
    if options.format == "synthetic":
        return generate_synthetic(num_users=options.synthetic_users,
                                  num_items=options.synthetic_items,
                                  mean_length=options.synthetic_length, seed=options.seed)
    return read_interactions(options.data, options.format, on_error=options.on_error)


def skipped_lines(frame) -> dict:
    """`{"skipped_lines": n}` when a reader skipped malformed lines (`on_error="skip"`), else
    `{}` (for `metrics.json`'s `dataset`)."""
    report = frame.attrs.get("report") or {}
    return {"skipped_lines": report["skipped"]} if report.get("skipped") else {}


def load_sequences(options: TrainOptions, frame=None):
    """`(data, split)`: the run's sequences and leave-one-out split, deterministic in `options`.

    The one definition of a run's data; `run_dir.load_run` rebuilds the same split from it.
    `frame` is `load_data(options)` when the caller already has it.
    """
    frame = load_data(options) if frame is None else frame
    data = build_sequences(frame, min_events=options.min_events)
    return data, leave_one_out(data)


def synthetic_oracle(options: TrainOptions, frame, vocab) -> SyntheticOracle | None:
    """The Bayes-optimal scorer (the ceiling) when the run's data come from the generator:
    fitted on the run's interactions `frame`, scoring in the run's item `vocab` ids."""
    if options.format != "synthetic":
        return None
    return SyntheticOracle.from_frame(frame, vocab)


def data_flags(options: RunOptions) -> str:
    """The flags that chose the run's data, for messages (any run type's options)."""
    if options.format == "synthetic":
        return (f"--synthetic-users {options.synthetic_users} --synthetic-items "
                f"{options.synthetic_items} --synthetic-length {options.synthetic_length}")
    return f"--data {options.data}"


def check_users_kept(options: RunOptions, data) -> None:
    """Right after `build_sequences`: some user has the `min_events` events it asks for;
    otherwise a `DataOptionError` naming the data and how many users were dropped (every run
    type's, before its own checks would report an empty catalogue in other words)."""
    if data.num_users:
        return
    raise DataOptionError(
        f"{data_flags(options)}: no user has the {options.min_events} events --min-events "
        f"asks for ({len(data.dropped_users)} users, all dropped)")


def check_trainable(options: RunOptions, data, split) -> None:
    """Before training: some user's training part (its events but the last two, which are the
    validation and test targets) has the 2 items a training example needs (SASRec's and DIN's
    runs; `split.train` holds those parts); otherwise a `DataOptionError` naming the data and
    how many users `min_events` and the split kept."""
    trainable = sum(len(s) >= 2 for s in split.train)
    if trainable:
        return
    raise DataOptionError(
        f"{data_flags(options)}: no user to train on: {data.num_users} users kept and "
        f"{len(data.dropped_users)} dropped by --min-events {options.min_events}, and none of "
        "the kept has a training sequence of 2 items after leave-one-out holds out its last 2 "
        "events (a user needs at least 4 events; every row is one event, repeats of an item "
        "included).")


def check_catalogue(options: RunOptions, vocab_size: int) -> None:
    """Before training: the catalogue has the `max(RANKING_CUTOFFS)` items the per-epoch
    ranking reports metrics at; otherwise a `DataOptionError` naming the data (a smaller one
    trained an epoch, then failed in the evaluation)."""
    items, needed = vocab_size - FIRST_ITEM_ID, max(RANKING_CUTOFFS)
    if items < needed:
        raise DataOptionError(
            f"{data_flags(options)}: {items} items; a run ranks the catalogue at cut-offs up to "
            f"{needed} (HR@{needed}, NDCG@{needed}), so it needs at least {needed} items")


def check_sequence_data(options: TrainOptions, data, split) -> None:
    """Before training a SASRec (a `train` run, or a `tune` search's trials): the checks of
    the data and split, in order `check_users_kept`, `check_trainable`, `check_catalogue`,
    `check_eval_protocol`; a `DataOptionError` names the first that fails."""
    check_users_kept(options, data)
    check_trainable(options, data, split)
    check_catalogue(options, data.vocab_size)
    check_eval_protocol(options.eval_protocol, split, data.vocab_size)


def check_eval_protocol(protocol: str, split, vocab_size: int) -> None:
    """Before training: a sampled protocol's negatives fit the catalogue for every validation
    and test user (`protocols.sample_negatives`' condition: that many real items outside the
    user's history and target); otherwise a `DataOptionError` naming `--eval-protocol`."""
    count = parse_protocol(protocol, SAMPLED_NEGATIVES)
    if count is None:
        return
    smallest = fewest_negatives([*split.valid_histories, *split.test_histories],
                                [*split.valid_targets, *split.test_targets], vocab_size)
    if smallest is not None and smallest < count:
        raise DataOptionError(
            f"--eval-protocol {protocol} samples {count} negatives a user, but the catalogue "
            f"has {vocab_size - FIRST_ITEM_ID} items and some validation / test user has only "
            f"{smallest} outside its history: use --eval-protocol full.")


def item_probabilities(train: list[np.ndarray], vocab_size: int) -> np.ndarray:
    """Empirical item frequencies in the training positions (the sampled loss's log-Q)."""
    counts = np.bincount(np.concatenate(train), minlength=vocab_size).astype(np.float64)
    counts += 1e-3  # unseen items keep a tiny probability instead of log(0)
    return counts / counts.sum()


def compile_sasrec(config: SASRecConfig, learning_rate: float, probabilities=None,
                   jit_compile: bool = False,
                   strategy: tf.distribute.Strategy | None = None) -> SASRec:
    """A `SASRec` compiled with Adam at `learning_rate`, its variables created under `strategy`
    (default: the current one); `probabilities` are `item_probabilities` (sampled loss).

    The one place a run's model is made: `build_model` and the tuning hypermodel call it. The
    model is called once, on padding, so that it is built: Keras' `BackupAndRestore` (the run's
    `--backup-dir`) warns that an unbuilt model "must be built before you call fit()".
    """
    with (strategy or tf.distribute.get_strategy()).scope():
        model = SASRec(config, item_probabilities=probabilities)
        model(tf.zeros((1, config.max_len), tf.int64))
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), jit_compile=jit_compile)
    return model


def build_model(options: TrainOptions, vocab_size: int, train,
                strategy: tf.distribute.Strategy | None = None) -> SASRec:
    """A compiled `SASRec`, its variables created under `strategy` (default: the current one)."""
    return compile_sasrec(SASRecConfig(vocab_size=vocab_size, **options.model),
                          options.learning_rate, item_probabilities(train, vocab_size),
                          options.jit_compile, strategy)


def validation_rows(count: int, limit: int | None, seed: int) -> np.ndarray:
    """The seeded, sorted subsample of `limit` validation rows evaluated each epoch (all rows
    when there are no more than `limit`).

    >>> validation_rows(4, None, 0).tolist(), len(validation_rows(10, 3, 0))
    ([0, 1, 2, 3], 3)
    """
    rows = np.arange(count)
    if limit and count > limit:
        rows = np.sort(np.random.default_rng(seed).choice(rows, limit, replace=False))
    return rows


def training_dataset(train, max_len: int, options: TrainOptions) -> tf.data.Dataset:
    """The run's training batches. Under `jit_compile` every batch has the one shape
    `(batch_size, max_len)` (no bucketing or trimming, last partial batch dropped), so XLA
    compiles the train step once instead of once per bucket width."""
    fixed = options.jit_compile
    dataset = make_training_dataset(train, max_len, options.batch_size, seed=options.seed,
                                    sliding=options.sliding, trim=not fixed, bucket=not fixed,
                                    drop_remainder=fixed)
    if fixed:
        require_full_batch(dataset, f"the {len(train)} training sequences", options.batch_size)
    return dataset


def _fit(model, split, options: TrainOptions, vocab_size: int, out: Path,
         extra_callbacks=(), source: dict | None = None) -> tuple[FitResult, Callable]:
    max_len = model.config.max_len
    dataset = shard_by_data(training_dataset(split.train, max_len, options))
    score_fn = make_score_fn(model.scorer, max_len)
    rows = validation_rows(len(split.valid_targets), options.valid_users, options.seed)
    evaluation = RankingEvaluation(score_fn, [split.valid_histories[i] for i in rows],
                                   split.valid_targets[rows], vocab_size,
                                   protocol=options.eval_protocol, seed=options.seed)
    fitted = fit_with_run_callbacks(model, dataset, evaluation, options, MONITOR,
                                    out / "tensorboard", extra_callbacks, source)
    return fitted, score_fn


def run_training(options: TrainOptions, callbacks=()) -> dict:
    """Trains, evaluates and exports one model; writes `metrics.json` and curves to `output`.

    Training early-stops on validation NDCG@10; with `options.refit` (by default chosen from
    the data, `data_defaults.choose_refit`) a fresh model then trains on the training and
    validation events for the best epoch count and is the model tested, saved and exported
    (`_refit`).

    With `options.strategy` the model trains on several devices or machines (global batch
    `batch_size`); only the chief writes to `output` and `export_root`, other workers write to
    temporary directories that are deleted afterwards. With `options.backup_dir` a restarted
    run resumes after the last completed epoch (`RunBackup`). A `models.config` under
    `export_root` that the export could not merge into fails before training.

    Args:
        options: the run's options.
        callbacks: extra Keras callbacks, run after the run's own ones.

    Returns:
        The metrics dict written to `output/metrics.json` (plus `"export_path"`).
    """
    return run_under_strategy(options, _run, callbacks)


def run_under_strategy(options: RunOptions, run: Callable, callbacks=()) -> dict:
    """The preamble of every run type (`run_training`, `run_ranking_training`,
    `run_autoencoder_training`, `run_policy_training`), then
    `run(options, strategy, out, export_root, callbacks)`.

    In order: `strategy = make_strategy(options.strategy)` (made first: multi-worker configures
    TF at startup) and a check that the global `options.batch_size` splits evenly over its
    replicas; the seed (`keras.utils.set_random_seed(options.seed)`); a `models.config` under
    `options.export_root` the export could not merge into fails now (`read_models_config`),
    not after training; a finished run already in `out` is refused unless `options.overwrite`
    (`check_output_dir`, which only checks); `out`, the run's directory, is created (and
    removed again if the run fails before writing to it): the chief's `options.output`,
    elsewhere a temporary directory deleted afterwards (`output_dir`); `export_root` is where
    this process exports (`export_dir`). While `run` runs, the files of a finished run it
    replaces (`RUN_OWN_FILES`: weights, vocabulary, curves; `DERIVED_RUN_FILES`: evaluate /
    optimize reports, TensorBoard logs) are kept aside, deleted once `run` returns (it wrote
    its `metrics.json`) and put back if it fails, so a failed `--overwrite` (bad data, a check
    after the data are read, a crash, a failed export) loses nothing (`replacing_run`).

    Args:
        options: the run's options (a `RunOptions` subclass with `output` and
            `batch_size`).
        run: the run type's body.
        callbacks: extra Keras callbacks, passed on to `run`.

    Returns:
        What `run` returns (the run's metrics dict).
    """
    check_cluster_batch(options.batch_size, options.strategy)  # before waiting for peers
    strategy = make_strategy(options.strategy)
    replica_batch_size(options.batch_size, strategy)
    keras.utils.set_random_seed(options.seed)
    if options.export_root:
        read_models_config(Path(options.export_root) / "models.config")
    with output_dir(options.output, strategy) as out:
        check_output_dir(out, options.overwrite)
        created = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        export_root = export_dir(options.export_root, strategy, out)
        try:
            with replacing_run(out):
                return run(options, strategy, out, export_root, callbacks)
        except BaseException:
            if created and not any(out.iterdir()):  # e.g. bad data: leave no empty directory
                out.rmdir()
            raise


def export_dir(export_root: str | None, strategy: tf.distribute.Strategy, out: Path):
    """Where this process exports: `export_root` on the chief, `out / "export"` (a scratch
    directory) on the other workers, which must save too (collective ops stay in step)."""
    return export_root if is_chief(strategy) else out / "export"


def _run(options: TrainOptions, strategy: tf.distribute.Strategy, out: Path,
         export_root: str | Path | None, callbacks=()) -> dict:
    frame = load_data(options)
    source = data_source(options)  # the bytes just read
    data, split = load_sequences(options, frame)
    vocab_size = data.vocab_size
    check_sequence_data(options, data, split)
    fields, chosen = choose_data_defaults(options.model, split.train)
    fields.setdefault("transition_neighbors", TRANSITION_NEIGHBORS)
    if fields["transition_neighbors"] and vocab_size - 2 <= ITEM_ITEM_MAX_ITEMS:
        fields.setdefault("item_item_neighbors", ITEM_ITEM_NEIGHBORS)
    if fields.get("item_item_neighbors") and vocab_size - 2 > ITEM_ITEM_LIMIT:
        raise DataOptionError(
            f"{data_flags(options)}: {vocab_size - 2} items; --item-item-neighbors needs EASE's "
            f"items x items inverse, refused above {ITEM_ITEM_LIMIT} items (memory): use "
            "--item-item-neighbors 0")
    refit_on, refit_choice = choose_refit(options.refit, split.train)
    chosen.update(refit_choice)
    options = dataclasses.replace(options, model=fields, refit=refit_on)
    if options.verbose and chosen:
        print("Chosen from the training data: " + "; ".join(
            f"{name}={choice['value']} ({choice['reason']})" for name, choice in chosen.items()))
    model = build_model(options, vocab_size, split.train, strategy)
    first = _first_fit(model, split, options, vocab_size, out, strategy, source, callbacks)
    protocol = options.eval_protocol
    history, records = first["history"], first["records"]
    best = max(records, key=lambda r: r.get(MONITOR, -1.0)) if records else {}
    refit = {}  # the refit's report (`_refit`); empty without one
    if options.refit:
        refitted, refit = _refit(options, split, vocab_size, best.get("epoch"), first, out,
                                 strategy, source)
        if refitted is not None:
            model = refitted
        elif options.verbose:
            print(f"Refit not done: {refit['skipped']}; the first model is the run's")
    train_seconds = first["train_seconds"] + refit.get("seconds", 0.0)
    trained_on = trained_sequences(split, refit)
    prior, test = first["prior"], first["test"]
    if refit.get("done"):  # the refitted model's figures; the first model's in "refit"
        refit["test_before_refit"] = test
        test, prior = _test_metrics(model, split, vocab_size, options)
        prior = first["prior"] and {**first["prior"], **prior}
    baselines = evaluate_baselines(trained_on, split.test_histories, split.test_targets,
                                   vocab_size, protocol, seed=options.seed)
    valid_baselines = evaluate_baselines(split.train, split.valid_histories, split.valid_targets,
                                         vocab_size, protocol, seed=options.seed)
    oracle = synthetic_oracle(options, frame, data.vocab)
    metrics = {
        "test": test,
        "valid": {k: v for k, v in best.items()
                  if k not in ("epoch", "epoch_seconds", "elapsed_seconds")},
        "best_epoch": best.get("epoch"),
        **({"transition_prior": prior} if prior else {}),
        **({"refit": refit} if refit else {}),
        # fitted on the events the tested model trained on (with the refit, validation's too)
        "baselines": baselines,
        **({"oracle": evaluate(oracle.score, split.test_histories, split.test_targets,
                               vocab_size, protocol, seed=options.seed)} if oracle else {}),
        "train_seconds": round(train_seconds, 2),
        "epochs": len(history.get("loss", [])),
        # the budget stopped the first fit, or a refit (one that trained but is not done:
        # dropped, `refit.skipped`)
        "stopped_by_time_budget": first["stopped"] or bool(
            refit.get("seconds") and not refit["done"]),
        # epochs restored from --backup-dir (0: trained from scratch)
        "resumed_epochs": first["resumed_epochs"],
        "protocol": protocol,
        # name: --data as given; path, fingerprint: what `load_run` reloads and checks
        "dataset": {"name": options.data or "synthetic", **source, "format": options.format,
                    "users": data.num_users, "items": vocab_size - 2,
                    "interactions": data.num_interactions, **skipped_lines(frame)},
        "model": model.config.to_dict(),
        # model fields and the refit chosen from the data (data_defaults.py)
        "data_defaults": chosen,
        "options": {k: v for k, v in dataclasses.asdict(options).items() if k != "model"},
        "history": {"loss": [float(x) for x in history.get("loss", [])], "valid": records},
    }
    plot_training_curves(history, records, out / "training_curves.png", valid_baselines)
    data.vocab.to_json(out / "item_vocabulary.json")
    model.save_weights(str(out / "checkpoint" / "weights"))
    if options.export_root:
        warmup = pad_left(split.valid_histories[:100], model.config.max_len)
        path = export_saved_model(model, export_root, options.name, k=options.export_k,
                                  metadata={"metrics": {"test": test, "protocol": protocol},
                                            # trained on the validation events too
                                            "refit": bool(refit.get("done"))},
                                  warmup_histories=warmup)
        record_export(metrics, export_root, options.name, path)
    write_json(out / "metrics.json", metrics)
    if options.backup_dir:  # the whole run is done
        remove_backup(options.backup_dir, (FITTED_STAGE, REFIT_BACKUP, REFITTED_STAGE),
                      strategy)
    return metrics


def _test_metrics(model: SASRec, split, vocab_size: int,
                  options: TrainOptions) -> tuple[dict, dict]:
    """`(test, prior)`: `model`'s test metrics, and with a transition prior
    `{"test_without_prior": the model's own share's}` (else `{}`)."""
    protocol, max_len = options.eval_protocol, model.config.max_len
    prior = {}
    if model.transition_prior is not None:
        prior["test_without_prior"] = evaluate(
            make_score_fn(build_scoring_model(model.encoder), max_len), split.test_histories,
            split.test_targets, vocab_size, protocol, seed=options.seed)
    test = evaluate(make_score_fn(model.scorer, max_len), split.test_histories,
                    split.test_targets, vocab_size, protocol, seed=options.seed)
    return test, prior


def _first_fit(model: SASRec, split, options: TrainOptions, vocab_size: int, out: Path,
               strategy: tf.distribute.Strategy, source: dict, callbacks=()) -> dict:
    """Trains `model` with early stopping on validation, fits its transition prior (the table
    from `split.train`, the weight on validation) and tests it.

    Returns `{"history", "records", "stopped", "resumed_epochs", "train_seconds", "prior"
    (`fit_transition_prior`'s report and "test_without_prior", or `None`), "test"}`. With
    `--backup-dir` and the refit, the fit (its weights and report) is kept as a
    `CompletedStage` as soon as it ends, until the run is done: a run restarted later is not
    trained again (its prior and test are computed again, as they were), unless the stage is
    not every worker's to read. `source` (the data file's fingerprint) is part of the stage's
    identity: a file changed since is not reused.
    """
    # read with any backup (a kept stage of a run with other settings, --no-refit included,
    # is refused), written only when a refit follows
    stage, result = _kept_stage(options, FITTED_STAGE, model, source, strategy)
    if result is not None:
        result["resumed_epochs"] = len(result["history"].get("loss", []))  # all restored
    else:
        started = time.monotonic()
        fitted, _ = _fit(model, split, options, vocab_size, out, callbacks, source)
        result = {"history": {name: [float(x) for x in values]
                              for name, values in fitted.history.items()},
                  "records": fitted.records, "stopped": fitted.budget.stopped,
                  "resumed_epochs": fitted.resumed_epochs,
                  # + the seconds before a restart
                  "train_seconds": time.monotonic() - started + fitted.budget.previous}
        if stage and options.refit:
            stage.save(model.get_weights(), result, strategy)
    prior = None
    if model.transition_prior is not None:  # the table from train, its weight on validation
        prior = fit_transition_prior(model, split.train, split.valid_histories,
                                     split.valid_targets, options.eval_protocol,
                                     seed=options.seed)
        if model.config.item_item_neighbors:  # then the EASE term's l2 and weight
            prior["item_item"] = fit_item_item(model, split.train, split.valid_histories,
                                               split.valid_targets, options.eval_protocol,
                                               seed=options.seed)
    test, without = _test_metrics(model, split, vocab_size, options)
    return {**result, "prior": prior and {**prior, **without}, "test": test}


def _kept_stage(options: TrainOptions, name: str, model: SASRec, source: dict | None,
                strategy: tf.distribute.Strategy) -> tuple[CompletedStage | None, dict | None]:
    """`(stage, results)`: the `CompletedStage` `name` in `--backup-dir` (`None` without one;
    its identity: the run's options, the model's size and the data's `source` fingerprint), and
    the results it kept, with its weights set on `model`; `None` when it kept none, or when
    some worker cannot read it (all workers restore, or none)."""
    if not options.backup_dir:
        return None, None
    stage = CompletedStage(options.backup_dir, name,
                           resume_identity(model, options, source))
    restored = stage.load()
    if any_worker(restored is None, strategy):
        return stage, None
    model.set_weights(restored[0])
    return stage, restored[1]


def refit_sequences(split) -> list[np.ndarray]:
    """Every user's training events followed by its validation target: what `_refit` trains
    on (the test target stays held out; for `leave_one_out`, each user's test history).

    >>> from tfrec_attn.data import SequenceData, Vocabulary
    >>> split = leave_one_out(SequenceData([np.array([2, 3, 4, 5])], ["u"],
    ...                                    Vocabulary(list("abcd"))))
    >>> [s.tolist() for s in split.train], [s.tolist() for s in refit_sequences(split)]
    ([[2, 3]], [[2, 3, 4]])
    """
    return [np.append(train, target).astype(np.int64)
            for train, target in zip(split.train, split.valid_targets)]


def trained_sequences(split, refit: dict | None) -> list[np.ndarray]:
    """The sequences the model a run saved was trained on: `refit_sequences(split)` when its
    refit report (`metrics["refit"]`, `_refit`'s) says the refit was done, else `split.train`
    (no report: runs without a refit, and runs written before the refit existed)."""
    return refit_sequences(split) if (refit or {}).get("done") else split.train


def _refit(options: TrainOptions, split, vocab_size: int, epochs: int | None, first: dict,
           out: Path, strategy: tf.distribute.Strategy | None,
           source: dict | None = None) -> tuple[SASRec | None, dict]:
    """Trains a fresh model (the run's seed, settings and transition prior weight) on
    `refit_sequences(split)` for the first fit's best `epochs`, without validation (its
    targets are training targets now).

    The validation target is each user's most recent event before the test target: a model
    that never trained on it misses the latest transitions and popularity (docs/BENCHMARKS.md
    section 11b). The refit shares the time budget: it is skipped when the time left is less
    than `epochs` epochs of the first fit (scaled by the events added), on every worker when on
    any, and dropped if the budget still stops it; the first fit's model is then the run's.
    With `--backup-dir` it resumes after its last completed epoch (`backup_dir/refit`), and
    the refitted model is kept (`backup_dir/sasrec_refitted`) until the run is done; `source`
    (the data file's fingerprint) is part of their identity.

    Returns:
        `(model, report)`: the refitted model or `None`, and `{"done", "epochs", "events",
        "seconds", "epoch_seconds", "resumed_epochs"}` (epochs restored from the backup), or
        `{"done": False, "skipped": why}` (with `"seconds"` when it trained).
    """
    strategy = strategy or tf.distribute.get_strategy()
    if not epochs:
        return None, {"done": False, "skipped": "no validation record to take the epochs from"}
    sequences = refit_sequences(split)
    events = int(sum(len(s) for s in sequences))
    keras.utils.set_random_seed(options.seed)
    model = build_model(options, vocab_size, sequences, strategy)
    stage, report = _kept_stage(options, REFITTED_STAGE, model, source, strategy)
    if report is not None:
        return model, {**report, "resumed_epochs": epochs}
    seconds = [r["epoch_seconds"] for r in first["records"] if "epoch_seconds" in r]
    expected = (float(np.median(seconds)) * epochs * events
                / max(1, sum(len(s) for s in split.train))) if seconds else 0.0
    left = (None if options.max_train_minutes is None
            else options.max_train_minutes * 60.0 - first["train_seconds"])
    if any_worker(left is not None and (first["stopped"] or expected > left), strategy):
        return None, {"done": False, "skipped": (
            f"--max-train-minutes {options.max_train_minutes:g} leaves {max(left, 0.0):.0f} s; "
            f"{epochs} epoch{'s' * (epochs != 1)} on training + validation events take "
            f"about {expected:.0f} s")}
    if options.verbose:
        print(f"Refitting on training + validation events ({events} events) for the best "
              f"{epochs} epochs")
    dataset = shard_by_data(training_dataset(sequences, model.config.max_len, options))
    timer, budget = EpochTimer(), TimeBudget(None if left is None else left / 60.0)
    backup = ([RunBackup(Path(options.backup_dir) / REFIT_BACKUP, tracked=[timer, budget],
                         identity=stage.identity)] if stage else [])
    averaging = [WeightAveraging(options.ema_decay)] if options.ema_decay is not None else []
    started = time.monotonic()
    model.fit(dataset, epochs=epochs, verbose=options.verbose, callbacks=[
        *backup, timer, *averaging, budget,
        keras.callbacks.TensorBoard(log_dir=str(out / "tensorboard" / "refit"))])
    spent = time.monotonic() - started + budget.previous
    if budget.stopped:
        return None, {"done": False, "skipped": (
            f"the --max-train-minutes budget stopped the refit after {spent:.0f} s, before "
            f"its {epochs} epoch{'s' * (epochs != 1)}"), "seconds": round(spent, 2)}
    if model.transition_prior is not None:
        fill_transition_prior(model, sequences, first["prior"]["mix"])
        if "item_item" in first["prior"]:
            chosen = first["prior"]["item_item"]
            fill_item_item(model, sequences, chosen["l2"], chosen["scale"])
    report = {"done": True, "epochs": epochs, "events": events, "seconds": round(spent, 2),
              "epoch_seconds": [round(float(x), 2) for x in timer.seconds],
              "resumed_epochs": backup[0].resumed_epochs if backup else 0}
    if stage:
        stage.save(model.get_weights(), report, strategy)
    return model, report


def record_export(metrics: dict, export_root: str | Path, name: str, path: str | Path) -> None:
    """Lists the exported model `name` in `export_root`'s TF Serving `models.config` (base path
    `/models/<name>`, where the README's `tensorflow/serving` command mounts the export root;
    `run_under_strategy` checked the file before training) and adds `"export_path"` to
    `metrics`. The last step of every run type's export."""
    write_models_config(Path(export_root) / "models.config", {name: f"/models/{name}"})
    metrics["export_path"] = os.fspath(path)


def write_json(path: Path, payload: dict) -> None:
    """Writes via a temporary file and rename, so a crash never leaves half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=float))
    os.replace(tmp, path)


def read_json(path: Path, what: str) -> dict:
    """The JSON object in `path`; a file that is not one (edited, cut short) raises a
    `ValueError` naming `what`, the path and the parse error.

    Example:
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "metrics.json"
    >>> _ = path.write_text("{bad")
    >>> read_json(path, "Run metrics")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: Run metrics .../metrics.json is not a JSON object (Expecting property name ...
    """
    try:
        payload = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{what} {path} is not a JSON object ({err}); was it edited or cut "
                         "short?") from None
    if not isinstance(payload, dict):
        raise ValueError(f"{what} {path} is not a JSON object (it holds a "
                         f"{type(payload).__name__})")
    return payload


def results_table(metrics: dict) -> str:
    """A plain-text table of test metrics: model vs baselines."""
    keys = ["ndcg@10", "hr@10", "mrr", "ndcg@5", "hr@1", "coverage@10"]
    keys = [k for k in keys if k in metrics["test"]]
    rows = [("model", metrics["test"])]
    if "transition_prior" in metrics:  # the model's own share, before the prior's mixing
        rows.append(("model, no prior", metrics["transition_prior"]["test_without_prior"]))
    if metrics.get("refit", {}).get("done"):  # the first fit's model, before the refit
        rows.append(("model, no refit", metrics["refit"]["test_before_refit"]))
    rows += list(metrics["baselines"].items())
    if "oracle" in metrics:
        rows.append(("oracle (ceiling)", metrics["oracle"]))
    header = f"{'':17s}" + "".join(f"{k:>12s}" for k in keys)
    lines = [f"test ({metrics['protocol']} protocol, {metrics['dataset']['users']} users)", header]
    for name, values in rows:
        lines.append(f"{name:17s}" + "".join(f"{values[k]:12.4f}" for k in keys))
    return "\n".join(lines)
