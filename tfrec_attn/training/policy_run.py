"""One attention-policy run end to end (`tfrec-attn train --model policy`): logged feedback ->
fit with the epoch chosen on validation -> test against baselines -> report -> export.

With `--format synthetic` the data are the planted bandit environment of
`training.bandit_simulator`: its users are split (seeded permutation) into training, validation
and test users; feedback is logged under the popularity-skewed logging policy for the training
users only, and `AttentionPolicy` (REINFORCE with the top-K off-policy correction, Chen et al.
2019) learns from those logs. Because the environment's reward probabilities are known, every
evaluation is the TRUE expected reward of showing each user the policy's top-k items
(`expected_reward`, no sampling noise or off-policy estimate): each epoch on the validation
users (early stopping on reward@k restores the best epoch's weights), and once on the test users
for the policy, the logging policy, popularity (the `k` most logged items for everyone) and the
best possible value. The simulator's rewards do not depend on the history, so history items are
not excluded, neither in the evaluation nor in the exported signature.

With `--format movielens|csv|parquet --data PATH` the logs are a file's
(`training.logged_feedback`): each user's time-ordered events, every event after the first a
logged round (state: the previous `max_len` items; action: the event's item; reward: 1 if the
MovieLens rating is at least `reward_threshold`, 4.0 by default, else 0, or a CSV / Parquet
`reward_col` taken as is). Propensities are unknown, so the policy learns them with its
behaviour head (`propensity="learned"`). Users are split (seeded) as above; only the training
users' events are logged. A file cannot tell the reward of what was never shown, so the
evaluation is an offline proxy, the rewarded hit: HR@k / NDCG@k of each held-out user's last
rewarded event (reward > 0) in the policy's top-k from the events before it, history items
excluded (also in the export), each epoch on the validation users (early stopping on NDCG@k)
and once on the test users against popularity of rewarded items (counted on the training
users). `metrics.json` says so in `"protocol"`. The vocabulary covers every kept user's items,
so items only held-out users have are candidates the policy never trained on.

Both paths add `"off_policy"` to `metrics.json` (`training.off_policy_evaluation`): IPS / SNIPS
estimates (`evaluation.off_policy`; bootstrap interval over users, effective sample size) of
the reward@k of showing one of the top-k on the test users' logged rounds. On the simulator the
test users are logged for it and the trained policy is estimated with the true and with the
learned propensities, next to its true reward@k, which shows how far to trust the estimate; on
a file with the behaviour head's propensities only, for the policy, popularity of rewarded
items and the logging policy itself (SNIPS = the mean logged reward). The estimate is only as
good as the learned propensities; an estimate whose mean importance weight is far from 1
carries a `"warning"`. When the logged actions (almost) never repeat an earlier item of their
user (a ratings log), the behaviour head is trained, and estimates, over the items outside each
round's full history (`behaviour_exclude_history`, chosen from the data unless set:
`training.policy_history`; `metrics.json` `"data_defaults"`). With `behaviour_refit_epochs`,
after the policy's training the behaviour head alone is refitted on the training logs, early
stopping on the validation users' logged rounds (`training.behaviour_refit`; `metrics.json`
`"behaviour_refit"`); the policy's outputs do not change.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tfrec_attn._keras import keras, tf
from tfrec_attn.data import pad_left, read_interactions
from tfrec_attn.export.policy import export_policy
from tfrec_attn.models import AttentionPolicy, AttentionPolicyConfig
from tfrec_attn.training.bandit_simulator import BanditSimulator, logged_dataset
from tfrec_attn.training.behaviour_refit import refit_behaviour_head
from tfrec_attn.training.callbacks import EpochEvaluation
from tfrec_attn.training.data_defaults import repeat_rate
from tfrec_attn.training.distribution import shard_by_data
from tfrec_attn.training.fitting import fit_with_run_callbacks
from tfrec_attn.training.logged_feedback import (
    LoggedFeedback,
    LoggedSplit,
    RewardedHitEvaluation,
    RewardedTargets,
    feedback_from_frame,
    history_scores,
    logged_events,
    logged_split,
    rewarded_hits,
    rewarded_popularity,
    split_users,
)
from tfrec_attn.training.off_policy_evaluation import logged_off_policy, simulated_off_policy
from tfrec_attn.training.plots import plot_training_curves
from tfrec_attn.training.policy_history import (
    action_repeat_rate,
    choose_behaviour_mask,
    seen_dataset,
)
from tfrec_attn.training.run import record_export, run_under_strategy, write_json
from tfrec_attn.training.run_options import (
    RunOptions,
    check_data_source,
    check_int_at_least,
    check_positive_numbers,
    model_config,
    require_full_batch,
)
from tfrec_attn.training.simulated_feedback import (
    PolicyEvaluation,
    PolicySplit,
    baseline_rewards,
    policy_scores,
    reward_at,
    simulated_summary,
)
from tfrec_attn.validation import (
    DataOptionError,
    check_optional_positive_int,
    check_positive_ints,
)

# The families benchmark's policy_max_len / policy_dim (docs/BENCHMARKS.md 9); `top_k` (the
# correction's K) defaults to the run's `k`, as the benchmark's K = max(policy_ks) = 5.
MODEL_DEFAULTS = {"max_len": 10, "dim": 16}
# Logged-feedback files: no off-policy correction. Their evaluation is on-log (the rewarded hit),
# where uncorrected REINFORCE measured 1.8-2.9x the top-K correction's NDCG@10 on ML-100K
# (docs/BENCHMARKS.md 9f); the correction's gain is in reward under the new policy's own
# exposure, which only the simulator measures (section 9, 9e).
FILE_MODEL_DEFAULTS = {"correction": "none"}
VALID_SHARE, TEST_SHARE = 0.1, 0.2  # held-out users when valid_users / test_users are None
WARMUP_USERS = 100  # validation histories written as TF Serving warm-up records
FIRST_VOCAB = 3  # the smallest catalogue (padding, OOV, one item): for checking model fields
FORMATS = ("synthetic", "movielens", "csv", "parquet")  # the ones with rewards
MOVIELENS_THRESHOLD = 4.0  # reward = 1 for ratings >= this (4 and 5 stars), else 0
PROTOCOL = "rewarded-hit (offline proxy; true reward only on the simulator)"
# Cap of the behaviour head's refit epochs (training.behaviour_refit; 0: none). On ML-100K's
# restored policy (docs/BENCHMARKS.md 9h) the refit lowered the validation users' behaviour
# loss 5.665 -> 5.615 (12 epochs, best 7; the cap not reached) and the test rounds' mean
# weights 0.94 / 1.47 -> 0.99 / 1.31 (policy / popularity); the policy's outputs are
# bit-identical, so it is on by default.
REFIT_EPOCHS = 30


@dataclasses.dataclass
class PolicyOptions(RunOptions):
    """Everything one attention-policy run needs; `pipelines/train.py --model policy` fills it
    from flags and a YAML file. Defaults are the families benchmark's `policy_*` settings
    (docs/BENCHMARKS.md 9: 2,000 users, 50 items, 5 logged events per user, max-len 10, dim 16,
    Adam 5e-3, batch 256, the top-K correction with K = 5). `epochs` is a cap for early
    stopping: 30 with patience 5 measured equal or better than the benchmark's 10 epochs with
    patience 3 on each of seeds 0-2 (mean test reward@5 0.414 against 0.408; 10 epochs cut two
    seeds short; docs/BENCHMARKS.md 9e). The fields every run type shares (`data`, `format`,
    `export_root`, `seed`, `strategy`, ...) are `RunOptions`'.

    `format` is `"synthetic"` (the simulator; the `synthetic_*` and `events_per_user` options)
    or a logged-feedback file at `data` (`"movielens"`: ratings, reward = rating >=
    `reward_threshold`, default 4.0; `"csv"` / `"parquet"`: columns `user`, `item`,
    `timestamp` and `reward_col`, default `"reward"`); users with fewer than `min_events` events
    are dropped. `valid_users` / `test_users` are counts of held-out users (`None`: 10% / 20% of
    the users, at least one each); the rest are logged (`events_per_user` each). `k` is the
    cut-off of the monitored and reported reward@k (reward@1 is reported too; files: HR@k and
    NDCG@k, the monitored one). `synthetic_length` is the mean history length of the
    simulator's users. `model` holds `AttentionPolicyConfig` fields (not `vocab_size`, which
    comes from the data) over `MODEL_DEFAULTS` (files: and `FILE_MODEL_DEFAULTS`, no
    correction); its `top_k` defaults to `k`. `behaviour_refit_epochs` caps the refit of the
    behaviour head alone after the policy's training (0: none; `None`: `REFIT_EPOCHS` with a
    head; `training.behaviour_refit`), with the run's `batch_size`, `learning_rate` and
    `patience`, early stopping on the validation users' logged rounds (the simulator logs them
    for it, `seed + 2`).
    """

    output: str = "runs/policy"
    name: str = "policy"
    epochs: int = 30
    batch_size: int = 256
    learning_rate: float = 5e-3
    patience: int = 5
    min_events: int = 3  # logged-feedback files: users with fewer events are dropped
    reward_threshold: float | None = None  # movielens: reward = rating >= it (None: 4.0)
    reward_col: str | None = None  # csv / parquet: the reward column (None: "reward")
    synthetic_users: int = 2000
    synthetic_items: int = 50
    synthetic_length: float = 8.0
    events_per_user: int = 5
    k: int = 5
    valid_users: int | None = None
    test_users: int | None = None
    behaviour_refit_epochs: int | None = None  # None: REFIT_EPOCHS with a behaviour head
    model: dict = dataclasses.field(default_factory=dict)  # AttentionPolicyConfig fields

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS} for the policy (it learns from "
                             f"rewards). Received: format={self.format!r}")
        check_data_source(self)
        self._check_reward_options()
        check_positive_ints(self, ("epochs", "batch_size", "k", "synthetic_users",
                                   "synthetic_items", "events_per_user"))
        for name in ("valid_users", "test_users"):
            check_optional_positive_int(name, getattr(self, name))
        for name in ("patience", "seed"):
            check_int_at_least(self, name, 0)
        if self.behaviour_refit_epochs is not None:
            check_int_at_least(self, "behaviour_refit_epochs", 0, " (0: no refit of the head)")
        check_int_at_least(self, "min_events", 2, " (a state and an action)")
        check_positive_numbers(self, ("learning_rate", "synthetic_length", "max_train_minutes"))
        super().__post_init__()
        file_defaults = FILE_MODEL_DEFAULTS if self.format != "synthetic" else {}
        self.model = {**MODEL_DEFAULTS, **file_defaults, "top_k": self.k, **(self.model or {})}
        head = self.policy_config(vocab_size=FIRST_VOCAB).behaviour_head  # checks the fields
        if self.behaviour_refit_epochs is None:
            self.behaviour_refit_epochs = REFIT_EPOCHS if head else 0
        elif self.behaviour_refit_epochs and not head:
            raise ValueError("behaviour_refit_epochs refits the behaviour head, which this "
                             "policy does not have (behaviour_head=False); set it to 0. "
                             f"Received: behaviour_refit_epochs={self.behaviour_refit_epochs}")
        if self.format != "synthetic":
            if self.model.get("propensity") == "logged":
                raise ValueError("propensity='logged' needs the logging policy's propensities, "
                                 "which logged-feedback files do not have; use 'learned' (the "
                                 f"behaviour head). Received: format={self.format!r}")
            return
        if self.k > self.synthetic_items:
            raise ValueError(f"k must be at most synthetic_items ({self.synthetic_items}). "
                             f"Received: k={self.k}")
        held_out = self.held_out_users()
        if sum(held_out) >= self.synthetic_users:
            raise ValueError("valid_users + test_users must leave at least one logged user: "
                             f"{held_out[0]} + {held_out[1]} >= synthetic_users="
                             f"{self.synthetic_users}")

    def _check_reward_options(self) -> None:
        threshold, column = self.reward_threshold, self.reward_col
        if threshold is not None:
            if self.format != "movielens":
                raise ValueError("reward_threshold applies to format 'movielens' only (ratings "
                                 "-> 0/1 rewards; a csv / parquet reward column is taken as "
                                 f"is). Received: reward_threshold={threshold!r} with "
                                 f"format={self.format!r}")
            if isinstance(threshold, bool) or not isinstance(threshold, int | float):
                raise ValueError("reward_threshold must be a number. "
                                 f"Received: reward_threshold={threshold!r}")
        if column is not None:
            if self.format not in ("csv", "parquet"):
                raise ValueError("reward_col applies to formats 'csv' and 'parquet' only. "
                                 f"Received: reward_col={column!r} with format={self.format!r}")
            if not isinstance(column, str) or not column:
                raise ValueError("reward_col must be a column name. "
                                 f"Received: reward_col={column!r}")

    def held_out_users(self, num_users: int | None = None) -> tuple[int, int]:
        """`(validation users, test users)` of `num_users` (default `synthetic_users`): the
        counts given, or 10% / 20% (at least one)."""
        users = self.synthetic_users if num_users is None else num_users
        return tuple(max(1, round(share * users)) if count is None else count
                     for count, share in ((self.valid_users, VALID_SHARE),
                                          (self.test_users, TEST_SHARE)))

    def policy_config(self, vocab_size: int) -> AttentionPolicyConfig:
        """The run's `AttentionPolicyConfig` for a catalogue of `vocab_size` ids."""
        return model_config(AttentionPolicyConfig, self.model, vocab_size)


