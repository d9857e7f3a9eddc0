"""The behaviour head trained with the history masked out (`behaviour_exclude_history`): the
masked loss against NumPy, zero probability on the history, the importance weights, config."""

import numpy as np
import pytest

from tfrec_attn._keras import tf
from tfrec_attn.data import pad_left
from tfrec_attn.models import AttentionPolicy, AttentionPolicyConfig
from tfrec_attn.models.attention_policy import seen_items_mask
from tfrec_attn.models.policy_losses import behaviour_loss, exclude_actions

VOCAB, MAX_LEN, N = 16, 4, 12


def _masked_log_softmax(logits, excluded, actions):
    """NumPy reference: log softmax over the actions outside `excluded`, the logged one kept."""
    logits = logits.astype(np.float64)
    keep = ~excluded
    keep[np.arange(len(actions)), actions] = True
    shifted = np.where(keep, logits, -np.inf)
    shifted -= shifted.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    rows = [rng.choice(np.arange(2, VOCAB), size=k, replace=False)
            for k in rng.integers(1, MAX_LEN + 1, size=N)]
    seen = np.zeros((N, VOCAB), bool)
    for i, row in enumerate(rows):  # the full history: the window plus older items
        seen[i, row] = True
        seen[i, rng.integers(2, VOCAB, size=3)] = True
    actions = rng.integers(2, VOCAB, size=N)
    seen[0, actions[0]] = True  # one repeat: the logged action stays a candidate
    return {"history": pad_left(rows, MAX_LEN), "action": actions,
            "reward": (rng.random(N) < 0.6).astype(np.float32), "seen": seen}


def test_masked_behaviour_loss_matches_numpy():
    rng = np.random.default_rng(1)
    logits, actions = rng.normal(size=(N, 9)).astype(np.float32), rng.integers(0, 9, size=N)
    excluded = rng.random((N, 9)) < 0.4
    excluded[0, actions[0]] = True
    expected = -_masked_log_softmax(logits, excluded.copy(), actions)[np.arange(N), actions]
    got = behaviour_loss(tf.constant(logits), tf.constant(actions), tf.constant(excluded))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)
    unmasked = behaviour_loss(tf.constant(logits), tf.constant(actions)).numpy()
    assert (got.numpy() <= unmasked + 1e-6).all() and (got.numpy() < unmasked).any()


def test_excluded_actions_get_exactly_zero_probability():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(N, 9)).astype(np.float32) * 5
    excluded, actions = rng.random((N, 9)) < 0.5, rng.integers(0, 9, size=N)
    probs = tf.nn.softmax(exclude_actions(logits, excluded, actions)).numpy()
    zero = excluded.copy()
    zero[np.arange(N), actions] = False
    assert (probs[zero] == 0.0).all() and (probs[~zero] > 0).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)


def test_seen_items_mask_ignores_padding_and_oov():
    dense = seen_items_mask(tf.constant([[0, 0, 5], [1, 3, 3]]), 6).numpy()
    ragged = seen_items_mask(tf.ragged.constant([[5], [1, 3, 3]], dtype=tf.int64), 6).numpy()
    expected = np.zeros((2, 6), bool)
    expected[0, 5] = expected[1, 3] = True
    np.testing.assert_array_equal(dense, expected)
    np.testing.assert_array_equal(ragged, expected)


@pytest.mark.parametrize("with_seen", [True, False])
def test_compute_loss_masks_the_history_in_the_head_and_the_weights(with_seen):
    policy = AttentionPolicy(AttentionPolicyConfig(
        vocab_size=VOCAB, max_len=MAX_LEN, dim=8, correction="importance", max_weight=50.0,
        behaviour_exclude_history=True))
    batch = _batch()
    if not with_seen:  # the window's items only
        batch.pop("seen")
    loss = float(policy.compute_loss({k: tf.constant(v) for k, v in batch.items()}))
    seen = batch.get("seen", seen_items_mask(tf.constant(batch["history"]), VOCAB).numpy())
    outputs = {k: v.numpy() for k, v in policy(batch["history"]).items()}
    rows, actions = np.arange(N), batch["action"] - 2
    log_beta = _masked_log_softmax(outputs["behaviour_logits"][:, 2:], seen[:, 2:].copy(),
                                   actions)[rows, actions]
    logits = outputs["logits"][:, 2:].astype(np.float64)
    log_pi = (logits - np.log(np.exp(logits).sum(axis=1, keepdims=True)))[rows, actions]
    weights = np.minimum(np.exp(log_pi - log_beta), 50.0)  # pi over the MASKED beta
    expected = np.mean(-batch["reward"] * weights * log_pi) + np.mean(-log_beta)
    assert loss == pytest.approx(expected, rel=1e-4)
    assert float(policy.behaviour_loss_tracker.result()) == pytest.approx(-log_beta.mean(),
                                                                          rel=1e-5)
    assert float(policy.weight_tracker.result()) == pytest.approx(weights.mean(), rel=1e-4)


def test_config_round_trip_and_default():
    assert AttentionPolicyConfig(vocab_size=5).behaviour_exclude_history is False
    policy = AttentionPolicy(AttentionPolicyConfig(vocab_size=5, behaviour_exclude_history=True))
    config = policy.get_config()
    assert config["config"]["behaviour_exclude_history"] is True
    assert AttentionPolicy.from_config(config).config == policy.config


@pytest.mark.parametrize("kwargs, message", [
    ({"behaviour_exclude_history": "yes"},
     "behaviour_exclude_history must be a bool. Received: behaviour_exclude_history='yes'"),
    ({"behaviour_exclude_history": 1}, "behaviour_exclude_history must be a bool"),
    ({"behaviour_exclude_history": True, "behaviour_head": False, "correction": "none"},
     "behaviour_exclude_history=True masks the behaviour head's softmax and needs the head"),
])
def test_bad_values_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AttentionPolicyConfig(vocab_size=5, **kwargs)
