"""The synthetic oracle: hand-checked probabilities, group recovery, and the ceiling it sets."""

import numpy as np
import pytest

from tfrec_attn.data import build_sequences, generate_synthetic, leave_one_out
from tfrec_attn.evaluation import evaluate, evaluate_baselines
from tfrec_attn.evaluation.oracle import SyntheticOracle


def _hand_oracle():
    # ids 2..4; group 0 likes id 2, group 1 likes id 3; id 2 -> successor 4 (single link).
    group_probs = np.array([[0, 0, 0.8, 0.1, 0.1], [0, 0, 0.1, 0.8, 0.1]])
    successors = np.array([[-1, -1], [-1, -1], [4, 4], [2, 3], [3, 3]])
    return SyntheticOracle(group_probs, successors, successor_prob=0.5)


def test_hand_checked_scores():
    oracle = _hand_oracle()
    # History [3]: likelihoods 0.1 (g0) and 0.8 (g1) -> posterior (1/9, 8/9).
    post = np.exp(oracle.group_log_posterior(np.array([3])))
    np.testing.assert_allclose(post, [1 / 9, 8 / 9])
    probs = np.exp(oracle.score([np.array([3])])[0])
    fresh = post @ oracle.group_probs
    expected = 0.5 * fresh + 0.5 * np.array([0, 0, 0.5, 0.5, 0])  # 3 -> 2 or 3
    np.testing.assert_allclose(probs, expected)
    assert probs[:2].tolist() == [0, 0] and np.isclose(probs.sum(), 1.0)


def test_successor_steps_count_in_the_likelihood():
    oracle = _hand_oracle()
    # 2 -> 4 is a successor step: P = 0.5 * 1 + 0.5 * q_g(4) under both groups.
    post = np.exp(oracle.group_log_posterior(np.array([0, 2, 4])))  # padding ignored
    lik = np.array([0.8 * (0.5 + 0.05), 0.1 * (0.5 + 0.05)])
    np.testing.assert_allclose(post, lik / lik.sum())


@pytest.fixture(scope="module")
def synthetic():
    frame = generate_synthetic(num_users=400, num_items=200, mean_length=25, seed=3)
    data = build_sequences(frame, min_events=3)
    return frame, data, leave_one_out(data)


def test_recovers_the_planted_group_from_long_histories(synthetic):
    frame, data, _ = synthetic
    oracle = SyntheticOracle.from_frame(frame, data.vocab)
    groups = frame.attrs["user_groups"].set_index("user")["group"]
    users = data.users  # raw user ids, row-aligned with data.sequences
    long = [i for i, s in enumerate(data.sequences) if len(s) >= 30]
    guessed = [int(np.argmax(oracle.group_log_posterior(data.sequences[i]))) for i in long]
    truth = [int(groups[str(users[i])]) for i in long]
    assert len(long) > 50
    assert np.mean(np.equal(guessed, truth)) > 0.9


def test_oracle_is_the_ceiling_of_both_baselines(synthetic):
    frame, data, split = synthetic
    oracle = SyntheticOracle.from_frame(frame, data.vocab)
    for protocol in ("full", "sampled-100"):
        best = evaluate(oracle.score, split.test_histories, split.test_targets, data.vocab_size,
                        protocol)["ndcg@10"]
        baselines = evaluate_baselines(split.train, split.test_histories, split.test_targets,
                                       data.vocab_size, protocol)
        assert best > max(b["ndcg@10"] for b in baselines.values()), (protocol, best, baselines)


def test_frame_without_attrs_is_rejected(synthetic):
    frame, data, _ = synthetic
    with pytest.raises(ValueError, match="generate_synthetic"):
        SyntheticOracle.from_frame(frame[["user", "item"]].copy().pipe(_drop_attrs), data.vocab)


def _drop_attrs(frame):
    frame.attrs = {}
    return frame


@pytest.mark.parametrize("kwargs, message", [
    ({"group_probs": np.ones((2, 5)), "successors": np.ones((4, 2)), "successor_prob": 0.5},
     "successors"),
    ({"group_probs": np.ones((2, 5)), "successors": np.ones((5, 2)), "successor_prob": 1.5},
     "successor_prob"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SyntheticOracle(**kwargs)