def policy_split(options: PolicyOptions) -> PolicySplit:
    """The run's environment, user split and logs, deterministic in `options.seed`.

    Example:
    >>> split = policy_split(PolicyOptions(synthetic_users=50, synthetic_items=10,
    ...                                    events_per_user=2, valid_users=5, test_users=10))
    >>> len(split.train), len(split.valid), len(split.test), split.logs["action"].shape
    (35, 5, 10, (70,))
    """
    max_len = options.model["max_len"]
    sim = BanditSimulator(num_users=options.synthetic_users, num_items=options.synthetic_items,
                          max_len=max_len, mean_length=options.synthetic_length,
                          seed=options.seed)
    train, valid, test = split_users(options.synthetic_users, *options.held_out_users(),
                                     seed=options.seed)
    logs = sim.log(events_per_user=options.events_per_user, users=train, seed=options.seed)
    return PolicySplit(sim, train, valid, test, logs)


def build_policy(config: AttentionPolicyConfig, learning_rate: float, jit_compile: bool = False,
                 strategy: tf.distribute.Strategy | None = None) -> AttentionPolicy:
    """An `AttentionPolicy(config)`, built (Keras' `BackupAndRestore` needs a built model) and
    compiled with Adam (its losses are its own), its variables created under `strategy`
    (default: the current one)."""
    with (strategy or tf.distribute.get_strategy()).scope():
        policy = AttentionPolicy(config)
        policy(tf.zeros((1, config.max_len), tf.int64))
        policy.compile(optimizer=keras.optimizers.Adam(learning_rate), jit_compile=jit_compile)
    return policy


