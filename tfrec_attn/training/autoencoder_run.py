"""One attention-autoencoder run end to end (`tfrec-attn train --model autoencoder`): data ->
fit with the epoch chosen on validation -> evaluate (+ popularity and co-occurrence) -> report
-> export.

The protocol is Mult-VAE's strong generalization (Liang et al., 2018): the users are split
(seeded) into training, validation and test users; the model trains on the training users'
whole item sets (each user's distinct items, most recent last); each validation and test
user's items are split by `data.split_item_sets` into fold-in and held-out items (validation
with `seed + 1`, test with `seed + 2`); the model recommends from the fold-in set (fold-in items
excluded) and is scored on the held-out items with `evaluation.set_ranking_metrics` (Recall@k,
NDCG@k). As in Mult-VAE, validation and test users keep only the items some training user has
(a model cannot learn an item it never saw), and users left with fewer than two distinct items
are not evaluated. Early stopping on the validation NDCG@k restores the best epoch's weights.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from tfrec_attn._keras import keras, tf
from tfrec_attn.data import build_sequences, item_set, make_item_set_dataset, pad_left
from tfrec_attn.data.item_sets import split_item_sets
from tfrec_attn.data.sequences import SequenceData
from tfrec_attn.evaluation import (
    CooccurrenceRecommender,
    PopularityRecommender,
    set_ranking_metrics,
    topk_from_scores,
)
from tfrec_attn.export.autoencoder import export_autoencoder
from tfrec_attn.models import (
    AttentionAutoencoderConfig,
    build_attention_autoencoder,
    multinomial_loss,
)
from tfrec_attn.training.distribution import shard_by_data
from tfrec_attn.training.fitting import FitResult, fit_with_run_callbacks
from tfrec_attn.training.plots import plot_training_curves
from tfrec_attn.training.run import (
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
from tfrec_attn.training.set_evaluation import SetEvaluation, evaluate_set_recommender
from tfrec_attn.validation import (
    DataOptionError,
    check_optional_positive_int,
    check_positive_ints,
)

MODEL_DEFAULTS = {"max_len": 100, "dim": 64}  # also the families benchmark's ae_max_len / ae_dim
HELD_OUT_SHARE = 0.1  # validation / test users each, when valid_users / test_users are None
WARMUP_USERS = 100  # validation fold-in sets written as TF Serving warm-up records
COOCCURRENCE_WINDOW = 5  # also the families benchmark's cooccurrence_window
SCORE_BATCH = 256  # users scored at once by the baselines (bounds their memory)
FIRST_VOCAB = 3  # the smallest catalogue (padding, OOV, one item): for checking model fields


@dataclasses.dataclass
class AutoencoderOptions(RunOptions):
    """Everything one attention-autoencoder run needs; `pipelines/train.py --model
    autoencoder` fills it from flags and a YAML file. Defaults are the families benchmark's
    `ae_*` settings (docs/BENCHMARKS.md 9), with `epochs` a cap for early stopping; the fields
    every run type shares (`data`, `format`, `export_root`, `seed`, `strategy`, ...) are
    `RunOptions`'.

    `valid_users` / `test_users` are counts of held-out users (`None`: 10% of the users each,
    at least one); the rest train. `holdout_fraction` of each held-out user's distinct items
    is held out; `k` is the cut-off of Recall@k / NDCG@k and the monitored `val_ndcg@k`.
    `model` holds `AttentionAutoencoderConfig` fields (not `vocab_size`, which comes from the
    data) over `MODEL_DEFAULTS`.
    """

    output: str = "runs/autoencoder"
    name: str = "autoencoder"
    epochs: int = 40
    batch_size: int = 64
    learning_rate: float = 2e-3
    patience: int = 10  # measured better than 5 on ML-100K (docs/BENCHMARKS.md 9d)
    min_events: int = 3
    synthetic_users: int = 2000
    synthetic_items: int = 1000
    synthetic_length: float = 30.0
    k: int = 20
    holdout_fraction: float = 0.2
    valid_users: int | None = None
    test_users: int | None = None
    model: dict = dataclasses.field(default_factory=dict)  # AttentionAutoencoderConfig fields

    def __post_init__(self):
        check_data_source(self)
        check_positive_ints(self, ("epochs", "batch_size", "k"))
        check_synthetic_sizes(self)
        for name in ("valid_users", "test_users"):
            check_optional_positive_int(name, getattr(self, name))
        for name, low in (("patience", 0), ("seed", 0), ("min_events", 2)):
            check_int_at_least(self, name, low)
        check_positive_numbers(self, ("learning_rate", "max_train_minutes"))
        super().__post_init__()
        value = self.holdout_fraction
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
            raise ValueError(f"holdout_fraction must be in (0, 1). Received: "
                             f"holdout_fraction={value!r}")
        self.model = {**MODEL_DEFAULTS, **(self.model or {})}
        self.autoencoder_config(vocab_size=FIRST_VOCAB)  # checks the model fields before data

    def autoencoder_config(self, vocab_size: int) -> AttentionAutoencoderConfig:
        """The run's `AttentionAutoencoderConfig` for a catalogue of `vocab_size` ids."""
        return model_config(AttentionAutoencoderConfig, self.model, vocab_size)


