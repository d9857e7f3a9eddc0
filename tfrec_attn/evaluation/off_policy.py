"""Off-policy value estimates from logged bandit feedback: IPS, SNIPS and clipped IPS.

Logged rounds `(s_i, a_i, r_i, p_i)` were collected by a logging policy `beta`, with
`p_i = beta(a_i|s_i)`. The value `V(pi) = E_s E_{a ~ pi(.|s)} r(s, a)` of another policy `pi` is
estimated by reweighting every round with `w_i = pi(a_i|s_i) / p_i`:

- IPS `mean(w r)` (Horvitz-Thompson): unbiased when `p_i` are the true propensities and
  `beta > 0` wherever `pi > 0`, but its variance grows with the weights.
- SNIPS `sum(w r) / sum(w)` (self-normalised, Swaminathan & Joachims 2015): a bias of order
  `1/n` for much less variance; exactly the mean logged reward when `pi = beta`.
- clipped IPS `mean(min(w, max_weight) r)`: less variance, biased downwards.
- ESS `(sum w)^2 / sum w^2`: how many on-policy rounds the weighted sample is worth.
- the mean weight `sum(w) / n`: about 1 with correct propensities (`E_beta[pi / beta] = 1`
  where `beta > 0`); far above 1, the propensities of the policy's actions are too small.

The policy of a top-k recommender is taken as "show one item drawn uniformly from my top-k":
`pi_k(a|s) = 1/k` if `a` is in the top-k for `s`, else 0 (`top_k_probabilities`). Its value
is the mean expected reward of the top-k items, which is `BanditSimulator.expected_reward`'s
reward@k. The estimates are only as good as the propensities: with a learned `beta` (a
behaviour head) their error is the estimate's error.

`off_policy_value`'s interval is a percentile bootstrap of SNIPS (`scipy.stats.bootstrap`)
that resamples users, all rounds of a user together, when `users` is given (the rounds of one
user are correlated), else single rounds. Hand-written (a few array reductions): Open Bandit
Pipeline's estimators would add a PyTorch-dependent package for them.

Example:
>>> rewards = np.array([1.0, 0.0, 1.0, 0.0])
>>> propensities = np.array([0.5, 0.5, 0.25, 0.25])
>>> target = np.array([1.0, 0.0, 0.5, 0.5])  # pi(a_i|s_i)
>>> out = off_policy_value(rewards, propensities, target, num_samples=100)
>>> out["ips"], out["snips"], out["ess"], out["nonzero_fraction"]
(1.0, 0.6666666666666666, 3.0, 0.75)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

from tfrec_attn.evaluation._ids import PAD_ID
from tfrec_attn.evaluation.comparison import MAX_BATCH_VALUES, check_bootstrap_arguments
from tfrec_attn.evaluation.protocols import topk_from_scores

DEFAULT_MAX_WEIGHT = 10.0  # the clipped IPS cap; AttentionPolicyConfig's training cap too


def _rounds_array(name: str, values, size: int | None = None) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or not array.size or not (np.issubdtype(array.dtype, np.number)
                                                 or array.dtype == bool):
        raise ValueError(f"{name} must be a non-empty 1-D numeric array (one value per logged "
                         f"round). Received: shape={array.shape}, dtype={array.dtype}")
    if size is not None and array.size != size:
        raise ValueError(f"{name} must hold one value per logged round ({size}). "
                         f"Received: {array.size}")
    return array.astype(np.float64)


def _check_inputs(rewards, propensities, target_probabilities, users, max_weight):
    rewards = _rounds_array("rewards", rewards)
    if not np.isfinite(rewards).all():
        raise ValueError("rewards must be finite (found NaN or inf).")
    n = rewards.size
    propensities = _rounds_array("propensities", propensities, n)
    if not ((propensities > 0) & (propensities <= 1)).all():  # NaN fails both
        raise ValueError("propensities must be in (0, 1] (beta(a_i|s_i) of each logged "
                         f"action). Received: min={np.nanmin(propensities)!r}, "
                         f"max={np.nanmax(propensities)!r}, NaN: {np.isnan(propensities).any()}")
    target = _rounds_array("target_probabilities", target_probabilities, n)
    if not ((target >= 0) & (target <= 1)).all():
        raise ValueError("target_probabilities must be in [0, 1] (pi(a_i|s_i)). Received: "
                         f"min={np.nanmin(target)!r}, max={np.nanmax(target)!r}")
    if users is not None and (np.ndim(users) != 1 or len(users) != n):
        raise ValueError(f"users must be a 1-D array with one id per logged round ({n}). "
                         f"Received: shape={np.shape(users)}")
    if isinstance(max_weight, bool) or not isinstance(max_weight, int | float) or not (
            max_weight > 0):
        raise ValueError("max_weight must be a positive number (math.inf for no clipping). "
                         f"Received: max_weight={max_weight!r}")
    return rewards, propensities, target


def _ratio_of_sums(numerators: np.ndarray, denominators: np.ndarray, axis: int = -1):
    """SNIPS of (resampled) units; 0 where no unit has weight (the policy's actions unseen)."""
    top, bottom = np.sum(numerators, axis=axis), np.sum(denominators, axis=axis)
    return np.divide(top, bottom, out=np.zeros_like(top, dtype=np.float64), where=bottom > 0)


def off_policy_value(rewards, propensities, target_probabilities, users=None,
                     max_weight: float = DEFAULT_MAX_WEIGHT, num_samples: int = 1000,
                     seed: int | None = 0, confidence: float = 0.95) -> dict:
    """IPS, SNIPS and clipped IPS estimates of a target policy's value from logged rounds.

    Args:
        rewards: `(n,)` logged rewards `r_i`.
        propensities: `(n,)` `p_i = beta(a_i|s_i)` of the logging policy, in `(0, 1]` (the
            true ones, or a behaviour model's estimate).
        target_probabilities: `(n,)` `pi(a_i|s_i)` of the evaluated policy, in `[0, 1]`
            (`top_k_probabilities` for a top-k recommender).
        users: optional `(n,)` user id of each round: the bootstrap then resamples users with
            all their rounds. `None` resamples rounds.
        max_weight: the cap of the clipped IPS (`math.inf`: none). Defaults to `10.0`.
        num_samples: bootstrap resamples. Defaults to `1000`.
        seed: seeds the bootstrap (`np.random.default_rng(seed)`). Defaults to `0`.
        confidence: two-sided level of the SNIPS interval in `(0, 1)`. Defaults to `0.95`.

    Returns:
        Python numbers: `ips`, `snips` (`None` when every weight is 0), `clipped_ips`,
        `max_weight` (`None` for no cap), `snips_ci_low` / `snips_ci_high` (percentile
        bootstrap; `None` with fewer than 2 resampled units or no weight; a resample without
        weight counts as 0), `ess` (effective sample size), `mean_weight`, `rounds`,
        `nonzero_fraction`
        (share of rounds with `w_i > 0`), `resampled` (`"users"` / `"rounds"`), `units`
        (their count), `confidence`.

    Example:
    >>> out = off_policy_value([1.0, 0.0], [0.5, 0.5], [0.5, 0.5], users=["u", "u"])
    >>> out["snips"], out["ips"], out["units"], out["snips_ci_low"]
    (0.5, 0.5, 1, None)
    """
    rewards, propensities, target = _check_inputs(rewards, propensities, target_probabilities,
                                                  users, max_weight)
    check_bootstrap_arguments(num_samples, confidence)
    weights = target / propensities
    weighted = weights * rewards
    total = float(weights.sum())
    snips = float(weighted.sum() / total) if total > 0 else None
    clipped = float(np.mean(np.minimum(weights, max_weight) * rewards))
    if users is None:
        numerators, denominators = weighted, weights
    else:  # per-user sums: resampling a user keeps all their rounds
        _, unit = np.unique(np.asarray(users), return_inverse=True)
        numerators, denominators = np.bincount(unit, weighted), np.bincount(unit, weights)
    low = high = None
    if snips is not None and numerators.size >= 2:
        interval = stats.bootstrap(
            (numerators, denominators), _ratio_of_sums, paired=True, vectorized=True,
            n_resamples=int(num_samples), batch=max(1, MAX_BATCH_VALUES // numerators.size),
            confidence_level=float(confidence), method="percentile",
            rng=np.random.default_rng(seed)).confidence_interval
        low, high = float(interval.low), float(interval.high)
    return {
        "ips": float(weighted.mean()),
        "snips": snips,
        "clipped_ips": clipped,
        "max_weight": float(max_weight) if math.isfinite(max_weight) else None,
        "snips_ci_low": low,
        "snips_ci_high": high,
        "ess": total ** 2 / float(np.square(weights).sum()) if total > 0 else 0.0,
        "mean_weight": total / rewards.size,
        "rounds": int(rewards.size),
        "nonzero_fraction": float(np.mean(weights > 0)),
        "resampled": "rounds" if users is None else "users",
        "units": int(numerators.size),
        "confidence": float(confidence),
    }


def top_k_probabilities(score_fn: Callable, histories: Sequence | np.ndarray,
                        actions: np.ndarray, k: int,
                        exclude: Sequence[np.ndarray] | None = None,
                        batch_size: int = 1024) -> np.ndarray:
    """`pi_k(a_i|s_i)` of "show one item drawn uniformly from the top-k of `score_fn`".

    Args:
        score_fn: histories (a slice of `histories`) -> `(batch, vocab_size)` scores, as in
            `evaluation.evaluate`.
        histories: the rounds' states (an array or a list of id arrays).
        actions: `(n,)` logged item ids.
        k: items in the top-k (`topk_from_scores`: ties to the lower id, padding and OOV never).
        exclude: optional per-round ids left out of the top-k (e.g. the history).
        batch_size: rounds scored at once. Defaults to `1024`.

    Returns:
        float64 `(n,)`: `1/m` where `a_i` is in the round's top-k of `m` items (`m = k` unless
        fewer candidates are left), else 0.

    Example:
    >>> scores = lambda batch: np.tile([0.0, 0.0, 0.9, 0.5, 0.1], (len(batch), 1))
    >>> top_k_probabilities(scores, [[], [2]], np.array([4, 4]), k=2, exclude=[[], [2]])
    array([0. , 0.5])
    """
    actions = np.asarray(actions)
    if actions.ndim != 1 or len(actions) != len(histories):
        raise ValueError(f"actions must be 1-D with one id per round ({len(histories)}). "
                         f"Received: shape={actions.shape}")
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive int. Received: k={k!r}")
    if exclude is not None and len(exclude) != len(actions):
        raise ValueError(f"exclude must hold one id array per round ({len(actions)}). "
                         f"Received: {len(exclude)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int. Received: batch_size={batch_size!r}")
    parts = []
    for start in range(0, len(actions), batch_size):
        rows = slice(start, start + batch_size)
        top = topk_from_scores(np.asarray(score_fn(histories[rows])), int(k),
                               None if exclude is None else exclude[rows])
        shown = (top != PAD_ID).sum(axis=1)
        hit = (top == actions[rows, None]).any(axis=1)
        parts.append(np.divide(hit, shown, out=np.zeros(len(top)), where=shown > 0))
    return np.concatenate(parts) if parts else np.zeros(0)