@dataclasses.dataclass
class PolicyRunData:
    """What the run loop needs from its data (`synthetic_run_data` / `logged_run_data`): the
    catalogue, the training `logs`, the per-epoch `evaluation` (validation users) logging
    `monitor`, `test_metrics(policy)`, the baselines on the test / validation users, warm-up
    histories, whether history items are excluded, the dataset summary, the protocol and
    `off_policy(policy)`, the IPS / SNIPS estimates on the test users' logged rounds
    (`training.off_policy_evaluation`), `repeats` (the share of logged actions that repeat an
    earlier item of their user, and what it counts: `training.policy_history`), for files,
    `histories` (every user's items and the logged rows: the `"seen"` batches), and the
    validation users' logged rounds `valid_logs` (files: of `valid_rows`) for the behaviour
    head's refit."""

    vocab_size: int
    logs: dict
    evaluation: EpochEvaluation
    monitor: str
    test_metrics: Callable[[AttentionPolicy], dict]
    baselines: dict
    valid_baselines: dict
    warmup: np.ndarray
    exclude_history: bool
    dataset: dict
    protocol: str | None = None
    off_policy: Callable[[AttentionPolicy], dict] | None = None
    repeats: tuple[float, str] = (0.0, "logged actions")
    histories: tuple[list[np.ndarray], np.ndarray] | None = None
    valid_logs: dict | None = None
    valid_rows: np.ndarray | None = None


