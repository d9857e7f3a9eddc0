"""IPS / SNIPS / clipped IPS against hand-computed cases, SNIPS of the logging policy itself,
the seeded bootstrap over rounds and over users, the top-k target probabilities and bad input."""

import math

import numpy as np
import pytest

from tfrec_attn.evaluation.off_policy import off_policy_value, top_k_probabilities

REWARDS = np.array([1.0, 0.0, 1.0, 0.0, 1.0])
PROPENSITIES = np.array([0.5, 0.25, 0.5, 0.1, 1.0])
TARGET = np.array([0.5, 0.5, 0.0, 0.2, 0.5])  # weights 1, 2, 0, 2, 0.5


def test_estimates_match_hand_computed_values():
    out = off_policy_value(REWARDS, PROPENSITIES, TARGET, max_weight=0.75, num_samples=50)
    # w r = 1, 0, 0, 0, 0.5; sum w = 5.5; sum w^2 = 1 + 4 + 0 + 4 + 0.25
    assert out["ips"] == pytest.approx(1.5 / 5)
    assert out["snips"] == pytest.approx(1.5 / 5.5)
    assert out["clipped_ips"] == pytest.approx((0.75 + 0.5) / 5)  # w = 1 clipped to 0.75
    assert out["ess"] == pytest.approx(5.5 ** 2 / 9.25) and out["mean_weight"] == 5.5 / 5
    assert (out["rounds"], out["nonzero_fraction"], out["max_weight"]) == (5, 0.8, 0.75)
    assert (out["resampled"], out["units"], out["confidence"]) == ("rounds", 5, 0.95)
    unclipped = off_policy_value(REWARDS, PROPENSITIES, TARGET, max_weight=math.inf,
                                 num_samples=50)
    assert unclipped["clipped_ips"] == unclipped["ips"] and unclipped["max_weight"] is None


def test_snips_of_the_logging_policy_is_the_mean_logged_reward():
    rng = np.random.default_rng(0)
    rewards = (rng.random(500) < 0.3).astype(float)
    beta = rng.uniform(0.01, 1.0, 500)
    out = off_policy_value(rewards, beta, beta, num_samples=200)  # pi = beta: every w is 1
    assert out["snips"] == out["ips"] == pytest.approx(rewards.mean(), abs=1e-12)
    assert out["ess"] == pytest.approx(500) and out["nonzero_fraction"] == 1.0
    assert out["mean_weight"] == 1.0


def test_bootstrap_is_seeded_and_has_the_binomial_width():
    rng = np.random.default_rng(1)
    rewards = (rng.random(4000) < 0.3).astype(float)
    ones = np.ones(4000)
    first, again = (off_policy_value(rewards, ones, ones, seed=3) for _ in range(2))
    other = off_policy_value(rewards, ones, ones, seed=4)
    assert first == again and first["snips_ci_low"] != other["snips_ci_low"]
    # pi = beta: the SNIPS interval is the bootstrap interval of a mean, about +-1.96 SE
    half_width = (first["snips_ci_high"] - first["snips_ci_low"]) / 2
    assert half_width == pytest.approx(1.96 * rewards.std() / np.sqrt(4000), rel=0.15)
    assert first["snips_ci_low"] < first["snips"] < first["snips_ci_high"]


def test_users_are_resampled_with_all_their_rounds():
    # 200 users with 10 rounds each and one reward for all of them: the rounds of a user are
    # perfectly correlated, so the users' interval is about sqrt(10) times the rounds'.
    rng = np.random.default_rng(2)
    users = np.repeat(np.arange(200), 10)
    rewards = np.repeat((rng.random(200) < 0.5).astype(float), 10)
    beta = np.full(2000, 0.5)
    by_round = off_policy_value(rewards, beta, beta)
    by_user = off_policy_value(rewards, beta, beta, users=[f"u{u}" for u in users])
    assert (by_user["resampled"], by_user["units"], by_round["units"]) == ("users", 200, 2000)
    assert by_user["snips"] == by_round["snips"]
    ratio = ((by_user["snips_ci_high"] - by_user["snips_ci_low"])
             / (by_round["snips_ci_high"] - by_round["snips_ci_low"]))
    assert ratio == pytest.approx(np.sqrt(10), rel=0.2)