@dataclasses.dataclass
class AutoencoderSplit:
    """Strong-generalization data: `train` item sets (one a training user); `valid_*` /
    `test_*` fold-in and held-out sets of the evaluated validation / test users."""

    train: list[np.ndarray]
    valid_fold_in: list[np.ndarray]
    valid_held_out: list[np.ndarray]
    test_fold_in: list[np.ndarray]
    test_held_out: list[np.ndarray]


def _held_out_count(count: int | None, num_users: int) -> int:
    return max(1, round(HELD_OUT_SHARE * num_users)) if count is None else count


def autoencoder_split(data: SequenceData, options: AutoencoderOptions) -> AutoencoderSplit:
    """The run's split of `data` (module docstring), deterministic in `options.seed`.

    Example:
    >>> from tfrec_attn.data import Vocabulary
    >>> seqs = [np.array([2, 3, 4, 2]), np.array([3, 4, 5]), np.array([2, 3, 4, 6])]
    >>> data = SequenceData(seqs, ["a", "b", "c"], Vocabulary(list("abcde")))
    >>> split = autoencoder_split(data, AutoencoderOptions(valid_users=1, test_users=1,
    ...                                                    holdout_fraction=0.5))
    >>> [s.tolist() for s in split.train], len(split.test_fold_in), len(split.valid_fold_in)
    ([[3, 4, 5]], 1, 1)
    """
    users = len(data.sequences)
    valid_users = _held_out_count(options.valid_users, users)
    test_users = _held_out_count(options.test_users, users)
    if valid_users + test_users >= users:
        raise DataOptionError("valid_users + test_users must leave at least one training user: "
                              f"{valid_users} + {test_users} >= {users} users")
    order = np.random.default_rng(options.seed).permutation(users)
    test_rows = np.sort(order[:test_users])
    valid_rows = np.sort(order[test_users:test_users + valid_users])
    train = [item_set(data.sequences[i]) for i in np.sort(order[test_users + valid_users:])]
    known = np.unique(np.concatenate(train))

    def fold(rows: np.ndarray, seed: int) -> tuple[list, list]:
        kept = [seq[np.isin(seq, known)] for seq in (data.sequences[i] for i in rows)]
        kept = [seq for seq in kept if len(np.unique(seq)) >= 2]
        split = split_item_sets(kept, options.holdout_fraction, seed=seed)
        return split.fold_in, split.held_out

    valid = fold(valid_rows, options.seed + 1)
    test = fold(test_rows, options.seed + 2)
    for name, (fold_in, _) in (("validation", valid), ("test", test)):
        if not fold_in:
            raise DataOptionError(f"no {name} user has two distinct items seen in training; "
                                  f"raise {'valid' if name == 'validation' else 'test'}_users.")
    return AutoencoderSplit(train, *valid, *test)


def build_autoencoder(config: AttentionAutoencoderConfig, learning_rate: float,
                      jit_compile: bool = False,
                      strategy: tf.distribute.Strategy | None = None) -> keras.Model:
    """`build_attention_autoencoder(config)` compiled with Adam and `multinomial_loss()`, its
    variables created under `strategy` (default: the current one)."""
    with (strategy or tf.distribute.get_strategy()).scope():
        model = build_attention_autoencoder(config)
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=multinomial_loss(),
                      jit_compile=jit_compile)
    return model