def synthetic_run_data(options: PolicyOptions) -> PolicyRunData:
    """The simulator's logs and true-reward evaluation (`policy_split`)."""
    split = policy_split(options)
    ks = tuple(sorted({1, options.k}))
    return PolicyRunData(
        split.sim.vocab_size, split.logs, PolicyEvaluation(split.sim, split.valid, ks),
        f"reward@{options.k}",
        lambda policy: reward_at(split.sim, policy_scores(policy), split.test, ks),
        baseline_rewards(split, split.test, ks), baseline_rewards(split, split.valid, ks),
        split.sim.histories[split.valid[:WARMUP_USERS]], False,
        simulated_summary(split, options.format),
        off_policy=simulated_off_policy(split, options.k, options.events_per_user,
                                        options.seed,
                                        options.policy_config(split.sim.vocab_size).max_weight),
        repeats=(action_repeat_rate(split.logs["history"], split.logs["action"]),
                 "the simulator's logged actions"),
        valid_logs=split.sim.log(events_per_user=options.events_per_user, users=split.valid,
                                 seed=options.seed + 2)  # + 1: the test users' (off_policy)
        if options.behaviour_refit_epochs else None)


def load_feedback(options: PolicyOptions) -> LoggedFeedback:
    """The logged feedback of `options.data` (module docstring for the rewards)."""
    if options.format == "movielens":
        frame = read_interactions(options.data, "movielens", with_rating=True)
        return feedback_from_frame(frame, "rating", options.min_events, _threshold(options))
    frame = read_interactions(options.data, options.format,
                              reward_col=options.reward_col or "reward")
    return feedback_from_frame(frame, "reward", options.min_events)


