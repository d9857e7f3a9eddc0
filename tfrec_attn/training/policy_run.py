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
users). `metrics.json` says so in `"protocol"`. The item vocabulary is fitted on the training
users' items only (`logged_feedback.training_vocabulary`), so the held-out users' items leak
nothing into the model: an item only held-out users have is OOV in their histories (its position
kept), never a candidate, and a held-out target or logged round on it (off-policy estimates,
behaviour refit) is left out; the dataset summary counts them (`"unknown_item_targets"`,
`"unknown_item_rounds"`) and its `"items"` are the training users'.

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
from tfrec_attn.data import Vocabulary, pad_left, read_interactions
from tfrec_attn.export.policy import export_policy
from tfrec_attn.models import AttentionPolicy, AttentionPolicyConfig
from tfrec_attn.training.backup import CompletedStage, remove_backup
from tfrec_attn.training.bandit_simulator import BanditSimulator, logged_dataset
from tfrec_attn.training.behaviour_refit import refit_behaviour_head
from tfrec_attn.training.callbacks import EpochEvaluation
from tfrec_attn.training.data_defaults import repeat_rate
from tfrec_attn.training.distribution import shard_by_data
from tfrec_attn.training.fitting import (
    RESUMABLE_CHANGES,
    fit_with_run_callbacks,
    identity_options,
)
from tfrec_attn.training.logged_feedback import (
    LoggedFeedback,
    LoggedSplit,
    RewardedHitEvaluation,
    RewardedTargets,
    feedback_from_frame,
    held_out_events,
    history_scores,
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
from tfrec_attn.training.policy_options import PolicyOptions
from tfrec_attn.training.run import record_export, run_under_strategy, write_json
from tfrec_attn.training.run_options import (
    data_source,
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
)

WARMUP_USERS = 100  # validation histories written as TF Serving warm-up records
MOVIELENS_THRESHOLD = 4.0  # reward = 1 for ratings >= this (4 and 5 stars), else 0
PROTOCOL = "rewarded-hit (offline proxy; true reward only on the simulator)"


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
    head's refit, and (files) the training users' item `vocab`, written to
    `item_vocabulary.json`."""

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
    vocab: Vocabulary | None = None


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
        frame = read_interactions(options.data, "movielens", with_rating=True,
                                  on_error=options.on_error)
        return feedback_from_frame(frame, "rating", options.min_events, _threshold(options))
    frame = read_interactions(options.data, options.format,
                              reward_col=options.reward_col or "reward", on_error=options.on_error)
    return feedback_from_frame(frame, "reward", options.min_events)


def logged_run_data(options: PolicyOptions) -> PolicyRunData:
    """A file's logs and the rewarded-hit evaluation (`training.logged_feedback`), all in the
    training users' vocabulary (`logged_split`)."""
    loaded = load_feedback(options)
    max_len, ks = options.model["max_len"], (options.k,)
    split = logged_split(loaded, *options.held_out_users(len(loaded.users)), max_len,
                         options.seed)
    feedback = split.feedback
    if options.k > feedback.vocab_size - 2:
        raise DataOptionError(f"k must be at most the number of items the training users have "
                              f"({feedback.vocab_size - 2}). Received: k={options.k}")
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
        valid_logs=(held_out_events(feedback, split.valid, max_len)[0]  # OOV actions out
                    if options.behaviour_refit_epochs else None), valid_rows=split.valid,
        vocab=feedback.vocab)


