"""SNIPS validated on the planted bandit environment, where `BanditSimulator.expected_reward` is
the truth: with the simulator's true propensities (fast), and with the behaviour head of a
briefly trained policy (slow; the figure is documented in README's `--model policy` paragraph).
The file path's renormalization over unseen items and the mean-weight warning on a hand-set
behaviour head whose history mass is known."""

import numpy as np
import pytest

from tfrec_attn._keras import keras
from tfrec_attn.data import Vocabulary
from tfrec_attn.evaluation import PopularityRecommender
from tfrec_attn.evaluation.off_policy import off_policy_value, top_k_probabilities
from tfrec_attn.models import AttentionPolicy, AttentionPolicyConfig
from tfrec_attn.training.bandit_simulator import BanditSimulator, logged_dataset
from tfrec_attn.training.logged_feedback import LoggedFeedback, LoggedSplit, logged_events
from tfrec_attn.training.off_policy_evaluation import (
    MEAN_WEIGHT_BAND,
    SMOOTHING_GRID,
    behaviour_propensities,
    logged_off_policy,
    marginal_propensities,
    mean_weight_warning,
)
from tfrec_attn.training.policy_run import build_policy
from tfrec_attn.training.simulated_feedback import policy_scores

K = 5
# 99%: two policies are checked, so a correct estimator fails about 2% of the seeds by chance
CONFIDENCE = 0.99


@pytest.fixture(scope="module")
def sim():
    return BanditSimulator(num_users=2000, num_items=50, max_len=10, seed=0)


def _popularity(sim):
    return lambda histories: np.tile(sim.logging_policy, (len(histories), 1))


def _estimate(logs, pi, propensities, confidence=0.95):
    return off_policy_value(logs["reward"], propensities, pi, logs["user"],
                            confidence=confidence)


def test_snips_with_true_propensities_recovers_the_true_reward(sim):
    # 20,000 rounds; measured on log seeds 0-4: best 0.664-0.682 (truth 0.674), popularity
    # 0.103-0.109 (truth 0.106), each time inside the 99% interval
    logs = sim.log(events_per_user=10, seed=1)
    best = sim.reward_probabilities()  # scored by user row: the planted truth's top-k
    cases = {"best": (sim.best_value(k=K), lambda rows: best[rows], logs["user"]),
             "popularity": (sim.expected_reward(_popularity(sim), k=K), _popularity(sim),
                            logs["history"])}
    estimates = {}
    for name, (truth, score_fn, states) in cases.items():
        pi = top_k_probabilities(score_fn, states, logs["action"], K)
        estimates[name] = out = _estimate(logs, pi, logs["propensity"], CONFIDENCE)
        assert out["snips_ci_low"] <= truth <= out["snips_ci_high"], (name, truth, out)
        assert out["units"] == 2000 and out["rounds"] == 20000
        weights = pi / logs["propensity"]  # true propensities: E[w] = 1, up to 4 SE here
        assert out["mean_weight"] == pytest.approx(weights.mean())
        assert abs(weights.mean() - 1) < 4 * weights.std() / np.sqrt(weights.size)
    # the two values are far apart, and neither interval holds the other policy's truth
    best_truth, popularity_truth = cases["best"][0], cases["popularity"][0]
    assert best_truth > 5 * popularity_truth
    assert estimates["best"]["snips_ci_low"] > popularity_truth
    assert estimates["popularity"]["snips_ci_high"] < best_truth