def logged_run_data(options: PolicyOptions) -> PolicyRunData:
    """A file's logs and the rewarded-hit evaluation (`training.logged_feedback`)."""
    feedback = load_feedback(options)
    if options.k > feedback.vocab_size - 2:
        raise DataOptionError(f"k must be at most the number of items "
                              f"({feedback.vocab_size - 2}). Received: k={options.k}")
    max_len, ks = options.model["max_len"], (options.k,)
    split = logged_split(feedback, *options.held_out_users(len(feedback.users)), max_len,
                         options.seed)
    popularity = rewarded_popularity(feedback, split.train)

    def baselines(targets: RewardedTargets) -> dict:
        return {"popularity": rewarded_hits(popularity.score, targets, feedback.vocab_size, ks)}

    return PolicyRunData(
        feedback.vocab_size, split.logs,
        RewardedHitEvaluation(split.valid_targets, feedback.vocab_size, max_len, ks),
        f"ndcg@{options.k}",
        lambda policy: rewarded_hits(history_scores(policy, max_len), split.test_targets,
                                     feedback.vocab_size, ks),
        baselines(split.test_targets), baselines(split.valid_targets),
        pad_left(split.valid_targets.histories[:WARMUP_USERS], max_len), True,
        _logged_summary(split, options), PROTOCOL,
        logged_off_policy(split, popularity, options.k, max_len,
                          options.policy_config(feedback.vocab_size).max_weight),
        repeats=(repeat_rate([feedback.items[row] for row in split.train]), "logged actions"),
        histories=(feedback.items, split.train),
        valid_logs=(logged_events(feedback, split.valid, max_len)
                    if options.behaviour_refit_epochs else None), valid_rows=split.valid)


def run_policy_training(options: PolicyOptions, callbacks=()) -> dict:
    """Trains, evaluates and exports one attention policy; writes `metrics.json`, the training
    curves, TensorBoard logs and the weights to `output` (module docstring for the protocols).

    Early stopping on the validation reward@k (simulator) or NDCG@k (files; `patience`
    epochs) restores the best epoch's weights before the test; `max_train_minutes` stops
    training cleanly mid-epoch; with `backup_dir` a restarted run resumes after the last
    completed epoch, with `ema_decay` epochs end on an average of the weights
    (`fit_with_run_callbacks`). As in the other runs, `strategy` trains on several devices or
    machines (global batch `batch_size`; only the chief writes `output` and `export_root`) and
    `jit_compile` XLA-compiles the train step on fixed-shape batches (the last partial batch of
    an epoch dropped).

    Args:
        options: the run's options.
        callbacks: extra Keras callbacks, run after the run's own ones.

    Returns:
        The metrics dict written to `output/metrics.json` (plus `"export_path"` when
        `export_root` is set): `test` / `valid` metrics (simulator: `{"reward@1", "reward@k"}`,
        the true expected reward, and `baselines` `{"logging", "popularity", "best"}` on the
        test users; files: `{"hr@k", "ndcg@k"}` rewarded hits, `baselines` `{"popularity"}`
        and `protocol`), `off_policy` (IPS / SNIPS on the test users' logged rounds,
        `training.off_policy_evaluation`), `best_epoch`, `train_seconds`, `epochs`,
        `stopped_by_time_budget`, `resumed_epochs`, `dataset`, `model`, `options`, `history`.
    """
    return run_under_strategy(options, _run, callbacks)


