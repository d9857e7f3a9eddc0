"""Golden values for the rank-based metrics."""

import math

import numpy as np
import pytest

from tfrec_attn.evaluation import metrics


@pytest.mark.parametrize(
    "rank, k, expected",
    [(0, 10, 1.0), (2, 10, 0.5), (6, 10, 1 / 3), (9, 10, 1 / math.log2(11)), (10, 10, 0.0)],
)
def test_ndcg_single_user(rank, k, expected):
    assert metrics.ndcg(np.array([rank]), k) == pytest.approx(expected)


@pytest.mark.parametrize(
    "fn, k, expected",
    [
        (metrics.hit_rate, 1, 1 / 3),
        (metrics.hit_rate, 2, 2 / 3),
        (metrics.hit_rate, 4, 1.0),
        (metrics.recall, 2, 2 / 3),
        (metrics.precision, 2, (2 / 3) / 2),
        (metrics.precision, 4, 1 / 4),
        (metrics.f1, 2, (2 * 2 / 3) / 3),  # hits have F1 = 2 / (k + 1)
        (metrics.f1, 1, 1 / 3),
        (metrics.ndcg, 4, (1 + 1 / math.log2(3) + 1 / math.log2(5)) / 3),
    ],
)
def test_cutoff_metrics_on_ranks_0_1_3(fn, k, expected):
    value = fn(np.array([0, 1, 3]), k)
    assert isinstance(value, float)
    assert value == pytest.approx(expected)


def test_mrr_is_full_reciprocal_rank():
    assert metrics.mrr(np.array([0, 1, 3])) == pytest.approx((1 + 1 / 2 + 1 / 4) / 3)


def test_f1_is_harmonic_mean_of_precision_and_recall_per_user():
    k = 5
    p, r = 1 / k, 1.0
    assert metrics.f1(np.array([0, 99]), k) == pytest.approx((2 * p * r / (p + r) + 0) / 2)


@pytest.mark.parametrize(
    "scores, target, expected",
    [
        ([[0.1, 0.9, 0.5]], [1], 0),
        ([[0.1, 0.9, 0.5]], [0], 2),
        ([[1.0, 1.0, 1.0, 1.0]], [2], 3),  # ties count against the target
        ([[2.0, 1.0, 1.0, 0.0]], [1], 2),
        ([[-np.inf, 0.0]], [1], 0),
    ],
)
def test_ranks_from_scores_is_pessimistic(scores, target, expected):
    ranks = metrics.ranks_from_scores(np.array(scores), np.array(target))
    assert ranks.dtype == np.int64
    assert ranks.tolist() == [expected]


def test_constant_scorer_gets_no_credit():
    ranks = metrics.ranks_from_scores(np.zeros((4, 50)), np.array([0, 10, 20, 49]))
    out = metrics.summarize(ranks, ks=(1, 10, 20))
    assert out["hr@20"] == 0.0 and out["ndcg@20"] == 0.0


@pytest.mark.parametrize(
    "topk, num_items, expected",
    [
        (np.array([[2, 3], [3, 4]]), 6, 3 / 4),
        (np.array([[0, 1], [1, 0]]), 6, 0.0),  # padding and OOV are not items
        ([np.array([5]), np.array([2, 3, 4])], 6, 1.0),
        (np.array([[2, 9]]), 6, 1 / 4),  # out-of-range ids ignored
    ],
)
def test_coverage(topk, num_items, expected):
    assert metrics.coverage(topk, num_items) == pytest.approx(expected)


def test_summarize_keys_and_types():
    ranks = np.array([0, 3, 12])
    topk = np.array([[2, 3, 4], [2, 3, 5], [2, 6, 7]])
    out = metrics.summarize(ranks, ks=(1, 3), topk=topk, num_items=10)
    expected_keys = {
        f"{name}@{k}"
        for k in (1, 3)
        for name in ("hr", "ndcg", "recall", "precision", "f1", "coverage")
    } | {"mrr", "users"}
    assert set(out) == expected_keys
    assert all(type(v) is float for v in out.values())
    assert out["users"] == 3.0
    assert out["coverage@1"] == pytest.approx(1 / 8)
    assert out["coverage@3"] == pytest.approx(6 / 8)
    assert "coverage@1" not in metrics.summarize(ranks, ks=(1,))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: metrics.hit_rate(np.array([0]), 0), "k must be a positive integer"),
        (lambda: metrics.ndcg(np.array([-1]), 3), "non-negative"),
        (lambda: metrics.mrr(np.array([], dtype=np.int64)), "non-empty"),
        (lambda: metrics.summarize(np.array([0]), ks=()), "ks must name"),
        (lambda: metrics.summarize(np.array([0]), ks=(5,), topk=np.zeros((1, 5))), "num_items"),
        (
            lambda: metrics.summarize(np.array([0]), ks=(5,), topk=np.zeros((1, 3)), num_items=9),
            "topk must have shape",
        ),
        (lambda: metrics.ranks_from_scores(np.zeros(3), np.zeros(3)), "2-D"),
        (lambda: metrics.ranks_from_scores(np.zeros((2, 3)), np.array([0])), "target_index"),
        (lambda: metrics.ranks_from_scores(np.zeros((1, 3)), np.array([3])), r"\[0, 3\)"),
        (lambda: metrics.ranks_from_scores(np.array([[np.nan, 1.0]]), np.array([0])), "NaN"),
        (lambda: metrics.coverage(np.array([[2]]), 2), "num_items"),
    ],
)
def test_metric_validation(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    "fn, k, expected",
    [
        (metrics.hit_rate, 5, 0.5),
        (metrics.ndcg, 5, 0.5),
        (metrics.recall, 5, 0.5),
        (metrics.precision, 5, 0.5 / 5),
        (metrics.f1, 5, (2 / 6) / 2),
        (lambda ranks, k: metrics.mrr(ranks), None, 0.5),  # not 1 / (MISS_RANK + 1) > 0
    ],
)
def test_a_never_ranked_target_earns_nothing(fn, k, expected):
    assert fn(np.array([0, metrics.MISS_RANK]), k) == expected


@pytest.mark.parametrize("per_user", [metrics.hits, metrics.ndcg_gains,
                                      lambda ranks, k: metrics.reciprocal_ranks(ranks)])
def test_per_user_values_of_a_never_ranked_target_are_zero(per_user):
    values = per_user(np.array([0, metrics.MISS_RANK, 3]), 4)
    assert values.dtype == np.float64 and values[:2].tolist() == [1.0, 0.0] and values[2] > 0.0


def test_reciprocal_ranks_average_to_mrr():
    ranks = np.array([0, 1, 3, metrics.MISS_RANK])
    assert metrics.reciprocal_ranks(ranks).tolist() == [1.0, 0.5, 0.25, 0.0]
    assert metrics.mrr(ranks) == pytest.approx(1.75 / 4)
