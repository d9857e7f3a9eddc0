"""One DIN ranking run end to end (`tfrec-attn train --model din`): data -> fit -> evaluate
(+ popularity baseline) -> report -> export.

The data preparation is the families benchmark's (`benchmarking/families.py` calls
`ranking_split` and `build_ranker` too): leave-one-out; training rows from every position of
the training sequences (true next item against `negatives` unseen items); validation rows from
each user's second-to-last item against `valid_negatives` unseen items (seed + 1); test rows
from the last item against `test_negatives` unseen items (seed + 2).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from tfrec_attn._keras import keras, tf
from tfrec_attn.data import (
    build_sequences,
    leave_one_out,
    make_ranking_dataset,
    ranking_examples,
)
from tfrec_attn.data.sequences import SequenceData
from tfrec_attn.export import export_ranker
from tfrec_attn.models import DIN, DINConfig
from tfrec_attn.training.ctr_evaluation import CTREvaluation, evaluate_ranker, popularity_ctr
from tfrec_attn.training.distribution import shard_by_data
from tfrec_attn.training.fitting import FitResult, fit_with_run_callbacks
from tfrec_attn.training.plots import plot_training_curves
from tfrec_attn.training.run import (
    check_trainable,
    check_users_kept,
    load_data,
    record_export,
    run_under_strategy,
    skipped_lines,
    write_json,
)
from tfrec_attn.training.run_options import (
    RunOptions,
    check_data_source,
    check_int_at_least,
    check_positive_numbers,
    check_synthetic_sizes,
    data_source,
    model_config,
    require_full_batch,
)
from tfrec_attn.validation import DataOptionError, check_positive_ints

MONITOR = "auc"
WARMUP_USERS = 100  # validation requests written as TF Serving warm-up records
FIRST_VOCAB = 3  # the smallest catalogue (padding, OOV, one item): for checking model fields


@dataclasses.dataclass
class RankingOptions(RunOptions):
    """Everything one DIN run needs; `pipelines/train.py --model din` fills it from flags and
    a YAML file. Defaults are the families benchmark's DIN settings (docs/BENCHMARKS.md 9);
    the fields every run type shares (`data`, `format`, `export_root`, `seed`, `strategy`,
    ...) are `RunOptions`'.

    `negatives` are the sampled unseen items per training positive; `valid_negatives` /
    `test_negatives` per held-out positive. `model` holds `DINConfig` fields (not
    `vocab_size`, which comes from the data).
    """

    output: str = "runs/din"
    name: str = "din"
    epochs: int = 10
    batch_size: int = 256
    learning_rate: float = 1e-3
    patience: int = 2
    min_events: int = 3
    synthetic_users: int = 2000
    synthetic_items: int = 1000
    synthetic_length: float = 30.0
    negatives: int = 1
    valid_negatives: int = 20
    test_negatives: int = 100
    model: dict = dataclasses.field(default_factory=dict)  # DINConfig fields

    def __post_init__(self):
        check_data_source(self)
        check_positive_ints(self, ("epochs", "batch_size", "negatives", "valid_negatives",
                                   "test_negatives"))
        check_synthetic_sizes(self)
        check_int_at_least(self, "patience", 0)
        check_int_at_least(self, "min_events", 3,
                           " (leave-one-out holds out two events a user)")
        check_positive_numbers(self, ("learning_rate", "max_train_minutes"))
        super().__post_init__()
        self.model = dict(self.model or {})
        self.din_config(vocab_size=FIRST_VOCAB)  # checks the model fields before any data loads

    def din_config(self, vocab_size: int) -> DINConfig:
        """The run's `DINConfig` for a catalogue of `vocab_size` ids."""
        return model_config(DINConfig, self.model, vocab_size)


@dataclasses.dataclass
class RankingSplit:
    """Leave-one-out CTR rows: `train` sequences (rows made per epoch by
    `make_ranking_dataset`), `valid` / `test` `ranking_examples` (one group a user)."""

    train: list[np.ndarray]
    valid: dict
    test: dict
    valid_negatives: int
    test_negatives: int


