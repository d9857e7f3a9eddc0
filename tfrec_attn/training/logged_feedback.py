"""Logged bandit feedback from interaction files, for off-policy recommenders (`AttentionPolicy`).

A ratings or feedback table (`data.read_movielens(..., with_rating=True)`,
`data.read_table(..., reward_col=...)`) becomes each user's time-ordered events with a reward
each (`feedback_from_frame`; a rating becomes 1 if it is at least a threshold, else 0). Every
event after a user's first is one logged round (`logged_events`): the state is the previous
`max_len` items (left-padded), the action the event's item, the reward its reward. Files carry
no propensities of the logging policy, so the logs hold NaN there and the policy must learn
them (`propensity="learned"`: its behaviour head, Chen et al. 2019).

Real logs cannot tell what reward a recommendation nobody logged would have earned, so held-out
users are scored by an offline proxy, the rewarded hit (`rewarded_targets`, `rewarded_hits`):
the item of a user's last rewarded event (reward > 0) is the target, every event before it the
history, and HR@k / NDCG@k are the target's in the top-k of all items outside the history
(`evaluation.evaluate`, full protocol). Users without a rewarded event after their first are
not evaluated.

The users are split into training, validation and test users (`logged_split`), and the item
vocabulary is then refitted on the training users' items alone (`training_vocabulary`): an item
only held-out users have is OOV (id 1) in their histories (positions kept), never a candidate,
and leaks nothing of their items into the model. A held-out target or logged round whose item is
OOV cannot be recommended or have a propensity, so it is left out and counted
(`RewardedTargets.unknown`, `LoggedSplit.unknown_rounds`, `held_out_events`).

Example:
>>> import pandas as pd
>>> frame = pd.DataFrame({"user": ["u"] * 3, "item": ["a", "b", "c"], "timestamp": [1, 2, 3],
...                       "rating": [5.0, 2.0, 4.0]})
>>> feedback = feedback_from_frame(frame, "rating", min_events=2, threshold=4.0)
>>> logs = logged_events(feedback, np.array([0]), max_len=2)
>>> logs["history"].tolist(), logs["action"].tolist(), logs["reward"].tolist()
([[0, 2], [2, 3]], [3, 4], [0.0, 1.0])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from tfrec_attn._keras import keras, tf
from tfrec_attn.data import (
    FIRST_ITEM_ID,
    OOV_ID,
    PAD_ID,
    DataError,
    Vocabulary,
    build_sequences,
    pad_left,
    sort_interactions,
)
from tfrec_attn.evaluation import PopularityRecommender, evaluate
from tfrec_attn.training.callbacks import EpochEvaluation
from tfrec_attn.validation import DataOptionError

ScoreFn = Callable[[list[np.ndarray]], np.ndarray]  # histories -> (batch, vocab_size) scores


@dataclasses.dataclass
class LoggedFeedback:
    """Users' time-ordered events and their rewards.

    Attributes:
        items: one int64 array of item ids (`vocab`'s) per user, oldest first.
        rewards: float32 arrays aligned with `items`.
        users: raw user ids, aligned with `items`.
        vocab: the item vocabulary (ids 0 and 1 are padding and OOV).
    """

    items: list[np.ndarray]
    rewards: list[np.ndarray]
    users: list[str]
    vocab: Vocabulary

    @property
    def vocab_size(self) -> int:
        return self.vocab.size


def feedback_from_frame(frame: pd.DataFrame, column: str, min_events: int = 2,
                        threshold: float | None = None) -> LoggedFeedback:
    """Per-user events and rewards from an interactions frame with a numeric `column`.

    Args:
        frame: `user`, `item`, `timestamp` and `column` (any order; sorted stably by user and
            time, as `data.build_sequences` does).
        column: the rating or reward column.
        min_events: users with fewer events are dropped (a user with one event logs nothing).
        threshold: reward = 1 where `column >= threshold`, else 0; `None` takes `column` as is.

    Returns:
        `LoggedFeedback` of the kept users; the vocabulary is fitted on their items (a run
        refits it on its training users' items: `logged_split`).
    """
    if isinstance(min_events, bool) or not isinstance(min_events, int) or min_events < 1:
        raise ValueError(f"min_events must be a positive int. Received: min_events={min_events!r}")
    if column not in frame.columns:
        raise DataError("<DataFrame>", f"missing column {column!r}; present columns: "
                        f"{[str(c) for c in frame.columns]}")
    frame = sort_interactions(frame)
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(np.float64)
    if not np.isfinite(values).all():
        row = int(np.flatnonzero(~np.isfinite(values))[0])
        raise DataError("<DataFrame>", f"non-numeric {column} {frame[column].iloc[row]!r} in "
                        f"row {row} of user {frame['user'].iloc[row]!r}")
    rewards = values if threshold is None else (values >= threshold).astype(np.float64)
    data = build_sequences(frame, min_events=min_events)  # the same stable order
    kept = frame["user"].astype(str).isin(set(data.users)).to_numpy()
    bounds = np.cumsum([len(s) for s in data.sequences])[:-1]
    return LoggedFeedback(data.sequences, np.split(rewards[kept].astype(np.float32), bounds),
                          data.users, data.vocab)


def round_positions(sequences: list[np.ndarray], rows: np.ndarray) -> tuple[np.ndarray,
                                                                            np.ndarray]:
    """`(row, end)` of every logged round of `rows` (one per event after each user's first, in
    `logged_events`' order, which it builds its rounds from): the round's action is
    `sequences[row][end]`, its full history `sequences[row][:end]`.

    Example:
    >>> round_positions([np.array([2, 3, 4]), np.array([5, 6])], np.array([1, 0]))
    (array([1, 0, 0]), array([1, 1, 2]))
    """
    rows = np.asarray(rows, np.int64)
    lengths = [len(sequences[r]) - 1 for r in rows]
    return (np.repeat(rows, lengths),
            np.concatenate([np.arange(1, n + 1) for n in lengths] or [np.zeros(0, np.int64)]))


def logged_events(feedback: LoggedFeedback, rows: np.ndarray, max_len: int) -> dict:
    """One logged round per event after each user's first, for `rows` (user indices).

    Returns:
        `{"user" (n,) row, "end" (n,) int64 the action's position in its user's events (its
        full history: `feedback.items[user][:end]`), "history" (n, max_len) int64 left-padded
        previous items, "action" (n,) item ids, "reward" (n,) float32, "propensity" (n,) NaN:
        unknown}`, the input of `training.bandit_simulator.logged_dataset`.
    """
    users, ends = round_positions(feedback.items, rows)
    histories = [feedback.items[r][max(0, end - max_len):end] for r, end in zip(users, ends)]
    return {"user": users, "end": ends, "history": pad_left(histories, max_len),
            "action": np.asarray([feedback.items[r][e] for r, e in zip(users, ends)], np.int64),
            "reward": np.asarray([feedback.rewards[r][e] for r, e in zip(users, ends)],
                                 np.float32),
            "propensity": np.full(len(users), np.nan, np.float32)}


def held_out_events(feedback: LoggedFeedback, rows: np.ndarray,
                    max_len: int) -> tuple[dict, int]:
    """`(logged_events of rows without the rounds whose action is OOV, how many were left
    out)`: an item no training user has (`training_vocabulary`) has no propensity and no
    policy can show it, so the held-out users' rounds on it are not evaluated.

    Example:
    >>> feedback = LoggedFeedback([np.array([2, 1, 3])], [np.ones(3, np.float32)], ["u"],
    ...                           Vocabulary(list("ab")))
    >>> logs, unknown = held_out_events(feedback, np.array([0]), max_len=2)
    >>> logs["action"].tolist(), logs["end"].tolist(), logs["history"].tolist(), unknown
    ([3], [2], [[2, 1]], 1)
    """
    logs = logged_events(feedback, rows, max_len)
    known = logs["action"] != OOV_ID
    return {key: values[known] for key, values in logs.items()}, int((~known).sum())


@dataclasses.dataclass
class RewardedTargets:
    """Held-out users' last rewarded events: `rows` (user indices), `histories` (the events
    before each, all kept: `max_len` is the scorer's business), `targets` (item ids) and
    `unknown`, the users left out because their target is OOV (no training user has it)."""

    rows: np.ndarray
    histories: list[np.ndarray]
    targets: np.ndarray
    unknown: int = 0


def rewarded_targets(feedback: LoggedFeedback, rows: np.ndarray) -> RewardedTargets:
    """The evaluation targets of `rows`: each user's last event with reward > 0 that has at
    least one event before it (users without one are left out), unless its item is OOV (no
    policy can recommend it: the user is left out and counted in `unknown`).

    Example:
    >>> feedback = LoggedFeedback([np.array([2, 3, 4]), np.array([5, 2]), np.array([2, 1])],
    ...                           [np.array([1, 1, 0], np.float32), np.array([1, 0], np.float32),
    ...                            np.array([1, 1], np.float32)],
    ...                           ["u", "v", "w"], Vocabulary(list("abcd")))
    >>> targets = rewarded_targets(feedback, np.array([0, 1, 2]))
    >>> targets.rows.tolist(), [h.tolist() for h in targets.histories], targets.targets.tolist()
    ([0], [[2]], [3])
    >>> targets.unknown  # w's target is OOV
    1
    """
    kept, histories, targets, unknown = [], [], [], 0
    for row in np.asarray(rows, np.int64):
        rewarded = np.flatnonzero(feedback.rewards[row] > 0)
        if not len(rewarded) or rewarded[-1] < 1:
            continue
        if feedback.items[row][rewarded[-1]] == OOV_ID:
            unknown += 1
            continue
        kept.append(row)
        histories.append(feedback.items[row][:rewarded[-1]])
        targets.append(feedback.items[row][rewarded[-1]])
    return RewardedTargets(np.asarray(kept, np.int64), histories, np.asarray(targets, np.int64),
                           unknown)


def rewarded_hits(score_fn: ScoreFn, targets: RewardedTargets, vocab_size: int,
                  ks: Sequence[int]) -> dict[str, float]:
    """`{"hr@k", "ndcg@k"}` for each of `ks`: the targets' ranks among all items outside their
    histories (`evaluation.evaluate`, full protocol, pessimistic ties)."""
    summary = evaluate(score_fn, targets.histories, targets.targets, vocab_size, ks=ks,
                       exclude_history=True)
    return {f"{name}@{k}": summary[f"{name}@{k}"] for k in ks for name in ("hr", "ndcg")}


def rewarded_popularity(feedback: LoggedFeedback, rows: np.ndarray) -> PopularityRecommender:
    """Popularity of rewarded items: each item's count of rewarded events of the users `rows`
    (the training users), the same list for everyone."""
    rewarded = [feedback.items[r][feedback.rewards[r] > 0] for r in rows]
    return PopularityRecommender(feedback.vocab_size).fit(rewarded)


def training_vocabulary(feedback: LoggedFeedback, rows: np.ndarray) -> LoggedFeedback:
    """`feedback` re-encoded with a vocabulary fitted on the items of `rows` (the training
    users) alone (`Vocabulary.fit`: ids 0 padding, 1 OOV): the other users' items none of them
    has become OOV in place, so every history keeps its positions.

    Example:
    >>> feedback = LoggedFeedback([np.array([2, 4]), np.array([3, 4, 5])],
    ...                           [np.ones(2, np.float32), np.ones(3, np.float32)], ["u", "v"],
    ...                           Vocabulary(list("abcd")))
    >>> restricted = training_vocabulary(feedback, np.array([0]))
    >>> restricted.vocab.tokens, [s.tolist() for s in restricted.items]
    (['a', 'c'], [[2, 3], [1, 3, 1]])
    """
    rows = np.asarray(rows, np.int64)
    known = np.unique(np.concatenate([feedback.items[r] for r in rows] + [np.zeros(0, np.int64)]))
    known = known[known >= FIRST_ITEM_ID]
    vocab = Vocabulary.fit(feedback.vocab.inverse(known))
    table = np.full(feedback.vocab_size, OOV_ID, np.int64)  # old id -> new id
    table[PAD_ID] = PAD_ID
    table[known] = vocab.lookup(feedback.vocab.inverse(known))
    return LoggedFeedback([table[items] for items in feedback.items], list(feedback.rewards),
                          list(feedback.users), vocab)


def split_users(num_users: int, num_valid: int, num_test: int,
                seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(train, valid, test)` sorted user indices from one seeded permutation: the first
    `num_test` are test users, the next `num_valid` validation users, the rest train.

    Example:
    >>> [part.tolist() for part in split_users(6, 1, 2, seed=0)]
    [[0, 1, 4], [5], [2, 3]]
    """
    order = np.random.default_rng(seed).permutation(num_users)
    return (np.sort(order[num_test + num_valid:]), np.sort(order[num_test:num_test + num_valid]),
            np.sort(order[:num_test]))


@dataclasses.dataclass
class LoggedSplit:
    """A file's feedback split by users: the `feedback` in the training users' vocabulary
    (`training_vocabulary`), `train` / `valid` / `test` user indices, the training users'
    `logs` (`logged_events`), the held-out users' rewarded targets and `unknown_rounds`, `{"valid",
    "test"}` counts of the held-out users' logged rounds whose action is OOV (left out by
    `held_out_events`)."""

    feedback: LoggedFeedback
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    logs: dict
    valid_targets: RewardedTargets
    test_targets: RewardedTargets
    unknown_rounds: dict[str, int] = dataclasses.field(default_factory=dict)


def logged_split(feedback: LoggedFeedback, num_valid: int, num_test: int, max_len: int,
                 seed: int) -> LoggedSplit:
    """Splits the users (`split_users`), refits the vocabulary on the training users' items
    (`training_vocabulary`), logs the training users' events and finds the held-out users'
    targets; raises `DataOptionError` when a part would be empty (no rewarded target on an
    item a training user has) or no training event is rewarded (nothing to learn from).

    Example:
    >>> frame = pd.DataFrame({"user": list("uuuvvvwww"), "item": list("abcaxbbyc"),
    ...                       "timestamp": [1, 2, 3] * 3, "reward": [1.0] * 9})
    >>> split = logged_split(feedback_from_frame(frame, "reward"), 1, 1, max_len=2, seed=3)
    >>> [split.feedback.users[r] for r in split.train], split.feedback.vocab.tokens
    (['u'], ['a', 'b', 'c'])
    >>> [s.tolist() for s in split.feedback.items], split.unknown_rounds  # x, y: OOV
    ([[2, 3, 4], [2, 1, 3], [3, 1, 4]], {'valid': 1, 'test': 1})
    """
    num_users = len(feedback.users)
    if num_valid + num_test >= num_users:
        raise DataOptionError("valid_users + test_users must leave at least one training user: "
                              f"{num_valid} + {num_test} >= {num_users} users")
    train, valid, test = split_users(num_users, num_valid, num_test, seed)
    feedback = training_vocabulary(feedback, train)
    logs = logged_events(feedback, train, max_len)
    if not (logs["reward"] > 0).any():
        raise DataOptionError(f"none of the {len(logs['reward'])} training events is rewarded "
                              "(reward > 0); check reward_threshold / reward_col")
    parts = {name: rewarded_targets(feedback, rows) for name, rows in (("valid", valid),
                                                                      ("test", test))}
    for name, targets in parts.items():
        if not len(targets.targets):
            unknown = (f" on an item a training user has ({targets.unknown} on other items "
                       "left out)" if targets.unknown else "")
            raise DataOptionError(f"no {name} user has a rewarded event after their "
                                  f"first{unknown}; raise {name}_users")
    unknown_rounds = {name: sum(int((feedback.items[r][1:] == OOV_ID).sum()) for r in rows)
                      for name, rows in (("valid", valid), ("test", test))}
    return LoggedSplit(feedback, train, valid, test, logs, parts["valid"], parts["test"],
                       unknown_rounds)


def history_scores(model: keras.Model, max_len: int) -> ScoreFn:
    """Histories (a list of id arrays) -> the model's `"logits"` of their last `max_len`
    items, left-padded: the `score_fn` of `rewarded_hits` for an `AttentionPolicy`."""
    return lambda batch: model(tf.constant(pad_left(batch, max_len)))["logits"].numpy()


class RewardedHitEvaluation(EpochEvaluation):
    """`rewarded_hits` of the model on held-out users after every epoch: `{prefix}hr@k` and
    `{prefix}ndcg@k` in `logs` (put it before `EarlyStopping`), `{"epoch", "hr@k", ...}` in
    `records`.

    Args:
        targets: the users' `RewardedTargets`.
        vocab_size: ids including padding and OOV.
        max_len: the model's history length.
        ks: the cut-offs.
        prefix: log-name prefix. Defaults to `"val_"`.
    """

    def __init__(self, targets: RewardedTargets, vocab_size: int, max_len: int,
                 ks: Sequence[int], prefix: str = "val_"):
        super().__init__(prefix=prefix)
        self.targets, self.vocab_size = targets, vocab_size
        self.max_len, self.ks = max_len, tuple(ks)

    def compute_metrics(self) -> dict[str, float]:
        return rewarded_hits(history_scores(self.model, self.max_len), self.targets,
                             self.vocab_size, self.ks)
