"""The attention policy: loss values by hand, shapes, padding, round trips, pruning, QAT/TFLite."""

import math

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from tfrec_attn._keras import keras, tf
from tfrec_attn.data import pad_left
from tfrec_attn.export import assert_builtin_only, tflite_ops
from tfrec_attn.models import AttentionPolicy, AttentionPolicyConfig, build_policy_network
from tfrec_attn.models.policy_losses import (
    behaviour_loss,
    importance_weights,
    reinforce_loss,
    top_k_correction,
)
from tfrec_attn.optimization import (
    make_qat_model,
    prune_model,
    pruning_callbacks,
    sparsity_report,
    strip_pruning,
)

VOCAB, MAX_LEN = 24, 8
LOG3 = math.log(3.0)


def _config(**overrides):
    return AttentionPolicyConfig(**{"vocab_size": VOCAB, "max_len": MAX_LEN, "dim": 8,
                                    "num_heads": 2, **overrides})


def _histories(length=MAX_LEN, seed=0):
    rng = np.random.default_rng(seed)
    rows = [rng.integers(2, VOCAB, size=n) for n in (1, 3, 5, 6)]
    return pad_left(rows, length)


def _batch(seed=0, n=16):
    rng = np.random.default_rng(seed)
    rows = [rng.integers(2, VOCAB, size=k) for k in rng.integers(1, MAX_LEN + 1, size=n)]
    return {"history": pad_left(rows, MAX_LEN), "action": rng.integers(2, VOCAB, size=n),
            "reward": (rng.random(n) < 0.5).astype(np.float32),
            "propensity": np.full(n, 1.0 / (VOCAB - 2), np.float32)}


def _dataset(batches=2, batch_size=16):
    batch = _batch(n=batches * batch_size)
    return tf.data.Dataset.from_tensor_slices(batch).batch(batch_size)


# --- losses against hand-computed values ------------------------------------------------------

def test_importance_weights_are_pi_over_beta_capped():
    weights = importance_weights(tf.constant([0.75, 0.75, 0.2]), tf.constant([0.5, 0.05, 0.0]),
                                 max_weight=10.0)
    # 0.75 / 0.5; 0.75 / 0.05 = 15 capped at 10; beta = 0 -> capped at 10 (no nan).
    np.testing.assert_allclose(weights.numpy(), [1.5, 10.0, 10.0], rtol=1e-6)
    uncapped = importance_weights(tf.constant([0.75]), tf.constant([0.05]))
    np.testing.assert_allclose(uncapped.numpy(), [15.0], rtol=1e-6)


def test_top_k_correction_hand_checked():
    got = top_k_correction(tf.constant([0.75, 0.5, 0.0]), 3).numpy()
    np.testing.assert_allclose(got, [3 * 0.25**2, 3 * 0.5**2, 3.0], rtol=1e-6)
    np.testing.assert_array_equal(top_k_correction(tf.constant([0.3, 0.9]), 1).numpy(), [1, 1])


def test_reinforce_loss_value_and_gradient():
    """logits [0, ln 3] -> pi = [0.25, 0.75]; action 1, reward 2, beta 0.5, K = 3:
    w = min(1.5, 10), lambda = 3 * 0.25^2, loss = -w lambda r log 0.75; the factors are
    constants, so d loss / d logits = w lambda r (pi - onehot)."""
    logits = tf.Variable([[0.0, LOG3]])
    with tf.GradientTape() as tape:
        loss = reinforce_loss(logits, tf.constant([1]), tf.constant([2.0]),
                              behaviour_probs=tf.constant([0.5]), top_k=3, max_weight=10.0)
    factor = 1.5 * 3 * 0.25**2 * 2.0
    np.testing.assert_allclose(loss.numpy(), [-factor * math.log(0.75)], rtol=1e-5)
    np.testing.assert_allclose(tape.gradient(loss, logits).numpy(),
                               [[factor * 0.25, factor * (0.75 - 1.0)]], rtol=1e-5)


def test_reinforce_loss_clips_and_zero_reward_is_zero():
    logits = tf.constant([[0.0, LOG3], [0.0, LOG3]])
    loss = reinforce_loss(logits, tf.constant([1, 0]), tf.constant([1.0, 0.0]),
                          behaviour_probs=tf.constant([0.05, 0.5]), max_weight=4.0).numpy()
    np.testing.assert_allclose(loss, [-4.0 * math.log(0.75), 0.0], rtol=1e-5)
    plain = reinforce_loss(logits, tf.constant([0, 1]), tf.constant([1.0, 3.0])).numpy()
    np.testing.assert_allclose(plain, [-math.log(0.25), -3.0 * math.log(0.75)], rtol=1e-5)


