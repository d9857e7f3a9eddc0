"""Click-through-rate ranking metrics: exact ROC AUC and DIN's group AUC (GAUC).

`keras.metrics.AUC` (what `DIN`'s task logs) approximates the curve on a threshold grid; these
are exact, tie-aware (a tied positive/negative pair counts one half) and computed with
`scipy.stats.mannwhitneyu`, whose `U` statistic of the positives is the number of
(positive, negative) pairs the positive wins.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def _check(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    labels, scores = np.asarray(labels).ravel(), np.asarray(scores, np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels and scores must have the same length. Received: "
                         f"{labels.size} labels, {scores.size} scores")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 or 1.")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN; the AUC would be undefined.")
    return labels.astype(bool), scores


def _auc(positive: np.ndarray, negative: np.ndarray) -> float:
    u = stats.mannwhitneyu(positive, negative, alternative="two-sided").statistic
    return float(u / (positive.size * negative.size))


def roc_auc(labels, scores) -> float:
    """Exact area under the ROC curve: the chance a random positive outscores a random negative.

    Args:
        labels: `(n,)` 0/1 labels, both classes present.
        scores: `(n,)` scores or logits (any monotone scale).

    Returns:
        AUC in `[0, 1]`.

    Example:
    >>> roc_auc([1, 0, 0, 1], [0.9, 0.1, 0.9, 0.4])  # pairs won: 1 + 0.5 + 1 + 0 of 4
    0.625
    """
    labels, scores = _check(labels, scores)
    if labels.all() or not labels.any():
        raise ValueError("labels must contain both 0 and 1 for an AUC.")
    return _auc(scores[labels], scores[~labels])


def group_auc(labels, scores, groups) -> dict[str, float]:
    """GAUC (Zhou et al., 2018, DIN): per-group AUC averaged with weights = rows per group.

    Groups (e.g. users) with a single class have no AUC and are skipped. One `mannwhitneyu`
    call per group (a loop: groups differ in size).

    Args:
        labels: `(n,)` 0/1 labels.
        scores: `(n,)` scores.
        groups: `(n,)` group key of each row (any hashable numpy dtype).

    Returns:
        `{"gauc": weighted mean, "mean_auc": unweighted mean, "groups": groups used}`.

    Example:
    >>> out = group_auc([1, 0, 0, 1, 0, 1], [0.9, 0.1, 0.2, 0.1, 0.5, 0.7], [0, 0, 0, 1, 1, 2])
    >>> out["gauc"], out["mean_auc"], out["groups"]  # groups 0 (AUC 1) and 1 (AUC 0); 2 skipped
    (0.6, 0.5, 2.0)
    """
    labels, scores = _check(labels, scores)
    groups = np.asarray(groups).ravel()
    if groups.shape != labels.shape:
        raise ValueError(f"groups must have one key per row ({labels.size}). "
                         f"Received: {groups.size}")
    keys, inverse = np.unique(groups, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(keys) + 1))
    aucs, weights = [], []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        rows = order[start:stop]
        positive = labels[rows]
        if positive.all() or not positive.any():
            continue
        aucs.append(_auc(scores[rows][positive], scores[rows][~positive]))
        weights.append(stop - start)
    if not aucs:
        raise ValueError("no group has both a positive and a negative row; GAUC is undefined.")
    return {"gauc": float(np.average(aucs, weights=weights)), "mean_auc": float(np.mean(aucs)),
            "groups": float(len(aucs))}