def baseline_metrics(train: list[np.ndarray], fold_in: list[np.ndarray],
                     held_out: list[np.ndarray], vocab_size: int, k: int,
                     max_len: int) -> dict[str, dict]:
    """Popularity (users per item) and undirected item co-occurrence (within
    `COOCCURRENCE_WINDOW` positions of the recency-ordered sets, summed over the last `max_len`
    fold-in items; the families benchmark's settings), fitted on the training users' sets and
    scored like the model: top-`k` outside the fold-in set against the held-out items."""
    baselines = {"popularity": PopularityRecommender(vocab_size).fit(train),
                 "cooccurrence": CooccurrenceRecommender(
                     vocab_size, window=COOCCURRENCE_WINDOW, num_recent=max_len,
                     recency_decay=1.0, directed=False).fit(train)}
    out = {}
    for name, baseline in baselines.items():
        top = np.concatenate([topk_from_scores(baseline.score(fold_in[i:i + SCORE_BATCH]), k,
                                               exclude=fold_in[i:i + SCORE_BATCH])
                              for i in range(0, len(fold_in), SCORE_BATCH)])
        metrics = set_ranking_metrics(top, held_out, ks=(k,))
        out[name] = {key: value for key, value in metrics.items() if key != "users"}
    return out


def _fit(model: keras.Model, split: AutoencoderSplit, options: AutoencoderOptions,
         vocab_size: int, out: Path, extra_callbacks=(), source: dict | None = None) -> FitResult:
    max_len = model.input.shape[1]
    fixed = options.jit_compile  # one batch shape: XLA compiles the train step once
    train = make_item_set_dataset(split.train, vocab_size, max_len, options.batch_size,
                                  seed=options.seed, drop_remainder=fixed)
    if fixed:
        require_full_batch(train, f"the {len(split.train)} training users", options.batch_size)
    evaluation = SetEvaluation(split.valid_fold_in, split.valid_held_out, k=options.k)
    return fit_with_run_callbacks(model, shard_by_data(train), evaluation, options,
                                  f"ndcg@{options.k}", out / "tensorboard", extra_callbacks,
                                  source)


def run_autoencoder_training(options: AutoencoderOptions, callbacks=()) -> dict:
    """Trains, evaluates and exports one attention autoencoder; writes `metrics.json`, the
    training curves, TensorBoard logs, the item vocabulary and the weights to `output`.

    Early stopping on the validation NDCG@k (`patience` epochs) restores the best epoch's
    weights before the test; `max_train_minutes` stops training cleanly mid-epoch. The callbacks
    are SASRec's (`fit_with_run_callbacks`): with `backup_dir` a restarted run resumes after
    the last completed epoch, with `ema_decay` epochs end on an average of the weights. As in
    SASRec runs, `strategy` trains on several devices or machines (global batch `batch_size`;
    only the chief writes `output` and `export_root`) and `jit_compile` XLA-compiles the train
    step on fixed-shape batches (the last partial batch of an epoch dropped).

    Args:
        options: the run's options.
        callbacks: extra Keras callbacks, run after the run's own ones.

    Returns:
        The metrics dict written to `output/metrics.json` (plus `"export_path"` when
        `export_root` is set): `test` / `valid` `{"recall@k", "ndcg@k"}`, `baselines`
        `{"popularity", "cooccurrence"}` on the test users, `best_epoch`, `train_seconds`,
        `epochs`, `stopped_by_time_budget`, `resumed_epochs`, `dataset`, `model`, `options`,
        `history`.
    """
    return run_under_strategy(options, _run, callbacks)


