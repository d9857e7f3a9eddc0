"""Quality of the attention families against their honest baselines (`benchmark families`).

1. **DIN CTR ranking** (`models.DIN`): target attention over the history against the masked mean
   of the history (`pooling="mean"`), same seed and settings. Leave-one-out: trained on every
   position of `leave_one_out(...).train` (`train_negatives` sampled unseen items each),
   early-stopped on the validation AUC (each user's second-to-last item vs `valid_negatives`
   negatives, best weights restored), tested on each user's last item vs `test_negatives`
   unseen items: exact AUC over all rows and GAUC (per-user AUC weighted by rows).
2. **Attention autoencoder** (`models.build_attention_autoencoder`): each user's distinct items
   split into fold-in / held-out (`data.split_item_sets`); trained on the fold-in sets; the
   top-`ae_k` items outside the fold-in set scored with `evaluation.set_ranking_metrics`
   against popularity and against item co-occurrence (`CooccurrenceRecommender`, undirected,
   fitted on and scoring the recency-ordered fold-in sets: co-occurrence within
   `cooccurrence_window` positions, summed over the user's last `ae_max_len` items).
3. **Attention policy** (`models.AttentionPolicy`) on `training.BanditSimulator` (a planted
   environment: MovieLens has no logged propensities): the true expected reward of the top-k of
   uncorrected REINFORCE, importance weighting and the top-K correction (`K = max(policy_ks)`),
   against the logging policy (its value does not depend on k: k independent draws of beta)
   and the best possible value, on held-out users, per environment seed and their mean.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np

from tfrec_attn._keras import keras, tf
from tfrec_attn.data import (
    build_sequences,
    generate_synthetic,
    make_item_set_dataset,
    make_ranking_dataset,
    read_movielens,
    split_item_sets,
)
from tfrec_attn.data.sequences import SequenceData
from tfrec_attn.evaluation import CooccurrenceRecommender, PopularityRecommender, topk_from_scores
from tfrec_attn.evaluation.set_metrics import set_ranking_metrics
from tfrec_attn.models import (
    AttentionAutoencoderConfig,
    AttentionPolicy,
    AttentionPolicyConfig,
    DINConfig,
    build_attention_autoencoder,
    multinomial_loss,
    recommend_from_item_sets,
)
from tfrec_attn.models.din import POOLINGS
from tfrec_attn.training import autoencoder_run
from tfrec_attn.training.bandit_simulator import BanditSimulator, logged_dataset
from tfrec_attn.training.ctr_evaluation import evaluate_ranker
from tfrec_attn.training.ranking_run import (
    RankingOptions,
    RankingSplit,
    build_ranker,
    ranking_split,
)
from tfrec_attn.validation import check_positive_int_tuple

POLICIES = {"reinforce_uncorrected": {"correction": "none"},
            "importance": {"correction": "importance"}, "top_k": {"correction": "top_k"}}
SCORE_BATCH = 256  # users scored at once by the co-occurrence baseline (bounds its memory)


def _default(cls, name: str):
    """The default of dataclass `cls`' field `name`: the DIN and autoencoder settings' one
    source, so a change to `DINConfig` / `RankingOptions` (`tfrec-attn train --model din`) or
    `AutoencoderOptions` (`--model autoencoder`) moves the benchmark too."""
    return next(f.default for f in dataclasses.fields(cls) if f.name == name)


@dataclasses.dataclass
class FamiliesSettings:
    """Sizes and training settings of the three measurements (defaults: the full run).

    `din_*`, `ae_*` and `policy_*` fields belong to measurements 1, 2 and 3 (module
    docstring); the `din_*` defaults are `DINConfig`'s and `RankingOptions`', the `ae_*` ones
    `AutoencoderOptions`' (one source).
    `synthetic_*` size the generator used when no data path is given, and
    `max_users` keeps only the first users of the data (`None`: all). `run_eagerly` skips
    `tf.function` tracing, which costs more than the few training steps of the quick sizes.
    """

    seed: int = 0
    run_eagerly: bool = False
    synthetic_users: int = 1000
    synthetic_items: int = 500
    synthetic_length: float = 30.0
    max_users: int | None = None
    din_max_len: int = _default(DINConfig, "max_len")
    din_dim: int = _default(DINConfig, "dim")
    din_attention_units: tuple = _default(DINConfig, "attention_units")
    din_mlp_units: tuple = _default(DINConfig, "mlp_units")
    din_epochs: int = _default(RankingOptions, "epochs")
    din_patience: int = _default(RankingOptions, "patience")
    din_batch_size: int = _default(RankingOptions, "batch_size")
    din_learning_rate: float = _default(RankingOptions, "learning_rate")
    din_train_negatives: int = _default(RankingOptions, "negatives")
    din_valid_negatives: int = _default(RankingOptions, "valid_negatives")
    din_test_negatives: int = _default(RankingOptions, "test_negatives")
    ae_max_len: int = autoencoder_run.MODEL_DEFAULTS["max_len"]
    ae_dim: int = autoencoder_run.MODEL_DEFAULTS["dim"]
    ae_epochs: int = _default(autoencoder_run.AutoencoderOptions, "epochs")
    ae_batch_size: int = _default(autoencoder_run.AutoencoderOptions, "batch_size")
    ae_learning_rate: float = _default(autoencoder_run.AutoencoderOptions, "learning_rate")
    ae_holdout_fraction: float = _default(autoencoder_run.AutoencoderOptions, "holdout_fraction")
    ae_k: int = _default(autoencoder_run.AutoencoderOptions, "k")
    cooccurrence_window: int = autoencoder_run.COOCCURRENCE_WINDOW
    policy_users: int = 2000
    policy_items: int = 50
    policy_max_len: int = 10
    policy_events: int = 5
    policy_test_fraction: float = 0.2
    policy_dim: int = 16
    policy_epochs: int = 10
    policy_batch_size: int = 256
    policy_learning_rate: float = 5e-3
    policy_seeds: tuple = (0, 1, 2)
    policy_ks: tuple = (1, 5)

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in ("seed", "max_users", "run_eagerly") or isinstance(value, tuple):
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{field.name} must be a positive number. "
                                 f"Received: {field.name}={value!r}")
        if not isinstance(self.run_eagerly, bool):
            raise ValueError("run_eagerly must be a bool. "
                             f"Received: run_eagerly={self.run_eagerly!r}")
        if self.max_users is not None and (not isinstance(self.max_users, int)
                                           or self.max_users < 1):
            raise ValueError(f"max_users must be a positive int or None. "
                             f"Received: max_users={self.max_users!r}")
        for name in ("ae_holdout_fraction", "policy_test_fraction"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in (0, 1). Received: {name}="
                                 f"{getattr(self, name)!r}")
        for name in ("policy_seeds", "policy_ks"):  # distinct: results are keyed by them
            value = tuple(getattr(self, name))
            if not value or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                    for v in value) \
                    or len(set(value)) < len(value):
                raise ValueError(f"{name} must be a non-empty tuple of distinct non-negative "
                                 f"ints. Received: {name}={value!r}")
            setattr(self, name, value)
        for name in ("din_attention_units", "din_mlp_units"):  # DINConfig's check, before loading
            setattr(self, name, check_positive_int_tuple(name, getattr(self, name)))
        if min(self.policy_ks) < 1 or max(self.policy_ks) > self.policy_items:
            raise ValueError(f"policy_ks must lie in [1, policy_items={self.policy_items}]. "
                             f"Received: policy_ks={self.policy_ks}")


QUICK = {"run_eagerly": True, "synthetic_users": 60, "synthetic_items": 40, "synthetic_length": 8.0,
         "max_users": 60, "din_max_len": 8, "din_dim": 8, "din_attention_units": (8,),
         "din_mlp_units": (8,), "din_epochs": 1, "din_valid_negatives": 3,
         "din_test_negatives": 5, "ae_max_len": 8, "ae_dim": 8, "ae_epochs": 1, "ae_k": 10,
         "policy_users": 60, "policy_items": 10, "policy_max_len": 5, "policy_events": 2,
         "policy_dim": 8, "policy_epochs": 1, "policy_seeds": (0,)}


def families_settings(quick: bool = False, **overrides) -> FamiliesSettings:
    """The full-run settings, or the tiny `QUICK` ones, with `overrides` applied.

    Example:
    >>> families_settings(quick=True).din_epochs, families_settings(din_epochs=3).din_epochs
    (1, 3)
    """
    return FamiliesSettings(**{**(QUICK if quick else {}), **overrides})


def load_sequences(data: str | None, settings: FamiliesSettings) -> tuple[SequenceData, dict]:
    """MovieLens ratings at path `data` (`read_movielens`), else the synthetic generator, as
    chronological sequences of users with >= 3 events; plus a description of the data."""
    if data is None:
        frame = generate_synthetic(num_users=settings.synthetic_users,
                                   num_items=settings.synthetic_items,
                                   mean_length=settings.synthetic_length, seed=settings.seed)
    else:
        frame = read_movielens(data)
    if settings.max_users is not None:
        first = frame["user"].drop_duplicates().iloc[:settings.max_users]
        frame = frame[frame["user"].isin(first)]
    sequences = build_sequences(frame, min_events=3)
    return sequences, {"source": "synthetic" if data is None else str(data),
                       "users": sequences.num_users, "items": sequences.vocab_size - 2,
                       "interactions": sequences.num_interactions}


def _fit_din(pooling: str, split: RankingSplit, vocab: int, s: FamiliesSettings, valid,
             verbose: int) -> dict:
    keras.backend.clear_session()  # frees the previous model's graph state
    keras.utils.set_random_seed(s.seed)  # same initial weights and batch order for each pooling
    model = build_ranker(DINConfig(vocab_size=vocab, max_len=s.din_max_len, dim=s.din_dim,
                                   pooling=pooling, attention_units=s.din_attention_units,
                                   mlp_units=s.din_mlp_units),
                         s.din_learning_rate, run_eagerly=s.run_eagerly)
    train = make_ranking_dataset(split.train, s.din_max_len, vocab,
                                 s.din_batch_size, s.din_train_negatives, seed=s.seed)
    stop = keras.callbacks.EarlyStopping("val_auc", mode="max", patience=s.din_patience,
                                         restore_best_weights=True)
    started = time.monotonic()
    history = model.fit(train, validation_data=valid, epochs=s.din_epochs, callbacks=[stop],
                        verbose=2 if verbose else 0).history
    test = evaluate_ranker(model.tower, split.test, split.test_negatives)
    return {"test_auc": test["auc"], "test_gauc": test["gauc"],
            "valid_auc": [round(v, 4) for v in history["val_auc"]],
            "best_epoch": stop.best_epoch + 1, "epochs_run": len(history["val_auc"]),
            "seconds": round(time.monotonic() - started, 1)}


def din_benchmark(data: SequenceData, settings: FamiliesSettings, verbose: int = 0) -> dict:
    """Measurement 1: test AUC / GAUC of DIN with target attention vs mean pooling.

    The split and model are `tfrec-attn train --model din`'s (`training.ranking_run`); the
    validation AUC here is the DIN task's Keras `AUC` (a threshold grid), not the exact one.

    Args:
        data: chronological sequences with >= 3 events each.
        settings: `din_*` fields and `seed`.
        verbose: Keras progress (0: none).

    Returns:
        `{"attention": {...}, "mean": {...}, "test_rows", "test_users"}`; each pooling has
        `test_auc`, `test_gauc`, the per-epoch `valid_auc`, `best_epoch`, `epochs_run`,
        `seconds`.
    """
    split = ranking_split(data, settings.din_max_len, settings.din_valid_negatives,
                          settings.din_test_negatives, settings.seed)
    valid = tf.data.Dataset.from_tensor_slices(split.valid).batch(2048)
    out = {pooling: _fit_din(pooling, split, data.vocab_size, settings, valid, verbose)
           for pooling in POOLINGS}
    return {**out, "test_rows": len(split.test["label"]),
            "test_users": len(split.test["label"]) // (1 + settings.din_test_negatives)}


def _top_k_in_batches(model, sets: list[np.ndarray], k: int) -> np.ndarray:
    return np.concatenate([topk_from_scores(model.score(sets[i:i + SCORE_BATCH]), k,
                                            exclude=sets[i:i + SCORE_BATCH])
                           for i in range(0, len(sets), SCORE_BATCH)])


def autoencoder_benchmark(data: SequenceData, settings: FamiliesSettings,
                          verbose: int = 0) -> dict:
    """Measurement 2: held-out Recall@k / NDCG@k of the attention autoencoder vs baselines.

    Args:
        data: per-user sequences (their distinct items are the sets).
        settings: `ae_*` fields, `cooccurrence_window` and `seed`.
        verbose: Keras progress (0: none).

    Returns:
        `{"attention_autoencoder": metrics, "popularity": metrics, "cooccurrence": metrics,
        "users", "fold_in_items", "held_out_items", "seconds"}`; metrics hold `recall@k`,
        `ndcg@k` and `users`.
    """
    s = settings
    split = split_item_sets(data.sequences, s.ae_holdout_fraction, seed=s.seed)
    vocab = data.vocab_size
    keras.backend.clear_session()
    keras.utils.set_random_seed(s.seed)
    model = build_attention_autoencoder(AttentionAutoencoderConfig(
        vocab, max_len=s.ae_max_len, dim=s.ae_dim))
    model.compile(keras.optimizers.Adam(s.ae_learning_rate), loss=multinomial_loss(),
                  run_eagerly=s.run_eagerly)
    started = time.monotonic()
    model.fit(make_item_set_dataset(split.fold_in, vocab, s.ae_max_len, s.ae_batch_size,
                                    seed=s.seed), epochs=s.ae_epochs, verbose=2 if verbose else 0)
    seconds = time.monotonic() - started
    tops = {"attention_autoencoder":
            recommend_from_item_sets(model, split.fold_in, k=s.ae_k)["item_ids"]}
    popularity = PopularityRecommender(vocab).fit(split.fold_in)
    tops["popularity"] = _top_k_in_batches(popularity, split.fold_in, s.ae_k)
    cooccurrence = CooccurrenceRecommender(vocab, window=s.cooccurrence_window,
                                           num_recent=s.ae_max_len, recency_decay=1.0,
                                           directed=False).fit(split.fold_in)
    tops["cooccurrence"] = _top_k_in_batches(cooccurrence, split.fold_in, s.ae_k)
    out = {name: set_ranking_metrics(top, split.held_out, ks=(s.ae_k,))
           for name, top in tops.items()}
    return {**out, "users": len(split.fold_in),
            "fold_in_items": int(sum(len(f) for f in split.fold_in)),
            "held_out_items": int(sum(len(h) for h in split.held_out)),
            "seconds": round(seconds, 1)}


def _train_policy(sim: BanditSimulator, logs: dict, s: FamiliesSettings, seed: int,
                  overrides: dict, verbose: int) -> Callable:
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    policy = AttentionPolicy(AttentionPolicyConfig(
        vocab_size=sim.vocab_size, max_len=s.policy_max_len, dim=s.policy_dim, **overrides))
    policy.compile(optimizer=keras.optimizers.Adam(s.policy_learning_rate),
                   run_eagerly=s.run_eagerly)
    policy.fit(logged_dataset(logs, s.policy_batch_size, seed=seed), epochs=s.policy_epochs,
               verbose=2 if verbose else 0)
    return lambda histories: policy(tf.constant(histories))["logits"].numpy()


def _policy_seed(seed: int, s: FamiliesSettings, verbose: int) -> dict:
    sim = BanditSimulator(num_users=s.policy_users, num_items=s.policy_items,
                          max_len=s.policy_max_len, seed=seed)
    num_test = max(1, round(s.policy_test_fraction * s.policy_users))
    train = np.arange(s.policy_users - num_test)
    test = np.arange(s.policy_users - num_test, s.policy_users)
    logs = sim.log(events_per_user=s.policy_events, users=train, seed=seed)
    row = {"logging": {f"reward@{k}": sim.logging_value(test) for k in s.policy_ks},
           "best": {f"reward@{k}": sim.best_value(test, k) for k in s.policy_ks}}
    for name, overrides in POLICIES.items():
        if name == "top_k":
            overrides = {**overrides, "top_k": max(s.policy_ks)}
        score = _train_policy(sim, logs, s, seed, overrides, verbose)
        row[name] = {f"reward@{k}": sim.expected_reward(score, test, k) for k in s.policy_ks}
    return row


def policy_benchmark(settings: FamiliesSettings, verbose: int = 0) -> dict:
    """Measurement 3: true expected reward at each k of `policy_ks`, per environment seed.

    Args:
        settings: `policy_*` fields.
        verbose: Keras progress (0: none).

    Returns:
        `{"per_seed": {seed: {policy: {"reward@k": value}}}, "mean": {policy: {...}},
        "logged_events", "test_users", "top_k_K", "seconds"}`; policies are `logging`,
        `reinforce_uncorrected`, `importance`, `top_k` and `best`.
    """
    started = time.monotonic()
    per_seed = {str(seed): _policy_seed(seed, settings, verbose) for seed in settings.policy_seeds}
    names = next(iter(per_seed.values())).keys()
    mean = {name: {key: float(np.mean([row[name][key] for row in per_seed.values()]))
                   for key in per_seed[str(settings.policy_seeds[0])][name]} for name in names}
    num_test = max(1, round(settings.policy_test_fraction * settings.policy_users))
    return {"per_seed": per_seed, "mean": mean, "top_k_K": max(settings.policy_ks),
            "logged_events": (settings.policy_users - num_test) * settings.policy_events,
            "test_users": num_test, "seconds": round(time.monotonic() - started, 1)}


def run_families(data: str | None = None, quick: bool = False, verbose: int = 0,
                 progress: Callable[[str], None] | None = None, **overrides) -> dict:
    """All three measurements; the record `pipelines.benchmark families` writes as JSON.

    Args:
        data: MovieLens ratings file or directory (`read_movielens`); `None`: synthetic data.
        quick: tiny sizes (`QUICK`), for a smoke test.
        verbose: Keras progress (0: none).
        progress: called with one line when each measurement starts (e.g. `print`).
        **overrides: `FamiliesSettings` fields.

    Returns:
        `{"settings", "data", "din", "autoencoder", "policy", "seconds"}`.
    """
    settings = families_settings(quick, **overrides)
    say = progress or (lambda _: None)
    started = time.monotonic()
    sequences, described = load_sequences(data, settings)
    say(f"DIN on {described['users']} users, {described['items']} items ...")
    din = din_benchmark(sequences, settings, verbose)
    say("attention autoencoder ...")
    autoencoder = autoencoder_benchmark(sequences, settings, verbose)
    say(f"attention policy on {len(settings.policy_seeds)} bandit environments ...")
    policy = policy_benchmark(settings, verbose)
    return {"settings": dataclasses.asdict(settings), "data": described, "din": din,
            "autoencoder": autoencoder, "policy": policy,
            "seconds": round(time.monotonic() - started, 1)}


def format_table(record: dict) -> str:
    """The record of `run_families` as a plain-text table (every figure).

    Example:
    >>> format_table({"din": {}, "autoencoder": {}, "policy": {"mean": {}, "per_seed": {}}})
    '[DIN CTR]\\n[attention autoencoder]\\n[attention policy: true expected reward]'
    """
    lines = ["[DIN CTR]"]
    for pooling in POOLINGS:
        if pooling in record["din"]:
            r = record["din"][pooling]
            lines.append(f"  {pooling:9s} test AUC {r['test_auc']:.4f}  GAUC {r['test_gauc']:.4f}"
                         f"  best epoch {r['best_epoch']}/{r['epochs_run']}  {r['seconds']} s")
    lines.append("[attention autoencoder]")
    for name in ("attention_autoencoder", "popularity", "cooccurrence"):
        if name in record["autoencoder"]:
            metrics = {k: v for k, v in record["autoencoder"][name].items() if k != "users"}
            lines.append(f"  {name:22s} " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    lines.append("[attention policy: true expected reward]")
    policy = record["policy"]
    for name, values in policy["mean"].items():
        seeds = "  ".join(
            f"seed {seed}: " + "/".join(f"{row[name][k]:.3f}" for k in values)
            for seed, row in policy["per_seed"].items())
        lines.append(f"  {name:22s} mean " + " ".join(f"{k} {v:.3f}" for k, v in values.items())
                     + f"   ({seeds})")
    return "\n".join(lines)
