"""Paired comparison of two scorers evaluated on the same users: is one *clearly* better?

Both scorers are ranked on the same test users (and, under a sampled protocol, against the same
negatives: `evaluate` draws them from `seed` alone), so their per-user metrics are paired. The
bootstrap resamples users: each sample's statistic is the mean per-user difference `a - b` over
users drawn with replacement, which keeps every user's pair together (`scipy.stats.bootstrap`
with the percentile method). Per-user metrics come from target ranks through
`metrics.hits`, `metrics.ndcg_gains` or `metrics.reciprocal_ranks`, never from raw ranks: those
give a target that was never ranked (`metrics.MISS_RANK`, a removed repeat target) 0, as the
summary metrics do, so `mean_a` / `mean_b` equal `evaluate`'s figures.

Example:
>>> a = np.array([1.0, 0.5, 0.5, 1.0])  # NDCG@10 per user of a model ...
>>> b = np.array([0.0, 0.0, 0.0, 0.5])  # ... and of a baseline, on the same users
>>> result = paired_bootstrap(a, b, num_samples=200)
>>> result["mean_difference"], result["ci_low"] >= 0.5, result["prob_better"]
(0.625, True, 1.0)
>>> verdict(result)
'better'
"""

from __future__ import annotations

import numpy as np
from scipy import stats

MAX_BATCH_VALUES = 1 << 22  # resampled values held at once (~32 MB), whatever the user count


def _check_metric_arrays(a, b) -> tuple[np.ndarray, np.ndarray]:
    arrays = []
    for name, values in (("a", a), ("b", b)):
        values = np.asarray(values)
        if values.ndim != 1 or not (np.issubdtype(values.dtype, np.number)
                                    or values.dtype == bool):
            raise ValueError(f"{name} must be a 1-D numeric array of per-user metrics. "
                             f"Received: shape={values.shape}, dtype={values.dtype}")
        values = values.astype(np.float64)
        if not np.isfinite(values).all():
            raise ValueError(f"{name} must hold finite values only (found NaN or inf).")
        arrays.append(values)
    a, b = arrays
    if a.shape != b.shape:
        raise ValueError(f"a and b must be paired (one value per user each). Received: "
                         f"a.shape={a.shape}, b.shape={b.shape}")
    if a.size < 2:
        raise ValueError(f"a and b need at least 2 users to bootstrap. Received: {a.size}")
    return a, b


def check_bootstrap_arguments(num_samples, confidence) -> None:
    """`num_samples` is a positive integer and `confidence` lies in `(0, 1)` (`ValueError`
    naming the argument otherwise)."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, int | np.integer) or (
            num_samples < 1):
        raise ValueError(f"num_samples must be a positive integer. Received: "
                         f"num_samples={num_samples!r}")
    if isinstance(confidence, bool) or not isinstance(confidence, float | int) or not (
            0.0 < confidence < 1.0):
        raise ValueError(f"confidence must be in (0, 1). Received: confidence={confidence!r}")


def paired_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    num_samples: int = 1000,
    seed: int | None = 0,
    confidence: float = 0.95,
) -> dict[str, float | None]:
    """Bootstrap confidence interval of `mean(a) - mean(b)` over paired per-user metrics.

    Args:
        a: float `(n,)` per-user metric of the first scorer (`metrics.hits`,
            `metrics.ndcg_gains` or `metrics.reciprocal_ranks` of `evaluate`'s ranks).
        b: float `(n,)` the same metric of the second scorer, for the same users in the same
            order.
        num_samples: bootstrap resamples of the users. Defaults to `1000`.
        seed: seeds the resampling (`np.random.default_rng(seed)`); `None` is not reproducible.
            Defaults to `0`.
        confidence: two-sided confidence level in `(0, 1)`. Defaults to `0.95`.

    Returns:
        Python floats: `mean_a`, `mean_b`, `mean_difference` (`mean(a) - mean(b)`),
        `relative_difference` (`mean_difference / mean(b)`, `None` when `mean(b)` is 0),
        `ci_low` / `ci_high` (percentile interval of the difference), `prob_better` (share of
        bootstrap samples where `a`'s mean exceeds `b`'s), `confidence`, `num_samples`, `users`.

    Example:
    >>> same = np.array([0.0, 1.0, 0.5, 0.0])
    >>> out = paired_bootstrap(same, same, num_samples=50)
    >>> out["ci_low"], out["ci_high"], out["prob_better"], out["relative_difference"]
    (0.0, 0.0, 0.0, 0.0)
    """
    a, b = _check_metric_arrays(a, b)
    check_bootstrap_arguments(num_samples, confidence)
    difference = a - b
    result = stats.bootstrap(
        (difference,), np.mean, n_resamples=int(num_samples), vectorized=True,
        batch=max(1, MAX_BATCH_VALUES // difference.size), confidence_level=float(confidence),
        method="percentile", rng=np.random.default_rng(seed))
    mean_a, mean_b = float(a.mean()), float(b.mean())
    mean_difference = float(difference.mean())
    return {
        "mean_a": mean_a,
        "mean_b": mean_b,
        "mean_difference": mean_difference,
        "relative_difference": mean_difference / mean_b if mean_b != 0.0 else None,
        "ci_low": float(result.confidence_interval.low),
        "ci_high": float(result.confidence_interval.high),
        "prob_better": float(np.mean(result.bootstrap_distribution > 0.0)),
        "confidence": float(confidence),
        "num_samples": int(num_samples),
        "users": int(a.size),
    }


def verdict(result: dict) -> str:
    """`"better"` if the interval lies above 0, `"worse"` if below, else `"tie"`.

    Args:
        result: a `paired_bootstrap` result (its `ci_low` and `ci_high` of `a - b`).

    Returns:
        `"better"` (`a` clearly better), `"worse"` (clearly worse) or `"tie"` (the interval
        contains 0).

    Example:
    >>> verdict({"ci_low": -0.01, "ci_high": 0.02}), verdict({"ci_low": -0.2, "ci_high": -0.1})
    ('tie', 'worse')
    """
    if result["ci_low"] > 0.0:
        return "better"
    if result["ci_high"] < 0.0:
        return "worse"
    return "tie"