def run_policy_training(options: PolicyOptions, callbacks=()) -> dict:
    """Trains, evaluates and exports one attention policy; writes `metrics.json`, the training
    curves, TensorBoard logs and the weights to `output` (module docstring for the protocols).

    Early stopping on the validation reward@k (simulator) or NDCG@k (files; `patience`
    epochs) restores the best epoch's weights before the test; `max_train_minutes` stops
    training cleanly mid-epoch; with `backup_dir` a restarted run resumes after the last
    completed epoch, with `ema_decay` epochs end on an average of the weights
    (`fit_with_run_callbacks`). With `backup_dir` the fitted policy and what the report needs
    from its fit are also kept (`backup_dir/policy_fitted`, `backup.CompletedStage`) and the
    head's refit backs up its own epochs (`backup_dir/behaviour_refit`), so a run interrupted
    during the refit resumes the refit without training the policy again; a restart whose
    model, data summary or options (other than `output`, `export_root`, `name`, `verbose`,
    `overwrite`) differ from the kept fit's is refused with a `ValueError`, and the backup is
    deleted only once `metrics.json` is written. As in the other runs, `strategy` trains on
    several devices or machines (global batch `batch_size`; only the chief writes `output` and
    `export_root`) and `jit_compile` XLA-compiles the train step on fixed-shape batches (the
    last partial batch of an epoch dropped).

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
    source = data_source(options)  # the bytes just read
    fields, chosen = choose_behaviour_mask(options.model, *data.repeats)
    config = model_config(AttentionPolicyConfig, fields, data.vocab_size)
    policy = build_policy(config, options.learning_rate, options.jit_compile, strategy)
    started = time.monotonic()
    fixed = options.jit_compile  # one batch shape: XLA compiles the train step once
    train = logged_batches(data, config, options)
    if fixed:
        require_full_batch(train, f"the {len(data.logs['action'])} logged events",
                           options.batch_size)
    # With --backup-dir the fitted policy is kept until the run is done: a restart skips its fit
    # and the refit has its own backup
    fitted_name, refit_name = "policy_fitted", "behaviour_refit"  # in backup_dir
    stage = (CompletedStage(options.backup_dir, fitted_name, {
        "model": config.to_dict(), "dataset": data.dataset, "data_source": source,
        "options": identity_options(dataclasses.asdict(options),
                                    ("model", *RESUMABLE_CHANGES))})
        if options.backup_dir else None)
    restored = stage.load() if stage else None
    if restored:
        policy.set_weights(restored[0])
        fit = restored[1]
    else:
        fitted = fit_with_run_callbacks(policy, shard_by_data(train), data.evaluation, options,
                                        data.monitor, out / "tensorboard", callbacks, source)
        fit = {"history": fitted.history, "records": fitted.records,
               "train_seconds": time.monotonic() - started + fitted.budget.previous,
               "stopped": fitted.budget.stopped,
               "resumed_epochs": fitted.resumed_epochs}  # seconds: + before a restart
        if stage:
            stage.save(policy.get_weights(), fit, strategy)
    train_seconds, history, records = fit["train_seconds"], fit["history"], fit["records"]
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
                                     options.verbose, strategy, minutes=left,
                                     backup_dir=options.backup_dir and str(
                                         Path(options.backup_dir) / refit_name))
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
        "stopped_by_time_budget": fit["stopped"],
        "resumed_epochs": fit["resumed_epochs"],  # epochs restored from --backup-dir
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
    if data.vocab is not None:  # raw item id -> the ids the policy and its export read
        data.vocab.to_json(out / "item_vocabulary.json")
    if options.export_root:
        path = export_policy(policy, export_root, options.name,
                             metadata={"metrics": {"test": test},
                                       "best_epoch": metrics["best_epoch"],
                                       **({"protocol": data.protocol} if data.protocol else {})},
                             warmup=data.warmup, max_k=options.k,
                             exclude_history=data.exclude_history)
        record_export(metrics, export_root, options.name, path)
    write_json(out / "metrics.json", metrics)
    if options.backup_dir:  # the whole run is done
        remove_backup(options.backup_dir, (fitted_name, refit_name), strategy)
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
            "test_evaluated": len(split.test_targets.rows),
            # held-out targets / logged rounds on an item no training user has: left out
            "unknown_item_targets": {"valid": split.valid_targets.unknown,
                                     "test": split.test_targets.unknown},
            "unknown_item_rounds": dict(split.unknown_rounds), "logged_events": len(rewards),
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
             f"rewarded event on a training item; {metrics['protocol']}; popularity of the "
             "training users' rewarded items")
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