def _run(options: PolicyOptions, strategy: tf.distribute.Strategy, out: Path,
         export_root: str | Path | None, callbacks=()) -> dict:
    data = (synthetic_run_data(options) if options.format == "synthetic"
            else logged_run_data(options))
    fields, chosen = choose_behaviour_mask(options.model, *data.repeats)
    config = model_config(AttentionPolicyConfig, fields, data.vocab_size)
    policy = build_policy(config, options.learning_rate, options.jit_compile, strategy)
    started = time.monotonic()
    fixed = options.jit_compile  # one batch shape: XLA compiles the train step once
    train = logged_batches(data, config, options)
    if fixed:
        require_full_batch(train, f"the {len(data.logs['action'])} logged events",
                           options.batch_size)
    fitted = fit_with_run_callbacks(policy, shard_by_data(train), data.evaluation, options,
                                    data.monitor, out / "tensorboard", callbacks)
    train_seconds = time.monotonic() - started + fitted.budget.previous  # + before a restart
    history, records = fitted.history, fitted.records
    refit = None  # the head alone after the policy's best epoch: the policy is unchanged
    left = (None if options.max_train_minutes is None  # the refit shares the time budget
            else options.max_train_minutes - train_seconds / 60.0)
    if options.behaviour_refit_epochs and left is not None and left <= 0:
        refit = {"skipped": "the --max-train-minutes budget was spent by the policy's training"}
    elif options.behaviour_refit_epochs:
        valid = shard_by_data(logged_batches(data, config, options, valid=True))
        refit = refit_behaviour_head(policy, shard_by_data(train), valid,
                                     options.behaviour_refit_epochs, options.patience,
                                     options.learning_rate, options.jit_compile,
                                     options.verbose, strategy, minutes=left)
    best = max(records, key=lambda r: r[data.monitor]) if records else {}
    test = data.test_metrics(policy)
    metrics = {
        "test": test,
        "valid": {name: best[name] for name in test if name in best},
        "best_epoch": best.get("epoch"),
        **({"protocol": data.protocol} if data.protocol else {}),
        "baselines": data.baselines,
        **({"off_policy": data.off_policy(policy)} if data.off_policy else {}),
        "train_seconds": round(train_seconds, 2),
        "epochs": len(history.get("loss", [])),
        "stopped_by_time_budget": fitted.budget.stopped,
        "resumed_epochs": fitted.resumed_epochs,  # epochs restored from --backup-dir
        "dataset": data.dataset,
        "model": config.to_dict(),
        "data_defaults": chosen,  # model fields chosen from the data (policy_history.py)
        **({"behaviour_refit": refit} if refit else {}),  # behaviour_refit.py
        "options": {key: v for key, v in dataclasses.asdict(options).items() if key != "model"},
        "history": {**{name: [float(x) for x in values] for name, values in history.items()
                       if not name.startswith("val_")}, "valid": records},
    }
    plot_training_curves(history, records, out / "training_curves.png", data.valid_baselines,
                         metric=data.monitor)
    policy.save_weights(str(out / "checkpoint" / "weights"))
    if options.export_root:
        path = export_policy(policy, export_root, options.name,
                             metadata={"metrics": {"test": test},
                                       "best_epoch": metrics["best_epoch"],
                                       **({"protocol": data.protocol} if data.protocol else {})},
                             warmup=data.warmup, max_k=options.k,
                             exclude_history=data.exclude_history)
        record_export(metrics, export_root, options.name, path)
    write_json(out / "metrics.json", metrics)
    return metrics


def logged_batches(data: PolicyRunData, config: AttentionPolicyConfig, options: PolicyOptions,
                   valid: bool = False) -> tf.data.Dataset:
    """The training users' logged rounds as `fit` batches (shuffled; the last partial batch
    dropped with `jit_compile`), or the validation users' in order (`valid`), with each
    round's full history (`"seen"`) when a file's head trains masked."""
    logs, rows = ((data.valid_logs, data.valid_rows) if valid
                  else (data.logs, None if data.histories is None else data.histories[1]))
    batching = {"batch_size": options.batch_size, "shuffle": not valid, "seed": options.seed,
                "drop_remainder": options.jit_compile and not valid}
    if config.behaviour_exclude_history and data.histories is not None:  # the full histories
        return seen_dataset(logs, data.histories[0], rows, data.vocab_size, **batching)
    return logged_dataset(logs, **batching)


