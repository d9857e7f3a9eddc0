"""Logged bandit feedback with planted user preferences, for off-policy recommenders.

Built on `data.generate_synthetic`: each user's history is their synthetic sequence (its most
recent `max_len` items, left-padded), and their group's preferred genres are the planted truth.
A user `u` of group `g` rewards item `i` with probability

    p(u, i) = quality_i * (1 if genre_i is preferred by g else off_genre_reward)

with `quality_i ~ Uniform(0.1, 0.9)` drawn independently of popularity. The logging policy is
popularity-skewed and ignores the user: `beta(i) = (1 - exploration) * popularity_i^a / Z +
exploration / num_items`. So logged rewards over-represent popular items, and a policy that
imitates rewarded logs (uncorrected REINFORCE) ranks by `beta(i) p(u, i)` rather than `p(u, i)`.

`expected_reward` is the true on-policy value of recommending a policy's top-k items, computed
from `p` (no sampling noise).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from tfrec_attn._keras import tf
from tfrec_attn.data import FIRST_ITEM_ID, generate_synthetic, pad_left
from tfrec_attn.validation import check_positive_int

QUALITY_RANGE = (0.1, 0.9)


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1]. Received: {name}={value!r}")


class BanditSimulator:
    """A seeded environment: user histories, planted rewards and a popularity logging policy.

    Args:
        num_users: users (rows of `histories`).
        num_items: items; item `i` (0-based) has id `i + 2` (0 is padding, 1 OOV).
        max_len: history length of the state.
        num_groups: user groups with distinct preferred genres.
        num_genres: item genres.
        genres_per_group: preferred genres per group.
        mean_length: typical synthetic history length.
        off_genre_reward: reward-probability factor of items outside the preferred genres.
        popularity_exponent: `a` in the logging policy (0: uniform).
        exploration: uniform share of the logging policy (keeps every `beta(i) > 0`).
        seed: the same arguments give the same environment and logs.

    Attributes:
        vocab_size: `num_items + 2`.
        histories: `(num_users, max_len)` int64 left-padded histories.
        groups: `(num_users,)` group of each user.
        preferences: `(num_groups, vocab_size)` reward probabilities (0 for ids 0 and 1).
        logging_policy: `(vocab_size,)` `beta(i)` (0 for ids 0 and 1).

    Example:
    >>> sim = BanditSimulator(num_users=20, num_items=10, max_len=5, seed=0)
    >>> logs = sim.log(events_per_user=2)
    >>> logs["history"].shape, sorted(logs), sim.vocab_size
    ((40, 5), ['action', 'history', 'propensity', 'reward', 'user'], 12)
    """

    def __init__(self, num_users: int = 2000, num_items: int = 50, max_len: int = 10,
                 num_groups: int = 4, num_genres: int = 8, genres_per_group: int = 2,
                 mean_length: float = 8, off_genre_reward: float = 0.1,
                 popularity_exponent: float = 1.0, exploration: float = 0.1, seed: int = 0):
        check_positive_int("max_len", max_len)
        _check_fraction("off_genre_reward", off_genre_reward)
        _check_fraction("exploration", exploration)
        if popularity_exponent < 0:
            raise ValueError("popularity_exponent must be non-negative. "
                             f"Received: popularity_exponent={popularity_exponent!r}")
        frame = generate_synthetic(num_users=num_users, num_items=num_items,
                                   num_groups=num_groups, mean_length=mean_length, seed=seed,
                                   num_genres=num_genres, genres_per_group=genres_per_group)
        self.seed = seed
        self.num_users, self.num_items = num_users, num_items
        self.vocab_size = num_items + FIRST_ITEM_ID
        # Synthetic item "k" (1-based) is id k + 1; users "1".."num_users" are rows 0..n-1.
        users = frame["user"].astype(int).to_numpy() - 1
        order = np.argsort(users, kind="stable")  # keeps each user's time order
        ids = frame["item"].astype(int).to_numpy()[order] + FIRST_ITEM_ID - 1
        starts = np.searchsorted(users[order], np.arange(num_users + 1))
        self.histories = pad_left([ids[a:b] for a, b in zip(starts[:-1], starts[1:])], max_len)
        groups = frame.attrs["user_groups"]
        self.groups = groups.sort_values("user", key=lambda s: s.astype(int))["group"].to_numpy()
        items = frame.attrs["item_features"]
        genre = items["genre"].to_numpy()
        liked = np.zeros((num_groups, num_genres), bool)
        pairs = frame.attrs["group_genres"]
        liked[pairs["group"].to_numpy(), pairs["genre"].to_numpy()] = True
        quality = np.random.default_rng([seed, 1]).uniform(*QUALITY_RANGE, size=num_items)
        self.preferences = np.zeros((num_groups, self.vocab_size))
        self.preferences[:, FIRST_ITEM_ID:] = quality * np.where(liked[:, genre], 1.0,
                                                                 off_genre_reward)
        skew = items["popularity"].to_numpy() ** popularity_exponent
        self.logging_policy = np.zeros(self.vocab_size)
        self.logging_policy[FIRST_ITEM_ID:] = ((1 - exploration) * skew / skew.sum()
                                               + exploration / num_items)

    def _users(self, users) -> np.ndarray:
        users = np.arange(self.num_users) if users is None else np.asarray(users, np.int64)
        if users.ndim != 1 or not len(users) or users.min() < 0 or users.max() >= self.num_users:
            raise ValueError(f"users must be a non-empty 1-D array of rows in [0, "
                             f"{self.num_users}). Received: {users!r}")
        return users

    def log(self, events_per_user: int = 5, users: Sequence[int] | None = None,
            seed: int = 0) -> dict[str, np.ndarray]:
        """Feedback logged under the logging policy: every user gets `events_per_user` draws.

        Args:
            events_per_user: recommendations logged per user.
            users: rows of the users to log (default all).
            seed: draws of the actions and rewards (with the simulator's seed).

        Returns:
            `{"user", "history" (n, max_len), "action" (n,) ids, "reward" (n,) 0/1 float32,
            "propensity" (n,) beta(action)}`.
        """
        check_positive_int("events_per_user", events_per_user)
        users = np.repeat(self._users(users), events_per_user)
        rng = np.random.default_rng([self.seed, 2, seed])
        actions = rng.choice(self.vocab_size, size=len(users), p=self.logging_policy)
        rewards = rng.random(len(users)) < self.preferences[self.groups[users], actions]
        return {"user": users, "history": self.histories[users], "action": actions,
                "reward": rewards.astype(np.float32),
                "propensity": self.logging_policy[actions].astype(np.float32)}

    def reward_probabilities(self, users: Sequence[int] | None = None) -> np.ndarray:
        """`(n, vocab_size)` true reward probabilities of the users (rows `users`)."""
        return self.preferences[self.groups[self._users(users)]]

    def expected_reward(self, policy_scores_fn: Callable, users: Sequence[int] | None = None,
                        k: int = 1) -> float:
        """True mean reward of showing each user the `k` best-scored items (ids >= 2).

        Args:
            policy_scores_fn: `histories (n, max_len) -> scores (n, vocab_size)` (array or
                tensor), e.g. `lambda h: policy(h)["logits"]`.
            users: rows of the users to evaluate (default all).
            k: items shown per user; the value is the mean reward probability over them.

        Returns:
            `mean_u mean_{i in top-k(u)} p(u, i)`.
        """
        users = self._users(users)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.num_items:
            raise ValueError(f"k must be an int in [1, {self.num_items}]. Received: k={k!r}")
        scores = np.asarray(policy_scores_fn(self.histories[users]), np.float64)
        if scores.shape != (len(users), self.vocab_size):
            raise ValueError(f"policy_scores_fn must return ({len(users)}, {self.vocab_size}) "
                             f"scores. Received shape {scores.shape}")
        scores[:, :FIRST_ITEM_ID] = -np.inf
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return float(np.take_along_axis(self.reward_probabilities(users), top, 1).mean())

    def logging_value(self, users: Sequence[int] | None = None) -> float:
        """True mean reward of the (stochastic) logging policy: `mean_u sum_i beta(i) p(u, i)`."""
        return float((self.reward_probabilities(users) @ self.logging_policy).mean())

    def best_value(self, users: Sequence[int] | None = None, k: int = 1) -> float:
        """The highest `expected_reward` any policy can reach (the planted truth's top-k)."""
        return self.expected_reward(lambda _: self.reward_probabilities(users), users, k)


def logged_dataset(logs: dict[str, np.ndarray], batch_size: int = 256, shuffle: bool = True,
                   seed: int = 0, drop_remainder: bool = False) -> tf.data.Dataset:
    """`{"history", "action", "reward", "propensity"}` batches for `AttentionPolicy.fit`
    (`drop_remainder`: drop the last partial batch, so every batch has `batch_size` rows).

    Example:
    >>> logs = BanditSimulator(num_users=8, num_items=6, max_len=4).log(events_per_user=1)
    >>> batch = next(iter(logged_dataset(logs, batch_size=3)))
    >>> sorted(batch), batch["history"].shape
    (['action', 'history', 'propensity', 'reward'], TensorShape([3, 4]))
    """
    check_positive_int("batch_size", batch_size)
    features = {key: logs[key] for key in ("history", "action", "reward", "propensity")}
    actions = np.asarray(features["action"])
    if actions.size and actions.min() < FIRST_ITEM_ID:  # 0/1 are padding/OOV, not actions
        raise ValueError(f"logs['action'] must hold item ids >= {FIRST_ITEM_ID}. "
                         f"Received: min={actions.min()}")
    dataset = tf.data.Dataset.from_tensor_slices(features)
    if shuffle:
        dataset = dataset.shuffle(len(logs["action"]), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