def test_no_weight_leaves_snips_undefined():
    out = off_policy_value(REWARDS, PROPENSITIES, np.zeros(5))
    assert out["snips"] is None and out["snips_ci_low"] is out["snips_ci_high"] is None
    assert (out["ips"], out["ess"], out["nonzero_fraction"]) == (0.0, 0.0, 0.0)


def test_top_k_probabilities_follow_the_top_k_and_the_exclusions():
    scores = np.array([0.0, 0.0, 0.9, 0.7, 0.5, 0.1])  # ids 2 > 3 > 4 > 5

    def score_fn(batch):
        return np.tile(scores, (len(batch), 1))

    histories = [[], [2], [2, 3, 4], [2, 3, 4, 5]]
    actions = np.array([3, 4, 5, 5])
    got = top_k_probabilities(score_fn, histories, actions, k=2, exclude=histories)
    # tops: [2, 3]; [3, 4]; [5] only (one candidate left): 1/1; none left: 0
    np.testing.assert_array_equal(got, [0.5, 0.5, 1.0, 0.0])
    np.testing.assert_array_equal(top_k_probabilities(score_fn, histories, actions, k=2),
                                  [0.5, 0.0, 0.0, 0.0])  # no exclusion: always [2, 3]
    one_by_one = top_k_probabilities(score_fn, histories, actions, 2, histories, batch_size=1)
    np.testing.assert_array_equal(one_by_one, got)


@pytest.mark.parametrize("kwargs, message", [
    ({"rewards": np.ones((2, 2))}, "rewards must be a non-empty 1-D numeric array"),
    ({"rewards": []}, "rewards must be a non-empty 1-D numeric array"),
    ({"rewards": [1.0, np.nan, 0.0, 0.0, 1.0]}, "rewards must be finite"),
    ({"propensities": [0.5] * 4}, r"propensities must hold one value per logged round \(5\)"),
    ({"propensities": [0.5, 0.0, 0.5, 0.5, 0.5]}, r"propensities must be in \(0, 1\]"),
    ({"propensities": [0.5, 1.5, 0.5, 0.5, 0.5]}, r"propensities must be in \(0, 1\]"),
    ({"propensities": [0.5, np.nan, 0.5, 0.5, 0.5]}, r"propensities must be in \(0, 1\]"),
    ({"target_probabilities": [0.5, -0.1, 0, 0, 0]}, r"target_probabilities must be in \[0, 1\]"),
    ({"users": [1, 2]}, r"users must be a 1-D array with one id per logged round \(5\)"),
    ({"max_weight": 0}, "max_weight must be a positive number"),
    ({"num_samples": 0}, "num_samples must be a positive integer"),
    ({"confidence": 1.0}, r"confidence must be in \(0, 1\)"),
])
def test_bad_estimator_inputs_name_the_argument(kwargs, message):
    arguments = {"rewards": REWARDS, "propensities": PROPENSITIES,
                 "target_probabilities": TARGET, **kwargs}
    with pytest.raises(ValueError, match=message):
        off_policy_value(**arguments)


@pytest.mark.parametrize("kwargs, message", [
    ({"k": 0}, "k must be a positive int"),
    ({"actions": np.array([2])}, r"actions must be 1-D with one id per round \(2\)"),
    ({"exclude": [[2]]}, r"exclude must hold one id array per round \(2\)"),
    ({"batch_size": 0}, "batch_size must be a positive int"),
])
def test_bad_top_k_inputs_name_the_argument(kwargs, message):
    arguments = {"score_fn": lambda batch: np.zeros((len(batch), 5)), "histories": [[2], [3]],
                 "actions": np.array([2, 3]), "k": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        top_k_probabilities(**arguments)