def ranking_split(data: SequenceData, max_len: int, valid_negatives: int, test_negatives: int,
                  seed: int) -> RankingSplit:
    """The families benchmark's split of `data` (module docstring), deterministic in `seed`.

    Example:
    >>> from tfrec_attn.data import Vocabulary
    >>> data = SequenceData([np.array([2, 3, 4, 5])], ["u"], Vocabulary(list("abcdefgh")))
    >>> split = ranking_split(data, max_len=3, valid_negatives=2, test_negatives=3, seed=0)
    >>> split.train[0].tolist(), split.valid["history"][0].tolist(), len(split.test["label"])
    ([2, 3], [0, 2, 3], 4)
    """
    split = leave_one_out(data)
    before_test = [np.append(h, t) for h, t in zip(split.valid_histories, split.valid_targets)]
    valid = ranking_examples(before_test, max_len, data.vocab_size, valid_negatives,
                             seed=seed + 1, last_only=True)
    test = ranking_examples(data.sequences, max_len, data.vocab_size, test_negatives,
                            seed=seed + 2, last_only=True)
    return RankingSplit(split.train, valid, test, valid_negatives, test_negatives)


def build_ranker(config: DINConfig, learning_rate: float, run_eagerly: bool = False,
                 jit_compile: bool = False,
                 strategy: tf.distribute.Strategy | None = None) -> DIN:
    """A `DIN` compiled with Adam at `learning_rate`, its variables created under `strategy`
    (default: the current one); the one place a ranking run's model is made (the families
    benchmark calls it too). Called once, on padding, so that it is built, as `BackupAndRestore`
    (`--backup-dir`) asks."""
    with (strategy or tf.distribute.get_strategy()).scope():
        model = DIN(config)
        model({"history": tf.zeros((1, config.max_len), tf.int64),
               "candidate": tf.zeros((1,), tf.int64)})
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), run_eagerly=run_eagerly,
                      jit_compile=jit_compile)
    return model


def _fit(model: DIN, split: RankingSplit, options: RankingOptions, vocab_size: int, out: Path,
         extra_callbacks=(), source: dict | None = None) -> FitResult:
    fixed = options.jit_compile  # one batch shape: XLA compiles the train step once
    train = make_ranking_dataset(split.train, model.config.max_len, vocab_size,
                                 options.batch_size, options.negatives, seed=options.seed,
                                 drop_remainder=fixed)
    if fixed:
        rows = (1 + options.negatives) * sum(max(len(s) - 1, 0) for s in split.train)
        require_full_batch(train, f"the {rows} training rows", options.batch_size)
    evaluation = CTREvaluation(split.valid, split.valid_negatives)
    return fit_with_run_callbacks(model, shard_by_data(train), evaluation, options, MONITOR,
                                  out / "tensorboard", extra_callbacks, source)


def run_ranking_training(options: RankingOptions, callbacks=()) -> dict:
    """Trains, evaluates and exports one DIN ranker; writes `metrics.json`, the training
    curves, TensorBoard logs, the item vocabulary and the tower's weights to `output`, and
    adds the model to `export_root/models.config` (keeping the other models it serves).

    Early stopping on the validation AUC (`patience` epochs) restores the best epoch's weights
    before the test; `max_train_minutes` stops training cleanly mid-epoch. The callbacks are
    SASRec's (`fit_with_run_callbacks`): with `backup_dir` a restarted run resumes after the
    last completed epoch, with `ema_decay` epochs end on an average of the weights. As in
    SASRec runs, `strategy` trains on several devices or machines (global batch `batch_size`;
    only the chief writes `output` and `export_root`) and `jit_compile` XLA-compiles the train
    step on fixed-shape batches (the last partial batch of an epoch dropped).

    Args:
        options: the run's options.
        callbacks: extra Keras callbacks, run after the run's own ones.

    Returns:
        The metrics dict written to `output/metrics.json` (plus `"export_path"` when
        `export_root` is set): `test` / `valid` `{"auc", "gauc"}`, `baselines`
        `{"popularity": {"auc", "gauc"}}` on the test rows, `best_epoch`, `train_seconds`,
        `epochs`, `stopped_by_time_budget`, `resumed_epochs`, `dataset`, `model`, `options`,
        `history`.
    """
    return run_under_strategy(options, _run, callbacks)


