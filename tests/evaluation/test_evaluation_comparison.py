"""Paired bootstrap over per-user metrics: hand-checkable intervals, determinism, validation."""

import numpy as np
import pytest

from tfrec_attn.evaluation import evaluate, metrics, paired_bootstrap, verdict


def test_identical_arrays_give_a_zero_interval_and_a_tie():
    values = np.random.default_rng(0).random(200)
    result = paired_bootstrap(values, values.copy(), num_samples=300)
    assert result["mean_difference"] == 0.0 and result["relative_difference"] == 0.0
    assert result["ci_low"] == result["ci_high"] == 0.0
    assert result["prob_better"] == 0.0 and verdict(result) == "tie"


def test_a_clearly_better_array_has_an_interval_above_zero():
    rng = np.random.default_rng(1)
    b = (rng.random(500) < 0.2).astype(float)  # hit rate ~0.2 ...
    a = np.maximum(b, rng.random(500) < 0.3)  # ... and the same hits plus ~24% more users
    result = paired_bootstrap(a, b, num_samples=500)
    assert result["mean_difference"] == pytest.approx(a.mean() - b.mean())
    assert result["relative_difference"] == pytest.approx((a.mean() - b.mean()) / b.mean())
    assert 0.0 < result["ci_low"] < result["mean_difference"] < result["ci_high"]
    assert result["prob_better"] == 1.0 and verdict(result) == "better"
    swapped = paired_bootstrap(b, a, num_samples=500)
    assert swapped["ci_high"] < 0.0 and verdict(swapped) == "worse"
    assert swapped["prob_better"] == 0.0


def test_noise_around_equal_means_is_a_tie_with_a_symmetric_share():
    rng = np.random.default_rng(2)
    a = rng.normal(size=400)
    b = a + rng.choice([-0.5, 0.5], size=400)  # each user moves by +-0.5: no real difference
    result = paired_bootstrap(a, b, num_samples=1000, confidence=0.9)
    assert result["ci_low"] < 0.0 < result["ci_high"] and verdict(result) == "tie"
    # the percentile interval of a mean of +-0.5 steps: half-width ~ 1.645 * 0.5 / sqrt(400)
    assert result["ci_high"] - result["ci_low"] == pytest.approx(2 * 1.645 * 0.5 / 20, rel=0.15)
    assert 0.05 < result["prob_better"] < 0.95


def test_seed_determinism():
    rng = np.random.default_rng(3)
    a, b = rng.random(100), rng.random(100)
    assert paired_bootstrap(a, b, seed=7) == paired_bootstrap(a, b, seed=7)
    assert paired_bootstrap(a, b, seed=7)["ci_low"] != paired_bootstrap(a, b, seed=8)["ci_low"]


def test_relative_difference_is_none_when_the_baseline_scores_zero():
    result = paired_bootstrap(np.array([1.0, 0.0, 1.0]), np.zeros(3), num_samples=20)
    assert result["relative_difference"] is None and result["mean_b"] == 0.0


@pytest.mark.parametrize(
    "a, b, kwargs, match",
    [
        (np.ones(3), np.ones(4), {}, "a and b must be paired"),
        (np.ones((2, 2)), np.ones((2, 2)), {}, "a must be a 1-D numeric array"),
        (np.ones(3), np.array(["x", "y", "z"]), {}, "b must be a 1-D numeric array"),
        (np.array([1.0, np.nan]), np.ones(2), {}, "a must hold finite values"),
        (np.ones(1), np.ones(1), {}, "at least 2 users"),
        (np.ones(3), np.ones(3), {"num_samples": 0}, "num_samples must be a positive integer"),
        (np.ones(3), np.ones(3), {"num_samples": 2.5}, "num_samples must be a positive integer"),
        (np.ones(3), np.ones(3), {"confidence": 1.0}, "confidence must be in \\(0, 1\\)"),
    ],
)
def test_bad_input_is_named(a, b, kwargs, match):
    with pytest.raises(ValueError, match=match):
        paired_bootstrap(a, b, **kwargs)


@pytest.mark.parametrize(
    "per_user, metric, gain_b",  # user 1's value for `down` (rank 1); `up` (rank 0) gets 1
    [
        (metrics.hits, "hr@2", 1.0),
        (metrics.ndcg_gains, "ndcg@2", 1 / np.log2(3)),
        (lambda ranks, k: metrics.reciprocal_ranks(ranks), "mrr", 1 / 2),
    ],
)
def test_per_user_metrics_of_a_removed_repeat_target_are_misses(per_user, metric, gain_b):
    # Users 0 and 2 repeat a history item (misses whatever the scores); user 1's target 5 ranks
    # first for `up`, second (behind 6) for `down`, which also scores both repeats on top.
    def up(batch):
        return np.tile([0, 0, 1, 2, 3, 9, 4.0], (len(batch), 1))

    def down(batch):
        return np.tile([0, 0, 9, 0, 0, 5, 9.0], (len(batch), 1))

    histories = [np.array([2]), np.array([4, 2]), np.array([3, 6])]
    targets = np.array([2, 5, 6])
    (sum_a, ranks_a), (sum_b, ranks_b) = (
        evaluate(s, histories, targets, 7, ks=(2,), return_ranks=True) for s in (up, down))
    assert ranks_a.tolist() == [metrics.MISS_RANK, 0, metrics.MISS_RANK]
    assert ranks_b.tolist() == [metrics.MISS_RANK, 1, metrics.MISS_RANK]
    a, b = per_user(ranks_a, 2), per_user(ranks_b, 2)
    assert a.tolist() == [0.0, 1.0, 0.0] and b.tolist() == pytest.approx([0.0, gain_b, 0.0])
    result = paired_bootstrap(a, b, num_samples=50)
    assert result["mean_a"] == sum_a[metric] == 1 / 3
    assert result["mean_b"] == pytest.approx(sum_b[metric])
    assert sum_b[metric] == pytest.approx(gain_b / 3)
