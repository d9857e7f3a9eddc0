"""The user's history out of the policy's behaviour head (`behaviour_exclude_history`): when a
run turns it on, and the training batches that carry each round's full history.

A ratings log never repeats a user's item, so its logging policy gives zero probability to the
user's earlier items; a behaviour head trained over the whole catalogue puts mass there anyway
(about 22% on ML-100K, docs/BENCHMARKS.md 9g), which deflates every learned propensity.
`tfrec-attn train --model policy` masks the history out of the head's softmax when the logged
actions (almost) never repeat an earlier item of their user, by the rule and threshold with which
`data_defaults` turns on SASRec's `exclude_seen`. The full history can be longer than the
policy's window (`max_len`), so file runs pass it in a `"seen"` multi-hot per round
(`seen_dataset`); without one the model masks the window's items.
"""

from __future__ import annotations

import numpy as np

from tfrec_attn._keras import tf
from tfrec_attn.data import FIRST_ITEM_ID
from tfrec_attn.models.attention_policy import seen_items_mask
from tfrec_attn.training.data_defaults import MAX_REPEAT_RATE
from tfrec_attn.validation import check_positive_int

FIELD = "behaviour_exclude_history"
LOGGED_FEATURES = ("history", "action", "reward", "propensity")  # logged_dataset's


def action_repeat_rate(histories: np.ndarray, actions: np.ndarray) -> float:
    """Share of logged rounds whose action is among the items of its history (padding and OOV
    are not items): the simulator's logs, whose rounds share a user's fixed history.

    Example:
    >>> action_repeat_rate(np.array([[0, 2, 3], [0, 0, 4], [1, 1, 1]]), np.array([3, 5, 1]))
    0.3333333333333333
    """
    actions = np.asarray(actions)
    if not len(actions):
        return 0.0
    hits = (np.asarray(histories) == actions[:, None]) & (actions[:, None] >= FIRST_ITEM_ID)
    return float(hits.any(axis=1).mean())


def choose_behaviour_mask(model: dict, rate: float, measured: str) -> tuple[dict, dict]:
    """`model` (AttentionPolicyConfig fields) with `behaviour_exclude_history` chosen from the
    data's repeat `rate` when absent, and the report of the choice (`{}` when the user set it
    or the policy has no behaviour head): on when `rate < MAX_REPEAT_RATE` (1%).

    Args:
        model: the run's model fields.
        rate: share of logged actions that repeat an earlier item of their user.
        measured: what `rate` counts, for the report's reason.

    Returns:
        `(fields, {"behaviour_exclude_history": {"value", "reason"}} or {})`.

    Example:
    >>> fields, report = choose_behaviour_mask({"dim": 8}, 0.0, "logged actions")
    >>> fields
    {'dim': 8, 'behaviour_exclude_history': True}
    >>> print(report[FIELD]["reason"])
    0.00% of logged actions repeat an earlier item of their user (< 1%)
    """
    if FIELD in model or not model.get("behaviour_head", True):
        return dict(model), {}
    value = rate < MAX_REPEAT_RATE
    return {**model, FIELD: value}, {FIELD: {
        "value": value, "reason": f"{rate:.2%} of {measured} repeat an earlier item of their "
                                  f"user ({'<' if value else '>='} {MAX_REPEAT_RATE:.0%})"}}


def seen_dataset(logs: dict, sequences: list[np.ndarray], rows: np.ndarray, vocab_size: int,
                 batch_size: int = 256, shuffle: bool = True, seed: int = 0,
                 drop_remainder: bool = False) -> tf.data.Dataset:
    """`bandit_simulator.logged_dataset`'s shuffled batches plus `"seen"`, a boolean
    `(batch, vocab_size)` multi-hot of each round's full history (`sequences[user][:end]`, the
    round's `logs["user"]` and `logs["end"]`), for `behaviour_exclude_history`. `logs` are
    `logged_feedback.logged_events` of `rows`, or the rounds of them `held_out_events` keeps.

    The histories are stored once per user (ragged) and gathered per batch, not per round (a
    per-round copy is quadratic in the history length: 6 million ids on ML-100K). Hand-written
    next to `logged_dataset`, which takes its four features only.

    Example:
    >>> from tfrec_attn.training.logged_feedback import LoggedFeedback, logged_events
    >>> from tfrec_attn.data import Vocabulary
    >>> feedback = LoggedFeedback([np.array([2, 3, 4])], [np.ones(3, np.float32)], ["u"],
    ...                           Vocabulary(list("abc")))
    >>> logs = logged_events(feedback, np.array([0]), max_len=1)
    >>> batch = next(iter(seen_dataset(logs, feedback.items, np.array([0]), 5, shuffle=False)))
    >>> batch["history"].numpy().tolist(), batch["seen"].numpy().astype(int).tolist()
    ([[2], [3]], [[0, 0, 1, 0, 0], [0, 0, 1, 1, 0]])
    """
    check_positive_int("batch_size", batch_size)
    users, ends = (np.asarray(logs.get(key, ()), np.int64) for key in ("user", "end"))
    lengths = np.asarray([len(s) for s in sequences], np.int64)
    if not (len(users) == len(ends) == len(logs["action"]) and np.isin(users, rows).all()
            and ((ends >= 1) & (ends < lengths[users])).all()):
        raise ValueError("logs must be logged_events(feedback, rows) of the same rows, or some "
                         "of their rounds: every round's 'user' among the rows and its 'end' "
                         f"within the user's events ({len(logs['action'])} rounds)")
    flat = tf.constant(np.concatenate([np.asarray(s, np.int64) for s in sequences]))
    starts = tf.constant(np.cumsum([0] + [len(s) for s in sequences[:-1]]), tf.int64)
    features = {**{key: logs[key] for key in LOGGED_FEATURES}, "seen_row": users,
                "seen_end": ends}

    def with_seen(batch: dict) -> dict:
        start = tf.gather(starts, batch.pop("seen_row"))
        ids = tf.gather(flat, tf.ragged.range(start, start + batch.pop("seen_end")))
        return {**batch, "seen": seen_items_mask(ids, vocab_size)}

    dataset = tf.data.Dataset.from_tensor_slices(features)
    if shuffle:
        dataset = dataset.shuffle(len(users), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size, drop_remainder=drop_remainder).map(
        with_seen, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
