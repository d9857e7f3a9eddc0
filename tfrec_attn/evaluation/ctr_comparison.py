"""Paired comparison of two CTR scorers on the same rows: per-user AUC (GAUC) and row-level AUC.

The rows come user by user, `group_size` rows a user (`ranking_examples(..., last_only=True)`),
and both scorers score the same rows, so every comparison is paired by user and resamples users:

- GAUC: `group_auc` weights each user's AUC by the user's rows. Every user here has the same
  number of rows, so the weighted mean is the plain mean over the users that have both a positive
  and a negative row, and `paired_bootstrap` of the per-user AUCs gives the GAUC difference.
- AUC: a cluster bootstrap. Each sample draws users with replacement and computes both AUCs over
  the rows of the drawn users (a user drawn twice counts twice), keeping a user's rows together.

Example:
>>> labels = np.tile([1.0, 0.0, 0.0], 4)
>>> good = np.tile([0.9, 0.1, 0.2], 4)           # ranks every positive first
>>> noise = np.array([0.1, 0.5, 0.9] * 2 + [0.9, 0.1, 0.2] * 2)
>>> out = compare_ctr_scores(labels, good, noise, group_size=3, num_samples=200)
>>> out["gauc"]["mean_difference"], out["auc"]["mean_difference"], out["verdict"]
(0.5, 0.5, 'tie')
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from tfrec_attn.evaluation.comparison import (
    MAX_BATCH_VALUES,
    check_bootstrap_arguments,
    paired_bootstrap,
    verdict,
)

VERDICT_METRIC = "gauc"  # the comparison's overall verdict (DIN's metric, paired per user)


def _groups(labels, scores, group_size: int) -> tuple[np.ndarray, np.ndarray]:
    labels, scores = np.asarray(labels), np.asarray(scores, np.float64)
    if labels.ndim != 1 or labels.shape != scores.shape:
        raise ValueError(f"labels and scores must be 1-D and of the same length. Received: "
                         f"labels.shape={labels.shape}, scores.shape={scores.shape}")
    if isinstance(group_size, bool) or not isinstance(group_size, int | np.integer) or (
            group_size < 2):
        raise ValueError(f"group_size must be an int >= 2. Received: group_size={group_size!r}")
    if labels.size == 0 or labels.size % group_size:
        raise ValueError(f"the rows must be whole groups of group_size = {group_size}. "
                         f"Received: {labels.size} rows")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 or 1.")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite (found NaN or inf).")
    return labels.astype(bool).reshape(-1, group_size), scores.reshape(-1, group_size)


def per_user_auc(labels, scores, group_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Each user's exact, tie-aware AUC (as `group_auc` computes it, vectorized by ranks).

    Args:
        labels: `(n,)` 0/1 labels, `group_size` consecutive rows a user.
        scores: `(n,)` scores of the same rows.
        group_size: rows a user.

    Returns:
        `(auc, valid)`: float `(users,)` AUCs (NaN where undefined) and bool `(users,)`, True for
        users with both a positive and a negative row (the users `group_auc` averages over).

    Example:
    >>> auc, valid = per_user_auc([1, 0, 0, 1, 0, 0], [0.9, 0.1, 0.9, 0.1, 0.5, 0.7], 3)
    >>> auc.tolist(), valid.tolist()
    ([0.75, 0.0], [True, True])
    """
    labels, scores = _groups(labels, scores, group_size)
    positives = labels.sum(axis=1)
    negatives = group_size - positives
    ranks = stats.rankdata(scores, axis=1)  # average ranks: a tie counts one half
    wins = (ranks * labels).sum(axis=1) - positives * (positives + 1) / 2.0  # Mann-Whitney U
    valid = (positives > 0) & (negatives > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = np.where(valid, wins / (positives * negatives), np.nan)
    return auc, valid


class _PooledAUC:
    """Row-level AUC of one scorer with rows weighted by how often their user was drawn.

    Sorted once; each weighting then costs a few passes over the rows. Tied scores are
    contiguous after sorting, so `np.add.reduceat` sums each tie block (a tie counts one half).
    """

    def __init__(self, labels: np.ndarray, scores: np.ndarray):
        order = np.argsort(scores, axis=None, kind="stable")
        flat = scores.ravel()[order]
        self.user = order // scores.shape[1]
        self.positive = labels.ravel()[order]
        self.blocks = np.flatnonzero(np.r_[True, flat[1:] != flat[:-1]])

    def __call__(self, user_weights: np.ndarray) -> np.ndarray:
        """AUCs `(batch,)` for user weights `(batch, users)`."""
        weights = user_weights[:, self.user]
        pos = np.add.reduceat(np.where(self.positive, weights, 0.0), self.blocks, axis=1)
        neg = np.add.reduceat(np.where(self.positive, 0.0, weights), self.blocks, axis=1)
        below = np.cumsum(neg, axis=1) - neg
        won = (pos * (below + 0.5 * neg)).sum(axis=1)
        return won / (pos.sum(axis=1) * neg.sum(axis=1))


def _user_counts(samples: np.ndarray, users: int) -> np.ndarray:
    """`(batch, users)` times each user appears in each resample `(batch, users)` of indices."""
    offsets = users * np.arange(len(samples))[:, None]
    return np.bincount((samples + offsets).ravel(), minlength=users * len(samples)).reshape(
        len(samples), users).astype(np.float64)


def cluster_bootstrap_auc(labels, scores_a, scores_b, group_size: int, num_samples: int = 1000,
                          seed: int | None = 0, confidence: float = 0.95) -> dict:
    """Bootstrap interval of `AUC(a) - AUC(b)` over all rows, resampling users (clusters).

    Args:
        labels: `(n,)` 0/1 labels, `group_size` consecutive rows a user.
        scores_a: `(n,)` scores of the first scorer.
        scores_b: `(n,)` scores of the second scorer on the same rows.
        group_size: rows a user.
        num_samples: bootstrap resamples of the users. Defaults to `1000`.
        seed: seeds the resampling. Defaults to `0`.
        confidence: two-sided confidence level in `(0, 1)`. Defaults to `0.95`.

    Returns:
        The keys of `paired_bootstrap`, with `mean_a` / `mean_b` the two row-level AUCs and
        `mean_difference` their difference; `users` counts all users.

    Example:
    >>> labels, a = np.tile([1.0, 0.0], 3), np.tile([0.8, 0.3], 3)
    >>> out = cluster_bootstrap_auc(labels, a, a, group_size=2, num_samples=50)
    >>> out["mean_difference"], out["ci_low"], out["ci_high"], out["prob_better"]
    (0.0, 0.0, 0.0, 0.0)
    """
    labels, grouped_a = _groups(labels, scores_a, group_size)
    _, grouped_b = _groups(labels.ravel(), scores_b, group_size)
    if labels.all() or not labels.any():
        raise ValueError("labels must contain both 0 and 1 for an AUC.")
    users = len(labels)
    if users < 2:
        raise ValueError(f"the rows need at least 2 users to bootstrap. Received: {users}")
    check_bootstrap_arguments(num_samples, confidence)
    auc_a, auc_b = _PooledAUC(labels, grouped_a), _PooledAUC(labels, grouped_b)

    def difference(samples, axis=-1):  # resampled user indices `(batch, users)` or `(users,)`
        counts = _user_counts(np.atleast_2d(samples), users)
        out = auc_a(counts) - auc_b(counts)
        return out if np.ndim(samples) > 1 else out[0]

    result = stats.bootstrap(
        (np.arange(users),), difference, n_resamples=int(num_samples), vectorized=True,
        batch=max(1, MAX_BATCH_VALUES // labels.size), confidence_level=float(confidence),
        method="percentile", rng=np.random.default_rng(seed))
    ones = np.ones((1, users))
    mean_a, mean_b = float(auc_a(ones)[0]), float(auc_b(ones)[0])
    return {
        "mean_a": mean_a,
        "mean_b": mean_b,
        "mean_difference": mean_a - mean_b,
        "relative_difference": (mean_a - mean_b) / mean_b if mean_b != 0.0 else None,
        "ci_low": float(result.confidence_interval.low),
        "ci_high": float(result.confidence_interval.high),
        "prob_better": float(np.mean(result.bootstrap_distribution > 0.0)),
        "confidence": float(confidence),
        "num_samples": int(num_samples),
        "users": int(users),
    }


def compare_ctr_scores(labels, scores_a, scores_b, group_size: int, num_samples: int = 1000,
                       seed: int | None = 0, confidence: float = 0.95) -> dict:
    """Paired GAUC and AUC comparison of scorer `a` against scorer `b` (module docstring).

    Args:
        labels: `(n,)` 0/1 labels, `group_size` consecutive rows a user.
        scores_a: `(n,)` scores of the first scorer (e.g. a DIN tower's logits).
        scores_b: `(n,)` scores of the second scorer on the same rows.
        group_size: rows a user (`1 + num_negatives`).
        num_samples: bootstrap resamples of the users. Defaults to `1000`.
        seed: seeds both bootstraps. Defaults to `0`.
        confidence: two-sided confidence level in `(0, 1)`. Defaults to `0.95`.

    Returns:
        `{"gauc": ..., "auc": ..., "verdict": ...}`: per metric the bootstrap result of `a - b`
        (`paired_bootstrap`'s keys; for `"gauc"`, `mean_a` / `mean_b` are the two GAUCs over the
        users with both classes) plus its `verdict`; the overall verdict is the GAUC one.
    """
    auc_a, valid = per_user_auc(labels, scores_a, group_size)
    auc_b, _ = per_user_auc(labels, scores_b, group_size)
    gauc = paired_bootstrap(auc_a[valid], auc_b[valid], num_samples, seed, confidence)
    auc = cluster_bootstrap_auc(labels, scores_a, scores_b, group_size, num_samples, seed,
                                confidence)
    record = {"gauc": {**gauc, "verdict": verdict(gauc)},
              "auc": {**auc, "verdict": verdict(auc)}}
    record["verdict"] = record[VERDICT_METRIC]["verdict"]
    return record
