"""The policy run's off-policy estimates (`metrics.json` `"off_policy"`): the value of showing
one item drawn uniformly from a policy's top-k (reward@k), estimated by IPS / SNIPS
(`evaluation.off_policy`) on the held-out test users' logged rounds.

- Simulator (`simulated_off_policy`): the test users are logged under the simulator's logging
  policy (`events_per_user` rounds each, a draw separate from the training logs). The trained
  policy is estimated twice, with the TRUE propensities `beta(a|s)` and with the policy's
  behaviour head (`behaviour_propensities`), next to its true reward@k (`metrics["test"]`).
- Files (`logged_off_policy`): every event after a test user's first (`logged_events`), with
  the behaviour head's propensities only (a file has none). Estimated: the trained policy and
  popularity of rewarded items (top-k, the user's earlier items excluded, as in the run's
  evaluation), and the logging policy itself (`pi = beta`: its SNIPS is the mean logged reward).

A learned propensity that is too small inflates the weight of its round; the estimates are only
as good as the behaviour head (docs: README's `--model policy` paragraph).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tfrec_attn._keras import tf
from tfrec_attn.data import FIRST_ITEM_ID
from tfrec_attn.evaluation import PopularityRecommender
from tfrec_attn.evaluation.off_policy import off_policy_value, top_k_probabilities
from tfrec_attn.models import AttentionPolicy
from tfrec_attn.models.policy_losses import MIN_BEHAVIOUR_PROBABILITY
from tfrec_attn.training.logged_feedback import LoggedSplit, history_scores, logged_events
from tfrec_attn.training.simulated_feedback import SCORE_BATCH, PolicySplit, policy_scores

SOURCES = {"true": "the simulator's logging policy beta(a)",
           "learned": "the policy's behaviour head beta(a|s)"}


def behaviour_propensities(policy: AttentionPolicy, histories: np.ndarray,
                           actions: np.ndarray) -> np.ndarray | None:
    """`beta(a_i|s_i)` of the behaviour head: the softmax of `"behaviour_logits"` over the real
    items (as its training loss), floored at `MIN_BEHAVIOUR_PROBABILITY` as in training,
    `SCORE_BATCH` rounds at a time; `None` without the head.

    Example:
    >>> from tfrec_attn.models import AttentionPolicyConfig
    >>> policy = AttentionPolicy(AttentionPolicyConfig(vocab_size=6, max_len=2, dim=4))
    >>> p = behaviour_propensities(policy, np.array([[0, 2], [2, 3]]), np.array([4, 5]))
    >>> p.shape, bool(((p > 0) & (p <= 1)).all())
    ((2,), True)
    """
    if not policy.config.behaviour_head:
        return None
    parts = []
    for start in range(0, len(actions), SCORE_BATCH):
        batch = tf.constant(histories[start:start + SCORE_BATCH])
        logits = policy(batch)["behaviour_logits"].numpy()
        logits = logits[:, FIRST_ITEM_ID:].astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        rows = np.arange(len(logits))
        parts.append(np.exp(log_probs[rows, actions[start:start + SCORE_BATCH] - FIRST_ITEM_ID]))
    return np.maximum(np.concatenate(parts), MIN_BEHAVIOUR_PROBABILITY)


def _estimates(logs: dict, targets: dict[str, Callable], propensities: dict[str, np.ndarray],
               max_weight: float) -> dict:
    """`{name: {source: off_policy_value}}`: each target's `pi(a_i|s_i)` under each source."""
    return {name: {source: off_policy_value(logs["reward"], beta, target(beta), logs["user"],
                                            max_weight)
                   for source, beta in propensities.items()}
            for name, target in targets.items()}


def _report(k: int, logs: dict, propensities: dict, estimates: dict) -> dict:
    return {"k": k, "estimand": f"reward@{k}: one of a top-{k} shown uniformly at random (the "
                                "logging policy: its own value)",
            "rounds": len(logs["action"]), "users": len(np.unique(logs["user"])),
            "propensities": {source: SOURCES[source] for source in propensities},
            "estimates": estimates}


def simulated_off_policy(split: PolicySplit, k: int, events_per_user: int, seed: int,
                         max_weight: float) -> Callable[[AttentionPolicy], dict]:
    """`policy -> off_policy report` on the simulator's test users (module docstring); their
    rounds are logged once, here, with `seed + 1` (the training logs use `seed`)."""
    logs = split.sim.log(events_per_user=events_per_user, users=split.test, seed=seed + 1)

    def report(policy: AttentionPolicy) -> dict:
        propensities = {"true": logs["propensity"].astype(np.float64)}
        learned = behaviour_propensities(policy, logs["history"], logs["action"])
        if learned is not None:
            propensities["learned"] = learned
        pi = top_k_probabilities(policy_scores(policy), logs["history"], logs["action"], k)
        return _report(k, logs, propensities,
                       _estimates(logs, {"policy": lambda _: pi}, propensities, max_weight))

    return report


def logged_off_policy(split: LoggedSplit, popularity: PopularityRecommender, k: int,
                      max_len: int, max_weight: float) -> Callable[[AttentionPolicy], dict]:
    """`policy -> off_policy report` on a file's test users (module docstring); `{"skipped":
    reason}` for a policy without the behaviour head (no propensities to weight by)."""
    feedback = split.feedback
    logs = logged_events(feedback, split.test, max_len)
    earlier = [feedback.items[row][:end] for row in split.test  # logged_events' round order
               for end in range(1, len(feedback.items[row]))]

    def top_k(score_fn: Callable) -> np.ndarray:
        return top_k_probabilities(score_fn, earlier, logs["action"], k, exclude=earlier)

    def report(policy: AttentionPolicy) -> dict:
        learned = behaviour_propensities(policy, logs["history"], logs["action"])
        if learned is None:
            return {"skipped": "behaviour_head=False: no propensities for the file's logs"}
        policy_pi, popularity_pi = top_k(history_scores(policy, max_len)), top_k(popularity.score)
        targets = {"policy": lambda _: policy_pi, "popularity": lambda _: popularity_pi,
                   "logging": lambda beta: beta}  # pi = beta: every weight is 1
        return _report(k, logs, {"learned": learned},
                       _estimates(logs, targets, {"learned": learned}, max_weight))

    return report
