"""The policy run's off-policy estimates (`metrics.json` `"off_policy"`): the value of showing
one item drawn uniformly from a policy's top-k (reward@k), estimated by IPS / SNIPS
(`evaluation.off_policy`) on the held-out test users' logged rounds.

- Simulator (`simulated_off_policy`): the test users are logged under the simulator's logging
  policy (`events_per_user` rounds each, a draw separate from the training logs). The trained
  policy is estimated twice, with the TRUE propensities `beta(a|s)` and with the policy's
  behaviour head (`behaviour_propensities`), next to its true reward@k (`metrics["test"]`).
- Files (`logged_off_policy`): every event after a test user's first whose item a training
  user has (`held_out_events`: an OOV action has no propensity and no policy shows it; the
  count left out is the dataset summary's `"unknown_item_rounds"`), with the behaviour head's
  propensities only (a file has none). Estimated: the trained policy and
  popularity of rewarded items (top-k, the user's earlier items excluded, as in the run's
  evaluation), and the logging policy itself (`pi = beta`: its SNIPS is the mean logged reward).

A learned propensity that is too small inflates the weight of its round; the estimates are only
as good as the behaviour head (docs: README's `--model policy` paragraph). Three safeguards:

- The history out of `beta` (files): in a ratings log (nobody rates a movie twice) the
  logging policy puts zero mass on a user's earlier items, and so do the targets (history
  excluded). A head trained with `behaviour_exclude_history` (`tfrec-attn train`'s default on
  such data) learned its softmax over the items outside each round's history; the estimate
  uses that same softmax (`"history_mask": "trained"`). A head trained over the whole
  catalogue spreads mass over the history too (about 22% on ML-100K, `"history_mass"`), so when
  no test round's action is among the user's earlier items its softmax is renormalized over the
  other items after the fact (`"post-hoc"`): on ML-100K that lowered the mean weights from
  1.63 / 2.28 (policy / popularity) to 1.23 / 1.69 (docs/BENCHMARKS.md 9g). The two are the
  same distribution (softmax over the kept items); only the training differs. On the simulator,
  which repeats items, neither, unless the head was trained masked (then over the window's
  items, as in its training).
- Smoothing (files): a softmax head is over-confident on a few rounds, and a propensity near
  1e-4 gives its round a huge weight (on ML-100K 20 of 19,516 rounds carried a third of
  popularity's weight). The head's propensities are mixed with the logging marginal (the
  training actions' add-one frequencies, masked like the head), `(1 - e) * head + e *
  marginal`, with `e` from `SMOOTHING_GRID` at the best likelihood of the validation users'
  rounds (`"smoothing"` in the report; `e = 0` keeps the head).
- A `"warning"` on every estimate whose mean weight (`sum(w) / n`, about 1 with correct
  propensities for any target) is outside `MEAN_WEIGHT_BAND`.
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
from tfrec_attn.training.logged_feedback import LoggedSplit, held_out_events, history_scores
from tfrec_attn.training.simulated_feedback import SCORE_BATCH, PolicySplit, policy_scores

SOURCES = {"true": "the simulator's logging policy beta(a)",
           "learned": "the policy's behaviour head beta(a|s)"}
RENORMALIZED = (", renormalized over the items outside the round's history (no logged action "
                "repeats an earlier item of its user)")
SMOOTHED = (", mixed with the training actions' marginal at weight {:g} (chosen on the "
            "validation users' rounds' likelihood)")
# Weights of the logging marginal mixed into the head's propensities (`choose_smoothing`).
SMOOTHING_GRID = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
TRAINED_MASKED = (", trained and estimated over the items outside the round's history "
                  "(behaviour_exclude_history; a logged action that repeats one is kept)")
# With the TRUE propensities on the simulator's 2,000 test rounds (400 users, log seeds 1-3;
# best, popularity and a random top-5) the mean weight was 0.94-1.15, its 95% bootstrap interval
# over users about +-0.18: a band symmetric in log scale (1 / 1.25 = 0.8) that correct
# propensities at that sample size leave only by chance.
MEAN_WEIGHT_BAND = (0.8, 1.25)


def _head_log_probabilities(policy: AttentionPolicy, histories: np.ndarray,
                            actions: np.ndarray, exclude) -> tuple[np.ndarray, np.ndarray]:
    """`(log beta(a_i|s_i), log kept_i)` of the behaviour head, `SCORE_BATCH` rounds at a time:
    the softmax over all real items, and the log of its mass outside `exclude[i]` (zeros with
    `exclude=None`; ids below `FIRST_ITEM_ID` and the round's action are never excluded, as in
    `policy_losses.exclude_actions`). Renormalized over the kept items, `log beta - log kept`:
    the masked softmax the head trains with under `behaviour_exclude_history`."""
    log_probs, log_kept = [], []
    for start in range(0, len(actions), SCORE_BATCH):
        rows = slice(start, start + SCORE_BATCH)
        logits = policy(tf.constant(histories[rows]))["behaviour_logits"].numpy()
        logits = logits[:, FIRST_ITEM_ID:].astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        total = np.log(np.exp(logits).sum(axis=1))
        log_probs.append(logits[np.arange(len(logits)), actions[rows] - FIRST_ITEM_ID] - total)
        if exclude is None:
            log_kept.append(np.zeros(len(logits)))
            continue
        for i, (ids, action) in enumerate(zip(exclude[rows], actions[rows])):
            ids = np.asarray(ids, np.int64)
            logits[i, ids[(ids >= FIRST_ITEM_ID) & (ids != action)] - FIRST_ITEM_ID] = -np.inf
        log_kept.append(np.log(np.exp(logits).sum(axis=1)) - total)
    return np.concatenate(log_probs), np.concatenate(log_kept)


def behaviour_propensities(policy: AttentionPolicy, histories: np.ndarray,
                           actions: np.ndarray, exclude=None) -> np.ndarray | None:
    """`beta(a_i|s_i)` of the behaviour head: the softmax of `"behaviour_logits"` over the real
    items (as its training loss), floored at `MIN_BEHAVIOUR_PROBABILITY` as in training;
    `None` without the head.

    Args:
        policy: an `AttentionPolicy`.
        histories: `(n, max_len)` left-padded states of the rounds.
        actions: `(n,)` logged item ids.
        exclude: optional per-round item ids the logging policy never shows (the user's earlier
            items in a ratings log): the softmax is renormalized over the other items. A round's
            action is kept even when listed (a repeat), as in training.

    Returns:
        float64 `(n,)` in `(0, 1]`, or `None`.

    Example:
    >>> from tfrec_attn.models import AttentionPolicyConfig
    >>> policy = AttentionPolicy(AttentionPolicyConfig(vocab_size=6, max_len=2, dim=4))
    >>> histories, actions = np.array([[0, 2], [2, 3]]), np.array([4, 5])
    >>> p = behaviour_propensities(policy, histories, actions)
    >>> renormalized = behaviour_propensities(policy, histories, actions, exclude=[[2], [2, 3]])
    >>> p.shape, bool(((p > 0) & (p <= 1)).all()), bool((renormalized > p).all())
    ((2,), True, True)
    """
    if not policy.config.behaviour_head:
        return None
    actions = np.asarray(actions)
    if exclude is not None and len(exclude) != len(actions):
        raise ValueError(f"exclude must hold one id array per round ({len(actions)}). "
                         f"Received: {len(exclude)}")
    return _floored(*_head_log_probabilities(policy, histories, actions, exclude))


def _floored(log_probs: np.ndarray, log_kept: np.ndarray | float = 0.0) -> np.ndarray:
    """`beta = exp(log_probs - log_kept)` floored at `MIN_BEHAVIOUR_PROBABILITY`, as in
    training (`log_kept = 0`: not renormalized), and at most 1 (a round whose mask leaves only
    its action is 1 up to rounding)."""
    return np.clip(np.exp(log_probs - log_kept), MIN_BEHAVIOUR_PROBABILITY, 1.0)


def marginal_propensities(train_actions: np.ndarray, vocab_size: int, actions: np.ndarray,
                          earlier: list[np.ndarray] | None = None) -> np.ndarray:
    """Each round's action under the context-free logging marginal: the training rounds'
    action frequencies (add-one over the real items, ids >= `FIRST_ITEM_ID`), renormalized over
    the items outside `earlier[i]` when given (the round's action always kept, as in
    `policy_losses.exclude_actions`).

    Example:
    >>> marginal_propensities(np.array([2, 2, 3]), 5, np.array([2, 4]), [np.array([3]), []])
    array([0.75      , 0.16666667])
    """
    counts = np.bincount(np.asarray(train_actions, np.int64), minlength=vocab_size)[:vocab_size]
    freq = counts.astype(np.float64) + 1.0
    freq[:FIRST_ITEM_ID] = 0.0
    freq /= freq.sum()
    actions = np.asarray(actions, np.int64)
    if earlier is None:
        return freq[actions]
    kept = np.array([1.0 - freq[np.setdiff1d(np.asarray(ids, np.int64), [a])].sum()
                     for ids, a in zip(earlier, actions)])
    return np.minimum(freq[actions] / kept, 1.0)  # only the action kept: 1 up to rounding


def choose_smoothing(head: np.ndarray, marginal: np.ndarray,
                     grid: tuple[float, ...] = SMOOTHING_GRID) -> tuple[float, dict]:
    """The weight `epsilon` of `(1 - epsilon) * head + epsilon * marginal` with the lowest mean
    negative log-likelihood of held-out rounds' actions, and every grid point's NLL.

    A softmax head is over-confident on a few rounds (propensities near 1e-4 carried a third of
    a target's importance weight on ML-100K); mixing in the context-free marginal bounds every
    propensity from below, and the held-out likelihood says how much to mix.

    Example:
    >>> epsilon, nll = choose_smoothing(np.array([0.9, 1e-6]), np.array([0.5, 0.5]))
    >>> epsilon, round(nll[0.0], 3) > round(nll[epsilon], 3)
    (0.5, True)
    """
    nll = {float(eps): float(-np.mean(np.log((1.0 - eps) * head + eps * marginal)))
           for eps in grid}
    return min(nll, key=nll.get), nll


def mean_weight_warning(estimate: dict) -> str | None:
    """The warning for an `off_policy_value` result whose `mean_weight` is outside
    `MEAN_WEIGHT_BAND` (`None` inside it, or when no round has weight).

    Example:
    >>> mean_weight_warning({"mean_weight": 1.1}) is None
    True
    >>> mean_weight_warning({"mean_weight": 1.62}).split(":")[0]
    'mean importance weight 1.62 outside [0.8, 1.25], where correct propensities give about 1'
    """
    low, high = MEAN_WEIGHT_BAND
    weight = estimate["mean_weight"]
    if weight == 0 or low <= weight <= high:
        return None
    side = "small" if weight > high else "large"
    return (f"mean importance weight {weight:.2f} outside [{low}, {high}], where correct "
            f"propensities give about 1: the propensities of this target's actions are too "
            f"{side}; do not trust this estimate")


def _estimates(logs: dict, targets: dict[str, Callable], propensities: dict[str, np.ndarray],
               max_weight: float) -> dict:
    """`{name: {source: off_policy_value (+ "warning")}}`: each target's `pi(a_i|s_i)` under
    each source."""
    estimates = {}
    for name, target in targets.items():
        for source, beta in propensities.items():
            out = off_policy_value(logs["reward"], beta, target(beta), logs["user"], max_weight)
            warning = mean_weight_warning(out)
            estimates.setdefault(name, {})[source] = (out if warning is None
                                                      else {**out, "warning": warning})
    return estimates


def _report(k: int, logs: dict, propensities: dict, estimates: dict,
            descriptions: dict | None = None) -> dict:
    return {"k": k, "estimand": f"reward@{k}: one of a top-{k} shown uniformly at random (the "
                                "logging policy: its own value)",
            "rounds": len(logs["action"]), "users": len(np.unique(logs["user"])),
            "propensities": {source: (descriptions or SOURCES)[source] for source in propensities},
            "mean_weight_band": list(MEAN_WEIGHT_BAND), "estimates": estimates}


def simulated_off_policy(split: PolicySplit, k: int, events_per_user: int, seed: int,
                         max_weight: float) -> Callable[[AttentionPolicy], dict]:
    """`policy -> off_policy report` on the simulator's test users (module docstring); their
    rounds are logged once, here, with `seed + 1` (the training logs use `seed`)."""
    logs = split.sim.log(events_per_user=events_per_user, users=split.test, seed=seed + 1)

    def report(policy: AttentionPolicy) -> dict:
        propensities = {"true": logs["propensity"].astype(np.float64)}
        masked = policy.config.behaviour_exclude_history  # trained over the window's other items
        learned = behaviour_propensities(policy, logs["history"], logs["action"],
                                         logs["history"] if masked else None)
        if learned is not None:
            propensities["learned"] = learned
        pi = top_k_probabilities(policy_scores(policy), logs["history"], logs["action"], k)
        return _report(k, logs, propensities,
                       _estimates(logs, {"policy": lambda _: pi}, propensities, max_weight))

    return report


def logged_off_policy(split: LoggedSplit, popularity: PopularityRecommender, k: int,
                      max_len: int, max_weight: float) -> Callable[[AttentionPolicy], dict]:
    """`policy -> off_policy report` on a file's test users (module docstring); `{"skipped":
    reason}` for a policy without the behaviour head (no propensities to weight by). The head's
    `beta` is its softmax over the items outside each round's full history when it was trained
    so (`"history_mask": "trained"`), or renormalized so after the fact when no round's action
    repeats an earlier item of its user (`"post-hoc"`), else over all items (`"none"`);
    `"renormalized"` says whether the history is out, `"history_mass"` gives the head's mean
    full-softmax mass on it."""
    feedback = split.feedback
    rounds = {}  # test and validation rounds (OOV actions left out), with their earlier items
    for name, rows in (("test", split.test), ("valid", split.valid)):
        part, _ = held_out_events(feedback, rows, max_len)
        if name == "valid" and not len(part["action"]):
            continue  # no validation round: nothing to choose the smoothing on
        rounds[name] = (part, [feedback.items[row][:end]
                               for row, end in zip(part["user"], part["end"])])
    logs, earlier = rounds["test"]
    renormalize = not any(a in set(ids) for a, ids in zip(logs["action"], earlier))

    def top_k(score_fn: Callable) -> np.ndarray:
        return top_k_probabilities(score_fn, earlier, logs["action"], k, exclude=earlier)

    def smoothed(policy: AttentionPolicy, mask: str) -> tuple[np.ndarray, np.ndarray, dict]:
        """`(test beta, test log kept mass, smoothing report)`: the head's propensities (masked
        as `mask` says) mixed with the logging marginal, the weight chosen on the validation
        rounds' likelihood."""
        def propensities(part: dict, before: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            log_probs, log_kept = _head_log_probabilities(policy, part["history"],
                                                          part["action"], before)
            masked = mask != "none"
            return (_floored(log_probs, log_kept if masked else 0.0),
                    marginal_propensities(split.logs["action"], feedback.vocab_size,
                                          part["action"], before if masked else None), log_kept)

        head, marginal, log_kept = propensities(*rounds["test"])
        epsilon, nll = (choose_smoothing(*propensities(*rounds["valid"])[:2])
                        if "valid" in rounds else (0.0, {}))
        beta = (1.0 - epsilon) * head + epsilon * marginal
        return beta, log_kept, {
            "epsilon": epsilon, "valid_nll": {str(eps): round(value, 5)
                                              for eps, value in nll.items()},
            "test_nll": float(-np.mean(np.log(beta))),
            "test_nll_head": float(-np.mean(np.log(head)))}

    def report(policy: AttentionPolicy) -> dict:
        if not policy.config.behaviour_head:
            return {"skipped": "behaviour_head=False: no propensities for the file's logs"}
        mask = ("trained" if policy.config.behaviour_exclude_history
                else "post-hoc" if renormalize else "none")
        learned, log_kept, smoothing = smoothed(policy, mask)
        policy_pi, popularity_pi = top_k(history_scores(policy, max_len)), top_k(popularity.score)
        targets = {"policy": lambda _: policy_pi, "popularity": lambda _: popularity_pi,
                   "logging": lambda beta: beta}  # pi = beta: every weight is 1
        description = SOURCES["learned"] + {
            "trained": TRAINED_MASKED, "post-hoc": RENORMALIZED,
            "none": " (not renormalized: some logged action repeats an earlier item of its "
                    "user)"}[mask] + SMOOTHED.format(smoothing["epsilon"])
        return {**_report(k, logs, {"learned": learned},
                          _estimates(logs, targets, {"learned": learned}, max_weight),
                          {"learned": description}),
                "renormalized": mask != "none", "history_mask": mask,
                "history_mass": float(np.mean(-np.expm1(log_kept))), "smoothing": smoothing}

    return report