def _run(options: AutoencoderOptions, strategy: tf.distribute.Strategy, out: Path,
         export_root: str | Path | None, callbacks=()) -> dict:
    frame = load_data(options)
    data = build_sequences(frame, min_events=options.min_events)
    source = data_source(options)  # the bytes just read
    check_users_kept(options, data)
    if options.k > data.vocab_size - 2:
        raise DataOptionError(f"--k must be at most the number of items "
                              f"({data.vocab_size - 2}). Received: k={options.k}")
    config = options.autoencoder_config(data.vocab_size)
    split = autoencoder_split(data, options)
    model = build_autoencoder(config, options.learning_rate, options.jit_compile, strategy)
    started = time.monotonic()
    fitted = _fit(model, split, options, data.vocab_size, out, callbacks, source)
    history, records = fitted.history, fitted.records
    train_seconds = time.monotonic() - started + fitted.budget.previous  # + before a restart
    k = options.k
    metric_names = (f"recall@{k}", f"ndcg@{k}")
    test = evaluate_set_recommender(model, split.test_fold_in, split.test_held_out, k)
    best = max(records, key=lambda r: r[f"ndcg@{k}"]) if records else {}
    baselines = {name: baseline_metrics(split.train, fold_in, held_out, data.vocab_size, k,
                                        config.max_len)
                 for name, fold_in, held_out in (
                     ("test", split.test_fold_in, split.test_held_out),
                     ("valid", split.valid_fold_in, split.valid_held_out))}
    metrics = {
        "test": test,
        "valid": {name: best[name] for name in metric_names if name in best},
        "best_epoch": best.get("epoch"),
        "baselines": baselines["test"],
        "train_seconds": round(train_seconds, 2),
        "epochs": len(history.get("loss", [])),
        "stopped_by_time_budget": fitted.budget.stopped,
        "resumed_epochs": fitted.resumed_epochs,  # epochs restored from --backup-dir
        "dataset": {**_dataset_summary(data, split, options), **skipped_lines(frame)},
        "model": config.to_dict(),
        "options": {key: v for key, v in dataclasses.asdict(options).items() if key != "model"},
        "history": {"loss": [float(x) for x in history.get("loss", [])], "valid": records},
    }
    plot_training_curves(history, records, out / "training_curves.png", baselines["valid"],
                         metric=f"ndcg@{k}")
    data.vocab.to_json(out / "item_vocabulary.json")
    model.save_weights(str(out / "checkpoint" / "weights"))
    if options.export_root:
        warmup = pad_left(split.valid_fold_in[:WARMUP_USERS], config.max_len)
        path = export_autoencoder(model, export_root, options.name,
                                  metadata={"config": config.to_dict(),
                                            "metrics": {"test": test},
                                            "best_epoch": metrics["best_epoch"]},
                                  warmup=warmup, max_k=k)
        record_export(metrics, export_root, options.name, path)
    write_json(out / "metrics.json", metrics)
    return metrics


def _dataset_summary(data: SequenceData, split: AutoencoderSplit,
                     options: AutoencoderOptions) -> dict:
    return {"name": options.data or "synthetic", "format": options.format,
            "users": data.num_users, "items": data.vocab_size - 2,
            "interactions": data.num_interactions, "train_users": len(split.train),
            "valid_users": len(split.valid_fold_in), "test_users": len(split.test_fold_in),
            "test_held_out_items": int(sum(len(h) for h in split.test_held_out))}


def autoencoder_results_table(metrics: dict) -> str:
    """A plain-text table of the test Recall@k / NDCG@k: model vs popularity and co-occurrence.

    Example:
    >>> print(autoencoder_results_table({"test": {"recall@20": 0.4, "ndcg@20": 0.35},
    ...     "baselines": {"popularity": {"recall@20": 0.2, "ndcg@20": 0.18}},
    ...     "dataset": {"test_users": 94}, "options": {"k": 20, "holdout_fraction": 0.2}}))
    test (94 held-out users, 20% of each user's items held out)
                        recall@20     ndcg@20
    model                  0.4000      0.3500
    popularity             0.2000      0.1800
    """
    k = metrics["options"]["k"]
    keys = (f"recall@{k}", f"ndcg@{k}")
    rows = [("model", metrics["test"])] + list(metrics["baselines"].items())
    lines = [f"test ({metrics['dataset']['test_users']} held-out users, "
             f"{metrics['options']['holdout_fraction']:.0%} of each user's items held out)",
             f"{'':17s}" + "".join(f"{key:>12s}" for key in keys)]
    for name, values in rows:
        lines.append(f"{name:17s}" + "".join(f"{values[key]:12.4f}" for key in keys))
    return "\n".join(lines)
