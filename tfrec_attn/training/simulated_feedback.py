"""The planted bandit environment as a policy run's data (`tfrec-attn train --model policy
--format synthetic`): the user split and its logs, and the TRUE expected reward of a policy's
top-k (`BanditSimulator.expected_reward`, no off-policy estimate) per epoch and against the
logging policy, popularity and the best possible. The file-based counterpart, with an offline
proxy instead of true rewards, is `training.logged_feedback`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from tfrec_attn._keras import tf
from tfrec_attn.models import AttentionPolicy
from tfrec_attn.training.bandit_simulator import BanditSimulator
from tfrec_attn.training.callbacks import EpochEvaluation

SCORE_BATCH = 1024  # histories scored at once (bounds the memory of the catalogue scores)


@dataclasses.dataclass
class PolicySplit:
    """The environment and its users: rows of `sim`'s `train` (logged), `valid` and `test`
    users, and the training users' `logs` (`BanditSimulator.log`)."""

    sim: BanditSimulator
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    logs: dict[str, np.ndarray]


def policy_scores(policy: AttentionPolicy) -> Callable[[np.ndarray], np.ndarray]:
    """`histories (n, T) -> (n, vocab)` policy logits, scored `SCORE_BATCH` rows at a time."""
    def score(histories: np.ndarray) -> np.ndarray:
        return np.concatenate([
            policy(tf.constant(histories[i:i + SCORE_BATCH]))["logits"].numpy()
            for i in range(0, len(histories), SCORE_BATCH)])
    return score


def reward_at(sim: BanditSimulator, score_fn: Callable, users: np.ndarray,
              ks: tuple[int, ...]) -> dict[str, float]:
    """`{"reward@k": true expected reward of the top-k}` for each of `ks` on `users`."""
    return {f"reward@{k}": sim.expected_reward(score_fn, users, k) for k in ks}


class PolicyEvaluation(EpochEvaluation):
    """The true expected reward@k of the policy's top-k on held-out users after every epoch.

    Metrics land in `logs` as `{prefix}reward@k` (for `EarlyStopping`, `TensorBoard` and
    `History`: put it before those); `records` holds `{"epoch", "reward@k", ...}` per epoch.

    Args:
        sim: the environment (its planted reward probabilities are the truth).
        users: rows of the evaluated users.
        ks: the cut-offs.
        prefix: log-name prefix. Defaults to `"val_"`.

    Example:
    >>> from tfrec_attn.models import AttentionPolicyConfig
    >>> sim = BanditSimulator(num_users=10, num_items=6, max_len=4)
    >>> policy = AttentionPolicy(AttentionPolicyConfig(vocab_size=sim.vocab_size, max_len=4,
    ...                                                dim=8))
    >>> evaluation = PolicyEvaluation(sim, np.arange(5), ks=(1, 3))
    >>> evaluation.set_model(policy)  # `model.fit(..., callbacks=[evaluation])` does this
    >>> logs = {}
    >>> evaluation.on_epoch_end(0, logs)
    >>> sorted(logs), 0 < logs["val_reward@3"] < 1
    (['val_reward@1', 'val_reward@3'], True)
    """

    def __init__(self, sim: BanditSimulator, users: np.ndarray, ks: tuple[int, ...],
                 prefix: str = "val_"):
        super().__init__(prefix=prefix)
        self.sim, self.users, self.ks = sim, np.asarray(users), tuple(ks)

    def compute_metrics(self) -> dict[str, float]:
        return reward_at(self.sim, policy_scores(self.model), self.users, self.ks)


def baseline_rewards(split: PolicySplit, users: np.ndarray,
                     ks: tuple[int, ...]) -> dict[str, dict]:
    """reward@k on `users` of the logging policy (k draws of `beta`: its value does not depend
    on k), popularity (the `k` items logged most often, for every user) and the best possible."""
    sim = split.sim
    counts = np.bincount(split.logs["action"], minlength=sim.vocab_size).astype(np.float64)
    popularity = reward_at(sim, lambda h: np.tile(counts, (len(h), 1)),
                           users, ks)
    logging = sim.logging_value(users)
    return {"logging": {f"reward@{k}": logging for k in ks}, "popularity": popularity,
            "best": {f"reward@{k}": sim.best_value(users, k) for k in ks}}


def simulated_summary(split: PolicySplit, format: str = "synthetic") -> dict:
    """The run's `dataset` entry: sizes of the environment, the user split and the logs."""
    rewards = split.logs["reward"]
    return {"name": "bandit_simulator", "format": format,
            "users": split.sim.num_users, "items": split.sim.num_items,
            "train_users": len(split.train), "valid_users": len(split.valid),
            "test_users": len(split.test), "logged_events": len(rewards),
            "logged_reward_rate": round(float(rewards.mean()), 4)}