@pytest.mark.slow  # trains a policy for 3 epochs (~25 s a seed on 2 shared cores)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_snips_with_learned_propensities_is_near_the_true_reward(sim, seed):
    # Measured (seed 0; 4,000 rounds of 400 held-out users): learned / true propensities
    # correlate at 0.96 (log scale; median |log ratio| 0.16); SNIPS - truth with learned
    # propensities: trained policy -0.028 (true propensities -0.020), best +0.020 (+0.024),
    # popularity +0.002 (+0.004). Loose checks only: the figure is the documentation.
    keras.utils.set_random_seed(seed)
    train, test = np.arange(1600), np.arange(1600, 2000)
    policy = build_policy(AttentionPolicyConfig(vocab_size=sim.vocab_size, max_len=10, dim=16,
                                                top_k=K), 5e-3)
    policy.fit(logged_dataset(sim.log(events_per_user=5, users=train, seed=seed), 256,
                              seed=seed), epochs=3, verbose=0)
    held = sim.log(events_per_user=10, users=test, seed=seed + 100)
    learned = behaviour_propensities(policy, held["history"], held["action"])
    true = held["propensity"].astype(np.float64)
    assert np.corrcoef(np.log(learned), np.log(true))[0, 1] > 0.8
    scores = policy_scores(policy)
    cases = {"policy": (sim.expected_reward(scores, test, K), scores),
             "popularity": (sim.expected_reward(_popularity(sim), test, K), _popularity(sim))}
    for name, (truth, score_fn) in cases.items():
        pi = top_k_probabilities(score_fn, held["history"], held["action"], K)
        out = _estimate(held, pi, learned)
        print(f"{name}: truth {truth:.4f}, SNIPS (learned propensities) {out['snips']:.4f} "
              f"[{out['snips_ci_low']:.4f}, {out['snips_ci_high']:.4f}], ESS {out['ess']:.0f}")
        assert abs(out["snips"] - truth) < 0.1
    assert cases["policy"][0] > 2 * cases["popularity"][0]  # the estimate must tell them apart


# A behaviour head set by hand: zero kernel, so beta(.|s) = softmax(bias) over items 2..5 (a, b,
# c, d) in every state: 0.4, 0.3, 0.2, 0.1.
HEAD = np.array([0.4, 0.3, 0.2, 0.1])


def _fixed_head(**config):
    policy = AttentionPolicy(AttentionPolicyConfig(vocab_size=6, max_len=3, dim=4, **config))
    head = policy.network.get_layer("behaviour_head")
    kernel, _ = head.get_weights()
    head.set_weights([np.zeros_like(kernel), np.log(np.concatenate([[1.0, 1.0], HEAD]))])
    return policy


@pytest.fixture(scope="module")
def fixed_head():
    return _fixed_head()


def _hand_split(sequences, valid=()):
    """Users 0, 1 train (popularity: d = 5 most rewarded, then c = 4), the rest test, and the
    `valid` sequences (appended last) validation users."""
    sequences = [*sequences, *valid]
    feedback = LoggedFeedback([np.array(s, np.int64) for s in sequences],
                              [np.ones(len(s), np.float32) for s in sequences],
                              [f"u{i}" for i in range(len(sequences))], Vocabulary(list("abcd")))
    popularity = PopularityRecommender(feedback.vocab_size).fit([np.array([5, 5, 4])])
    test_end = len(sequences) - len(valid)
    train = np.array([0, 1])
    split = LoggedSplit(feedback, train, np.arange(test_end, len(sequences)),
                        np.arange(2, test_end), logged_events(feedback, train, 3), None, None)
    return split, popularity


def test_behaviour_propensities_renormalize_over_the_unseen_items(fixed_head):
    histories, actions = np.array([[0, 0, 2], [0, 2, 4]]), np.array([3, 5])
    np.testing.assert_allclose(behaviour_propensities(fixed_head, histories, actions),
                               [0.3, 0.1])
    # round 0 excludes a (mass 0.4): 0.3 / 0.6; round 1 excludes a, c (0.6): 0.1 / 0.4
    np.testing.assert_allclose(
        behaviour_propensities(fixed_head, histories, actions, exclude=[[2], [2, 4]]),
        [0.5, 0.25])
    # a listed action is kept (a rare repeat, as in training); padding is never excluded
    np.testing.assert_allclose(
        behaviour_propensities(fixed_head, histories, actions, exclude=[[0, 2], [5, 2]]),
        [0.5, 0.1 / 0.6])
    with pytest.raises(ValueError, match=r"exclude must hold one id array per round \(2\)"):
        behaviour_propensities(fixed_head, histories, actions, exclude=[[2]])


