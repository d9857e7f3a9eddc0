"""Exact ROC AUC and GAUC against hand counts and a brute-force pair count."""

import numpy as np
import pytest

from tfrec_attn.evaluation import group_auc, roc_auc


def pair_auc(labels, scores) -> float:
    """Reference: the share of (positive, negative) pairs the positive wins, ties one half."""
    labels, scores = np.asarray(labels, bool), np.asarray(scores, float)
    diff = scores[labels][:, None] - scores[~labels][None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def test_roc_auc_hand_counted_with_ties():
    # Positives 3, 1; negatives 1, 2, 0: pairs won 1 + 1 + 1 and 0.5 + 0 + 1 of 6.
    assert roc_auc([1, 0, 0, 1, 0], [3.0, 1.0, 2.0, 1.0, 0.0]) == pytest.approx(4.5 / 6)
    assert roc_auc([0, 1], [0.0, 1.0]) == 1.0 and roc_auc([1, 0], [0.0, 1.0]) == 0.0
    assert roc_auc([1, 0, 1, 0], [5.0] * 4) == 0.5  # constant scores earn nothing


def test_roc_auc_and_gauc_match_pair_counts_on_random_groups():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(30), rng.integers(2, 9, size=30))
    labels = (rng.random(len(groups)) < 0.3).astype(int)
    scores = np.round(rng.normal(size=len(groups)) + labels, 1)  # rounding makes ties
    assert roc_auc(labels, scores) == pytest.approx(pair_auc(labels, scores))
    aucs, sizes = [], []
    for g in np.unique(groups):
        rows = groups == g
        if 0 < labels[rows].sum() < rows.sum():
            aucs.append(pair_auc(labels[rows], scores[rows]))
            sizes.append(rows.sum())
    out = group_auc(labels, scores, groups)
    assert out["groups"] == len(aucs) < 30
    assert out["gauc"] == pytest.approx(np.average(aucs, weights=sizes))
    assert out["mean_auc"] == pytest.approx(np.mean(aucs))


def test_group_auc_accepts_string_keys_in_any_row_order():
    out = group_auc([0, 1, 1, 0, 0], [0.2, 0.1, 0.9, 0.3, 0.5], ["b", "a", "b", "a", "b"])
    # a: positive 0.1 vs 0.3 -> 0; b: positive 0.9 vs 0.2, 0.5 -> 1; weights 2 and 3.
    assert out == {"gauc": pytest.approx(0.6), "mean_auc": 0.5, "groups": 2.0}


@pytest.mark.parametrize("call, message", [
    (lambda: roc_auc([1, 1], [0.1, 0.2]), "both 0 and 1"),
    (lambda: roc_auc([1, 0], [0.1]), "same length"),
    (lambda: roc_auc([2, 0], [0.1, 0.2]), "labels must be 0 or 1"),
    (lambda: roc_auc([1, 0], [np.nan, 0.2]), "NaN"),
    (lambda: group_auc([1, 0], [0.1, 0.2], [0]), "groups must have one key per row"),
    (lambda: group_auc([1, 0], [0.1, 0.2], [0, 1]), "no group has both"),
])
def test_bad_arguments_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()