def _run(options: RankingOptions, strategy: tf.distribute.Strategy, out: Path,
         export_root: str | Path | None, callbacks=()) -> dict:
    frame = load_data(options)
    source = data_source(options)  # the bytes just read
    data = build_sequences(frame, min_events=options.min_events)
    check_users_kept(options, data)
    config = options.din_config(data.vocab_size)
    for flag in ("negatives", "valid_negatives", "test_negatives"):
        if getattr(options, flag) > data.vocab_size - 3:  # every item but the positive
            raise DataOptionError(
                f"--{flag.replace('_', '-')} {getattr(options, flag)} is more than the "
                f"{data.vocab_size - 3} items of the data other than the positive (negatives "
                "are drawn with replacement, so most would repeat)")
    split = ranking_split(data, config.max_len, options.valid_negatives, options.test_negatives,
                          options.seed)
    check_trainable(options, data, split)
    model = build_ranker(config, options.learning_rate, jit_compile=options.jit_compile,
                         strategy=strategy)
    started = time.monotonic()
    fitted = _fit(model, split, options, data.vocab_size, out, callbacks, source)
    history, records = fitted.history, fitted.records
    train_seconds = time.monotonic() - started + fitted.budget.previous  # + before a restart
    test = evaluate_ranker(model.tower, split.test, split.test_negatives)
    best = max(records, key=lambda r: r[MONITOR]) if records else {}
    popularity = {name: popularity_ctr(split.train, rows, data.vocab_size, negatives)
                  for name, rows, negatives in (("test", split.test, split.test_negatives),
                                                ("valid", split.valid, split.valid_negatives))}
    metrics = {
        "test": test,
        "valid": {k: best[k] for k in ("auc", "gauc") if k in best},
        "best_epoch": best.get("epoch"),
        "baselines": {"popularity": popularity["test"]},
        "train_seconds": round(train_seconds, 2),
        "epochs": len(history.get("loss", [])),
        "stopped_by_time_budget": fitted.budget.stopped,
        "resumed_epochs": fitted.resumed_epochs,  # epochs restored from --backup-dir
        # name: --data as given; path, fingerprint: what `load_ranking_run` reloads and checks
        "dataset": {"name": options.data or "synthetic", **source, "format": options.format,
                    "users": data.num_users, "items": data.vocab_size - 2,
                    "interactions": data.num_interactions,
                    "test_rows": len(split.test["label"]),
                    "valid_rows": len(split.valid["label"]), **skipped_lines(frame)},
        "model": config.to_dict(),
        "options": {k: v for k, v in dataclasses.asdict(options).items() if k != "model"},
        "history": {"loss": [float(x) for x in history.get("loss", [])], "valid": records},
    }
    plot_training_curves(history, records, out / "training_curves.png",
                         {"popularity": popularity["valid"]}, metric=MONITOR)
    data.vocab.to_json(out / "item_vocabulary.json")
    model.tower.save_weights(str(out / "checkpoint" / "weights"))
    if options.export_root:
        path = export_ranker(model, export_root, options.name,
                             metadata={"metrics": {"test": test}},
                             warmup=_warmup_requests(split))
        record_export(metrics, export_root, options.name, path)
    write_json(out / "metrics.json", metrics)
    return metrics


def _warmup_requests(split: RankingSplit) -> dict:
    """The first validation users as ranking requests (one history, its candidates)."""
    group = 1 + split.valid_negatives
    rows = min(WARMUP_USERS, len(split.valid["label"]) // group)
    return {"history": split.valid["history"][::group][:rows],
            "candidates": split.valid["candidate"].reshape(-1, group)[:rows]}


def ranking_results_table(metrics: dict) -> str:
    """A plain-text table of the test AUC / GAUC: model vs popularity.

    Example:
    >>> print(ranking_results_table({"test": {"auc": 0.9, "gauc": 0.85},
    ...     "baselines": {"popularity": {"auc": 0.8, "gauc": 0.75}},
    ...     "dataset": {"users": 10}, "options": {"test_negatives": 100}}))
    test (10 users, 1 positive + 100 negatives each)
                              auc        gauc
    model                  0.9000      0.8500
    popularity             0.8000      0.7500
    """
    rows = [("model", metrics["test"])] + list(metrics["baselines"].items())
    lines = [f"test ({metrics['dataset']['users']} users, 1 positive + "
             f"{metrics['options']['test_negatives']} negatives each)",
             f"{'':17s}" + "".join(f"{k:>12s}" for k in ("auc", "gauc"))]
    for name, values in rows:
        lines.append(f"{name:17s}" + "".join(f"{values[k]:12.4f}" for k in ("auc", "gauc")))
    return "\n".join(lines)