def test_file_estimates_renormalize_unless_an_action_repeats(fixed_head):
    # test users: a, b, d (rounds: [a] -> b, [a, b] -> d) and c, a ([c] -> a)
    split, popularity = _hand_split([[2, 5], [4, 5], [2, 3, 5], [4, 2]])
    report = logged_off_policy(split, popularity, k=1, max_len=3, max_weight=10.0)(fixed_head)
    assert report["renormalized"] is True and report["rounds"] == 3
    assert report["history_mask"] == "post-hoc"
    assert report["history_mass"] == pytest.approx((0.4 + 0.7 + 0.2) / 3)
    # popularity's top-1 outside the history is d in every round: only round 2 logged it, with
    # beta = 0.1 / (1 - 0.7); weights 0, 3, 0
    estimate = report["estimates"]["popularity"]["learned"]
    assert estimate["mean_weight"] == pytest.approx(1.0) and "warning" not in estimate
    assert estimate["ips"] == pytest.approx(1.0) and estimate["snips"] == pytest.approx(1.0)
    assert "renormalized over the items outside" in report["propensities"]["learned"]
    assert report["estimates"]["logging"]["learned"]["mean_weight"] == pytest.approx(1.0)
    # a user who logs b twice: the logging policy does show earlier items, so no renormalizing,
    # and the full softmax's 0.1 for d gives popularity a weight of 10 (mean 10 / 4 rounds)
    split, popularity = _hand_split([[2, 5], [4, 5], [2, 3, 5], [4, 2], [3, 3]])
    report = logged_off_policy(split, popularity, k=1, max_len=3, max_weight=10.0)(fixed_head)
    assert report["renormalized"] is False and "not renormalized" in (
        report["propensities"]["learned"])
    # the mass the mask would remove: none in the repeat round [b] -> b (its action is kept)
    assert report["history_mass"] == pytest.approx((0.4 + 0.7 + 0.2 + 0.0) / 4)
    estimate = report["estimates"]["popularity"]["learned"]
    assert estimate["mean_weight"] == pytest.approx(2.5)
    assert estimate["warning"].startswith("mean importance weight 2.50 outside [0.8, 1.25]")
    assert "too small" in estimate["warning"] and report["history_mask"] == "none"
    # a head trained with the history masked is estimated with that masked softmax even with a
    # repeat (its action kept): d's beta in round 2 is 0.1 / 0.3 again, weights 0, 3, 0, 0
    masked = _fixed_head(behaviour_exclude_history=True)
    report = logged_off_policy(split, popularity, k=1, max_len=3, max_weight=10.0)(masked)
    assert report["history_mask"] == "trained" and report["renormalized"] is True
    assert "trained and estimated over the items outside" in report["propensities"]["learned"]
    assert report["estimates"]["popularity"]["learned"]["mean_weight"] == pytest.approx(0.75)


def test_file_estimates_mix_in_the_marginal_as_much_as_validation_likes(fixed_head):
    # training actions d, d: add-one marginal a, b, c 1/6 and d 3/6. The validation round
    # [a] -> d has head 0.1 / 0.6 against the marginal's (3/6) / (5/6): more marginal is always
    # likelier, so the grid's largest weight, 0.5, is chosen
    split, popularity = _hand_split([[2, 5], [4, 5], [2, 3, 5], [4, 2]], valid=[[2, 5]])
    report = logged_off_policy(split, popularity, k=1, max_len=3, max_weight=10.0)(fixed_head)
    smoothing = report["smoothing"]
    assert smoothing["epsilon"] == 0.5 and set(smoothing["valid_nll"]) == {
        str(eps) for eps in SMOOTHING_GRID}
    # test rounds [a] -> b, [a, b] -> d, [c] -> a: head 0.5, 1/3, 0.5; marginal 0.2, 0.75, 0.2
    beta = 0.5 * np.array([0.5, 1 / 3, 0.5]) + 0.5 * np.array([0.2, 0.75, 0.2])
    assert smoothing["test_nll"] == pytest.approx(-np.log(beta).mean())
    assert smoothing["test_nll_head"] == pytest.approx(-np.log([0.5, 1 / 3, 0.5]).mean())
    estimate = report["estimates"]["popularity"]["learned"]  # d is logged in round 2 only
    assert estimate["mean_weight"] == pytest.approx(1 / beta[1] / 3)
    assert "marginal at weight 0.5" in report["propensities"]["learned"]
    # without validation rounds nothing is mixed in
    split, popularity = _hand_split([[2, 5], [4, 5], [2, 3, 5], [4, 2]])
    report = logged_off_policy(split, popularity, k=1, max_len=3, max_weight=10.0)(fixed_head)
    assert report["smoothing"]["epsilon"] == 0.0 and report["smoothing"]["valid_nll"] == {}