def test_behaviour_loss_is_cross_entropy():
    loss = behaviour_loss(tf.constant([[0.0, LOG3], [0.0, LOG3]]), tf.constant([0, 1]))
    np.testing.assert_allclose(loss.numpy(), [-math.log(0.25), -math.log(0.75)], rtol=1e-5)


@pytest.mark.parametrize("kwargs, message", [({"top_k": 0}, "top_k"),
                                              ({"max_weight": 0.0}, "max_weight"),
                                              ({"top_k": 2.0}, "top_k")])
def test_loss_arguments_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        reinforce_loss(tf.zeros((1, 2)), tf.constant([0]), tf.constant([1.0]),
                       behaviour_probs=tf.constant([0.5]), **kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"vocab_size": 2}, "vocab_size"), ({"dim": 0}, "dim"), ({"correction": "ips"}, "correction"),
     ({"propensity": "true"}, "propensity"), ({"max_weight": -1.0}, "max_weight"),
     ({"top_k": 0}, "top_k"), ({"dropout": 1.0}, "dropout"), ({"dim": 9}, "divisible"),
     ({"behaviour_head": False}, "behaviour_head"), ({"ffn_dim": 0}, "ffn_dim"),
     ({"behaviour_weight": -1.0}, "behaviour_weight")])
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _config(**kwargs)


def test_config_without_head_is_valid_for_logged_or_no_correction():
    assert not _config(behaviour_head=False, propensity="logged").behaviour_head
    assert _config(behaviour_head=False, correction="none").correction == "none"


# --- the network ---------------------------------------------------------------------------

@pytest.mark.parametrize("head", [True, False])
def test_network_shapes(head):
    config = _config(behaviour_head=head, correction="none")
    outputs = build_policy_network(config)(_histories())
    expected = {"logits", "behaviour_logits"} if head else {"logits"}
    assert set(outputs) == expected
    for value in outputs.values():
        assert value.shape == (4, VOCAB)


def _padding_invariant(network):
    """Logits ignore padding: its amount and the padding row of the item table."""
    short, long = _histories(MAX_LEN - 2), _histories(MAX_LEN)
    out_short, out_long = network(short), network(long)
    for key in out_short:
        np.testing.assert_allclose(out_short[key], out_long[key], atol=1e-5)
    return out_long


def test_padding_ids_cannot_change_logits():
    network = build_policy_network(_config(num_blocks=2))
    before = _padding_invariant(network)
    table = network.get_layer("item_embedding").embeddings
    table.assign(tf.tensor_scatter_nd_update(table, [[0]], 100.0 * tf.ones((1, 8))))
    after = network(_histories())
    # Only the score of id 0 itself (the tied row that changed) may move.
    np.testing.assert_allclose(after["logits"][:, 1:], before["logits"][:, 1:], atol=1e-5)
    np.testing.assert_allclose(after["behaviour_logits"], before["behaviour_logits"], atol=1e-5)


def test_behaviour_head_does_not_train_the_state():
    network = build_policy_network(_config())
    with tf.GradientTape() as tape:
        outputs = network(_histories())
        loss = tf.reduce_mean(behaviour_loss(outputs["behaviour_logits"], tf.constant([3] * 4)))
    grads = tape.gradient(loss, network.trainable_variables)
    head = network.get_layer("behaviour_head").trainable_variables
    for variable, grad in zip(network.trainable_variables, grads, strict=True):
        if any(variable is h for h in head):
            assert grad is not None and np.abs(grad.numpy()).sum() > 0
        else:
            assert grad is None, variable.name


# --- the model and its training path --------------------------------------------------------

@pytest.mark.parametrize("correction, propensity, top_k", [
    ("top_k", "learned", 3), ("importance", "logged", 1), ("none", "learned", 1)])
def test_compute_loss_matches_hand_computation(correction, propensity, top_k):
    policy = AttentionPolicy(_config(correction=correction, propensity=propensity, top_k=top_k,
                                     max_weight=3.0, behaviour_weight=0.5))
    batch = _batch()
    loss = float(policy.compute_loss({k: tf.constant(v) for k, v in batch.items()}))

    def log_softmax(x):
        x = x[:, 2:].astype(np.float64)
        x = x - x.max(1, keepdims=True)
        return x - np.log(np.exp(x).sum(1, keepdims=True))

    outputs = {k: v.numpy() for k, v in policy(batch["history"]).items()}
    rows, actions = np.arange(16), batch["action"] - 2
    log_pi = log_softmax(outputs["logits"])[rows, actions]
    log_beta = log_softmax(outputs["behaviour_logits"])[rows, actions]
    factor = batch["reward"].astype(np.float64)
    if correction != "none":
        beta = batch["propensity"] if propensity == "logged" else np.exp(log_beta)
        factor *= np.minimum(np.exp(log_pi) / beta, 3.0)
    factor *= top_k * (1 - np.exp(log_pi)) ** (top_k - 1)
    expected = np.mean(-factor * log_pi) + 0.5 * np.mean(-log_beta)
    assert loss == pytest.approx(expected, rel=1e-4)