def _threshold(options: PolicyOptions) -> float:
    return MOVIELENS_THRESHOLD if options.reward_threshold is None else options.reward_threshold


def _logged_summary(split: LoggedSplit, options: PolicyOptions) -> dict:
    rewards = split.logs["reward"]
    reward = (f"rating >= {_threshold(options)}"
              if options.format == "movielens" else f"column {options.reward_col or 'reward'!r}")
    return {"name": Path(options.data).name, "format": options.format, "reward": reward,
            "users": len(split.feedback.users), "items": split.feedback.vocab_size - 2,
            "train_users": len(split.train), "valid_users": len(split.valid),
            "test_users": len(split.test), "valid_evaluated": len(split.valid_targets.rows),
            "test_evaluated": len(split.test_targets.rows), "logged_events": len(rewards),
            "logged_reward_rate": round(float((rewards > 0).mean()), 4)}


def policy_results_table(metrics: dict) -> str:
    """A plain-text table of the test users' metrics: on the simulator the true expected
    reward of the policy against the logging policy, popularity and the best possible; on a
    file (`"protocol"` in `metrics`) the rewarded hits against popularity of rewarded items.
    With `"off_policy"` in `metrics`, a SNIPS column per propensity source (`-`: not
    estimated), and a line for each estimate's mean-weight `"warning"`.

    Example:
    >>> print(policy_results_table({"test": {"reward@1": 0.55, "reward@5": 0.44},
    ...     "baselines": {"logging": {"reward@1": 0.13, "reward@5": 0.13},
    ...                   "best": {"reward@1": 0.8, "reward@5": 0.65}},
    ...     "off_policy": {"k": 5, "rounds": 2000,
    ...                    "estimates": {"policy": {"true": {"snips": 0.43}},
    ...                                  "logging": {"true": {"snips": 0.13, "warning": "W"}}}},
    ...     "dataset": {"test_users": 400, "logged_events": 7000}}))
    test (400 held-out users; true expected reward of the top-k; 7000 logged events)
                         reward@1    reward@5  SNIPS true
    policy                 0.5500      0.4400      0.4300
    logging policy         0.1300      0.1300      0.1300
    best possible          0.8000      0.6500           -
    off-policy estimates of reward@5 on 2000 logged rounds of the test users
    warning (logging policy, SNIPS true): W
    """
    names = {"logging": "logging policy", "best": "best possible"}
    rows = {"policy": dict(metrics["test"]), **{name: dict(values) for name, values
                                                in metrics["baselines"].items()}}
    keys = list(metrics["test"])
    off_policy = metrics.get("off_policy", {})
    for name, sources in off_policy.get("estimates", {}).items():
        for source, estimate in sources.items():
            keys += [f"SNIPS {source}"] if f"SNIPS {source}" not in keys else []
            rows.setdefault(name, {})[f"SNIPS {source}"] = estimate["snips"]
    dataset = metrics["dataset"]
    title = (f"{dataset['test_users']} held-out users; true expected reward of the top-k"
             if "protocol" not in metrics else
             f"{dataset['test_evaluated']} of {dataset['test_users']} held-out users with a "
             f"rewarded event; {metrics['protocol']}; popularity of the training users' "
             "rewarded items")
    widths = [max(12, len(key) + 2) for key in keys]
    lines = [f"test ({title}; {dataset['logged_events']} logged events)",
             f"{'':17s}" + "".join(f"{key:>{width}s}" for key, width in zip(keys, widths))]
    for name, values in rows.items():
        lines.append(f"{names.get(name, name):17s}" + "".join(
            f"{values[key]:{width}.4f}" if values.get(key) is not None else f"{'-':>{width}s}"
            for key, width in zip(keys, widths)))
    if "estimates" in off_policy:
        lines.append(f"off-policy estimates of reward@{off_policy['k']} on "
                     f"{off_policy['rounds']} logged rounds of the test users")
        lines += [f"warning ({names.get(name, name)}, SNIPS {source}): {estimate['warning']}"
                  for name, sources in off_policy["estimates"].items()
                  for source, estimate in sources.items() if estimate.get("warning")]
    elif "skipped" in off_policy:
        lines.append(f"off-policy estimates skipped: {off_policy['skipped']}")
    return "\n".join(lines)