@pytest.mark.parametrize("test_users, valid", [
    ([[2, 1, 3, 5], [4, 2]], ()),  # a test round on an unknown item (1), OOV in later histories
    ([[2, 3, 5], [4, 2]], [[2, 1]]),  # the only validation round is on an unknown item
])
def test_file_estimates_leave_out_rounds_on_unknown_items(fixed_head, test_users, valid):
    # The OOV id is never excluded nor a candidate: without its round, popularity's and the
    # logging policy's estimates are those of the same rounds without the unknown item (test
    # rounds [a] -> b, [a, b] -> d, [c] -> a; the policy's scores read the OOV id in the
    # history), and no validation round means no smoothing.
    split, popularity = _hand_split([[2, 5], [4, 5], *test_users], valid=valid)
    report = logged_off_policy(split, popularity, k=1, max_len=3, max_weight=10.0)(fixed_head)
    base, _ = _hand_split([[2, 5], [4, 5], [2, 3, 5], [4, 2]])
    expected = logged_off_policy(base, popularity, k=1, max_len=3, max_weight=10.0)(fixed_head)
    assert report["rounds"] == expected["rounds"] == 3 and report["users"] == 2
    assert report["smoothing"] == expected["smoothing"] and report["smoothing"]["epsilon"] == 0
    assert report["history_mass"] == pytest.approx(expected["history_mass"])
    assert report["history_mask"] == expected["history_mask"] == "post-hoc"
    for name in ("popularity", "logging"):
        assert report["estimates"][name]["learned"] == pytest.approx(
            expected["estimates"][name]["learned"])
    assert report["estimates"]["popularity"]["learned"]["nonzero_fraction"] == pytest.approx(
        1 / 3)  # d, popularity's top-1, logged in round 2 only


@pytest.mark.parametrize("probabilities", [[0.49, 0.3, 0.09, 0.16], [0.13, 0.14, 0.35, 0.42]])
def test_a_round_whose_mask_leaves_only_its_action_has_propensity_one(probabilities):
    # exp(log p - log kept) and p / kept are 1 + 2e-16 for some of these actions: a propensity
    # above 1 is refused by off_policy_value (a user who logged every item)
    policy = AttentionPolicy(AttentionPolicyConfig(vocab_size=6, max_len=3, dim=4))
    head = policy.network.get_layer("behaviour_head")
    kernel, _ = head.get_weights()
    head.set_weights([np.zeros_like(kernel), np.log([1.0, 1.0, *probabilities])])
    actions = np.arange(2, 6)
    others = [np.setdiff1d(actions, [a]) for a in actions]
    beta = behaviour_propensities(policy, np.array([[0, 0, 2]] * 4), actions, exclude=others)
    assert (beta <= 1.0).all() and beta == pytest.approx(1.0)
    marginal = marginal_propensities(np.array([2]), 6, actions, others)
    assert (marginal <= 1.0).all() and marginal == pytest.approx(1.0)


def test_mean_weight_warning_band():
    low, high = MEAN_WEIGHT_BAND
    assert low == pytest.approx(1 / high)  # symmetric in log scale
    for inside in (low, 1.0, high, 0.0):  # 0: no round has weight, nothing to calibrate
        assert mean_weight_warning({"mean_weight": inside}) is None
    assert "too large" in mean_weight_warning({"mean_weight": 0.79})
    assert "too small" in mean_weight_warning({"mean_weight": 1.26})