def test_fit_on_tf_data_updates_the_policy():
    policy = AttentionPolicy(_config())
    policy.compile(optimizer=keras.optimizers.Adam(1e-2), run_eagerly=True)
    before = policy(_histories())["logits"].numpy()
    history = policy.fit(_dataset(), epochs=2, verbose=0)
    assert {"loss", "policy_loss", "behaviour_loss", "importance_weight"} <= set(history.history)
    assert history.history["behaviour_loss"][-1] < history.history["behaviour_loss"][0]
    assert 0 < history.history["importance_weight"][-1] <= policy.config.max_weight
    assert not np.allclose(policy(_histories())["logits"].numpy(), before)


def test_saved_model_and_weights_round_trip(tmp_path):
    policy = AttentionPolicy(_config())
    histories = tf.constant(_histories())
    expected = policy(histories)
    policy.network.save(str(tmp_path / "network"), save_format="tf")  # a SavedModel directory
    loaded = keras.models.load_model(str(tmp_path / "network"))
    got = loaded(histories)
    for key in expected:
        np.testing.assert_allclose(got[key].numpy(), expected[key].numpy(), atol=1e-6)
    policy.save_weights(str(tmp_path / "policy"))
    fresh = AttentionPolicy.from_config(policy.get_config())
    assert fresh.config == policy.config
    fresh(histories)
    fresh.load_weights(str(tmp_path / "policy"))
    np.testing.assert_allclose(fresh(histories)["logits"], expected["logits"], atol=1e-6)


def test_pruning_to_half_keeps_padding_masked():
    policy = AttentionPolicy(_config())
    pruned = prune_model(policy.network, target_sparsity=0.5, schedule="constant", frequency=1)
    policy.network = pruned  # fine-tunes through the policy's own loss
    policy.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True)
    policy.fit(_dataset(), epochs=1, verbose=0, callbacks=pruning_callbacks())
    report = sparsity_report(pruned)
    assert {"item_embedding", "block_0", "behaviour_head"} <= set(report["layers"]), report
    for name, entry in report["layers"].items():
        assert entry["sparsity"] == pytest.approx(0.5, abs=0.02), name
    _padding_invariant(pruned)
    stripped = strip_pruning(pruned)
    np.testing.assert_allclose(stripped(_histories())["logits"], pruned(_histories())["logits"],
                               atol=1e-6)


def _tflite_logits(network, path):
    @tf.function(input_signature=[tf.TensorSpec([None, MAX_LEN], tf.int64, name="history")])
    def serve(history):
        return network(history, training=False)

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [serve.get_concrete_function()], network)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    path.write_bytes(converter.convert())
    assert_builtin_only(path)
    return Interpreter(model_path=str(path)).get_signature_runner()


@pytest.mark.slow  # ~14 s; the DIN tower and SASRec keep QAT->TFLite in the fast suite
def test_qat_policy_trains_and_converts_to_builtin_tflite(tmp_path):
    policy = AttentionPolicy(_config())
    qat = make_qat_model(policy.network)
    assert type(qat.get_layer("block_0")).__name__ == "QuantizeWrapperV2"
    policy.network = qat
    policy.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True)
    history = policy.fit(_dataset(batches=1), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])

    runner = _tflite_logits(qat, tmp_path / "policy.tflite")
    # The fake-quant points become real int8 QUANTIZE/DEQUANTIZE pairs in the flatbuffer.
    assert {"QUANTIZE", "DEQUANTIZE"} <= tflite_ops(tmp_path / "policy.tflite")
    histories = _histories()
    expected = {k: v.numpy() for k, v in qat(histories, training=False).items()}
    for key, value in expected.items():
        got = np.concatenate([runner(history=histories[row:row + 1])[key]  # converted batch: 1
                              for row in range(len(histories))])
        # int8 rounding differs from fake-quant by at most a step or two (measured: 1.2% of the
        # logits' spread, one output step = 1.5% for the behaviour head's quantized Dense).
        np.testing.assert_allclose(got, value, atol=0.03 * np.ptp(value))
        np.testing.assert_array_equal(got.argmax(1), value.argmax(1))
