"""The attention RL policy on device (TFLite through LiteRT: float, int8, history exclusion, bad
input), and the production path of pruned and QAT policy networks: trained through
`AttentionPolicy.fit`, then served from a SavedModel on TF Serving's REST payload and from a
LiteRT file, both matching their Keras networks."""

import numpy as np
import pytest

from tfrec_attn._keras import keras, tf
from tfrec_attn.export import (
    LiteRTPolicy,
    PolicyModule,
    assert_builtin_only,
    convert_policy_to_tflite,
    export_policy,
)
from tfrec_attn.export.serving import parse_rest_response, rest_request
from tfrec_attn.models import AttentionPolicy, AttentionPolicyConfig, build_policy_network
from tfrec_attn.optimization import (
    make_qat_model,
    prune_model,
    pruning_callbacks,
    sparsity_report,
    strip_pruning,
)
from tfrec_attn.testing.policy import policy_reference
from tfrec_attn.testing.serving import predict_like_tf_serving
from tfrec_attn.training.bandit_simulator import BanditSimulator, logged_dataset

MAX_LEN, K, TRAIN_USERS, VOCAB, DIM = 6, 4, 160, 30, 8
ACTIONS = VOCAB - 2


@pytest.fixture(scope="module")
def sim():
    """28 items (vocab 30); users 0-159 train and calibrate, the other 40 are the requests."""
    return BanditSimulator(num_users=TRAIN_USERS + 40, num_items=ACTIONS, max_len=MAX_LEN,
                           mean_length=4, seed=0)


def fit(policy: AttentionPolicy, sim: BanditSimulator, callbacks=None) -> AttentionPolicy:
    """One epoch (5 steps) on logged feedback of the training users, as in production."""
    logs = sim.log(events_per_user=2, users=np.arange(TRAIN_USERS))
    # Eager: five tiny steps cost less than tracing the train step (~4 s a model).
    policy.compile(optimizer=keras.optimizers.Adam(5e-3), run_eagerly=True)
    policy.fit(logged_dataset(logs, batch_size=64), epochs=1, verbose=0, callbacks=callbacks)
    return policy


@pytest.fixture(scope="module")
def policy(sim):
    keras.utils.set_random_seed(0)
    config = AttentionPolicyConfig(vocab_size=VOCAB, max_len=MAX_LEN, dim=DIM)
    return fit(AttentionPolicy(config), sim)


@pytest.fixture(scope="module")
def histories(sim):
    """The held-out users' left-padded histories (3 to 6 items)."""
    rows = sim.histories[TRAIN_USERS:]
    assert len(set((rows > 0).sum(1))) > 2  # several lengths, so padding is exercised
    return rows


def agreement(out: dict, network: keras.Model, histories: np.ndarray) -> tuple:
    """`(top-1 agreement, mean top-K overlap, max |pi(a|s) difference|)` of a file's outputs
    against the Keras network's."""
    ids, _ = policy_reference(network, histories, K)
    ranked, probabilities = policy_reference(network, histories, ACTIONS)
    pi = np.zeros((len(histories), VOCAB))
    np.put_along_axis(pi, ranked, probabilities, 1)
    top1 = np.mean(out["item_ids"][:, 0] == ids[:, 0])
    overlap = np.mean([len(set(a) & set(b)) / K for a, b in zip(out["item_ids"], ids)])
    pi_diff = np.abs(np.take_along_axis(pi, out["item_ids"], 1) - out["probabilities"]).max()
    return top1, overlap, pi_diff


@pytest.fixture(scope="module")
def tflite_file(policy, sim, tmp_path_factory):
    """Converts (once per setting for the module) the trained policy to `.tflite`."""
    root, files = tmp_path_factory.mktemp("policy_tflite"), {}

    def convert(quantization: str = "none", k: int = K, exclude_history: bool = True):
        key = (quantization, k, exclude_history)
        if key not in files:
            files[key] = convert_policy_to_tflite(
                policy, root / f"{quantization}_{k}_{exclude_history}.tflite", k=k,
                quantization=quantization, representative_data=sim.histories[:TRAIN_USERS],
                exclude_history=exclude_history)
        return files[key]

    return convert


def test_float_tflite_matches_keras_and_saved_model_function(policy, histories, tflite_file):
    path = tflite_file()
    assert_builtin_only(path)
    runner = LiteRTPolicy(path)
    assert (runner.max_len, runner.k, runner.dynamic_batch) == (MAX_LEN, K, True)
    out = runner.recommend(histories)
    assert out["item_ids"].dtype == np.int64 and out["probabilities"].dtype == np.float32
    ids, probabilities = policy_reference(policy.network, histories, K)
    np.testing.assert_array_equal(out["item_ids"], ids)
    np.testing.assert_allclose(out["probabilities"], probabilities, rtol=1e-5, atol=1e-6)
    module = PolicyModule(policy, max_k=K)  # what `export_policy` saves for TF Serving
    served = module.serve(tf.constant(histories))
    np.testing.assert_array_equal(out["item_ids"], served["item_ids"])
    for row, history in zip(out["item_ids"], histories):
        assert row.min() >= 2 and not set(row) & set(history[history > 0])
    bad, oov = histories.copy(), histories.copy()
    bad[:, -1], oov[:, -1] = 10**9, 1  # unknown ids read as OOV, as in the SavedModel
    np.testing.assert_array_equal(runner.recommend(bad)["item_ids"],
                                  runner.recommend(oov)["item_ids"])


@pytest.mark.slow  # ~7 s (a second float conversion); exclusion is also tested fast above
def test_history_items_included_when_asked(policy, histories, tflite_file):
    out = LiteRTPolicy(tflite_file(k=ACTIONS, exclude_history=False)).recommend(histories)
    ids, probabilities = policy_reference(policy.network, histories, ACTIONS,
                                          exclude_history=False)
    np.testing.assert_array_equal(out["item_ids"], ids)
    # Every action returned: the probabilities are the whole policy, summing to one.
    np.testing.assert_allclose(out["probabilities"].sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(out["probabilities"], probabilities, rtol=1e-5, atol=1e-7)


# (top-1 agreement, top-K overlap, max |pi difference|) a quantized file must reach against its
# Keras network. Measured (seed 0, 40 requests, pi(a|s) up to ~0.12): the int8 policy (0.975,
# 0.99, 0.020); the float file of the QAT network, whose fake-quant ranges become
# QUANTIZE/DEQUANTIZE pairs (1.0, 0.97, 0.003). The bars leave room for other seeds/platforms.
BARS = {"int8": (0.9, 0.85, 0.05), "qat": (0.9, 0.85, 0.02)}


def assert_meets_bars(measured: tuple, kind: str) -> None:
    (top1, overlap, pi_diff), (min_top1, min_overlap, max_pi_diff) = measured, BARS[kind]
    assert top1 >= min_top1 and overlap >= min_overlap and pi_diff <= max_pi_diff, measured


def test_int8_tflite_agrees_with_keras(policy, histories, tflite_file):
    path = tflite_file("int8")
    assert_builtin_only(path)
    assert_meets_bars(agreement(LiteRTPolicy(path).recommend(histories), policy.network,
                                histories), "int8")


def test_bad_arguments_name_the_argument(policy, histories, tflite_file, tmp_path):
    for kwargs, match in [
            ({"k": 0}, f"k must be an int in \\[1, {ACTIONS}\\]"),
            ({"k": ACTIONS + 1}, "k must be an int in"),
            ({"k": True}, "k must be an int in"),
            ({"quantization": "int4"}, "quantization must be one of"),
            ({"quantization": "int8"}, "needs representative_data"),
            ({"quantization": "int8", "representative_data": histories[:, :3]},
             f"representative_data must be an int array \\(n >= 1, max_len={MAX_LEN}\\)"),
            ({"quantization": "int8", "representative_data": histories.astype(np.float32)},
             "representative_data must be an int array"),
            ({"quantization": "int8", "representative_data": np.full((2, MAX_LEN), 10 ** 6)},
             r"representative_data must hold item ids in \[0, vocab_size\)"),
            ({"exclude_history": "yes"}, "exclude_history must be a bool")]:
        with pytest.raises(ValueError, match=match):
            convert_policy_to_tflite(policy, tmp_path / "p.tflite", **kwargs)
    with pytest.raises(ValueError, match="policy_or_network must be an AttentionPolicy"):
        convert_policy_to_tflite(keras.Sequential([keras.layers.Dense(2)]), tmp_path / "p")
    tiny = build_policy_network(AttentionPolicyConfig(vocab_size=8, max_len=3, dim=4))
    wrapped = prune_model(tiny, target_sparsity=0.5, schedule="constant")
    with pytest.raises(ValueError, match="policy_or_network still has TFMOT pruning wrappers"):
        convert_policy_to_tflite(wrapped, tmp_path / "p.tflite")
    assert not list(tmp_path.iterdir())
    runner = LiteRTPolicy(tflite_file())
    with pytest.raises(ValueError, match="histories must be integer"):
        runner.recommend(histories.astype(np.float32))
    with pytest.raises(ValueError, match=f"histories must have length max_len={MAX_LEN}"):
        runner.recommend(histories[:, 1:])
    with pytest.raises(ValueError, match="histories must be 2-D"):
        runner.recommend(histories[0])
    empty = runner.recommend(histories[:0])
    assert empty["item_ids"].shape == empty["probabilities"].shape == (0, K)


def _copy(network: keras.Model) -> keras.Model:
    """A copy with its own weights (pruning wraps, and then trains, the layers it is given)."""
    copy = keras.models.clone_model(network)
    copy.set_weights(network.get_weights())
    return copy


@pytest.fixture(scope="module")
def optimized(policy, sim):
    """`{"pruned": (wrapped, stripped), "qat": (qat, qat)}`: the trained policy's network pruned
    to 50% (or made quantization-aware), then trained one epoch by `AttentionPolicy.fit`."""
    pruned = prune_model(_copy(policy.network), target_sparsity=0.5, schedule="constant",
                         frequency=1)
    trainer = AttentionPolicy(policy.config)
    trainer.network = pruned  # `compute_loss` trains whatever network the policy holds
    fit(trainer, sim, callbacks=pruning_callbacks())
    qat_trainer = AttentionPolicy(policy.config)
    qat_trainer.network = make_qat_model(policy.network)
    fit(qat_trainer, sim)
    return {"pruned": (pruned, strip_pruning(pruned)),
            "qat": (qat_trainer.network, qat_trainer.network)}


@pytest.mark.parametrize("kind", ["pruned", "qat"])
def test_optimized_network_serves_on_rest_and_litert(kind, optimized, histories, tmp_path):
    """Served from a SavedModel, both give their Keras network's actions and pi exactly; on
    LiteRT the pruned file does too, the QAT one within `BARS` (it runs the quantization)."""
    _, network = optimized[kind]
    ids, probabilities = policy_reference(network, histories, K)
    path = export_policy(network, tmp_path, max_k=K)
    got = parse_rest_response(predict_like_tf_serving(path, rest_request(histories)))
    np.testing.assert_array_equal(got["item_ids"], ids)
    np.testing.assert_allclose(got["probabilities"], probabilities, rtol=1e-5, atol=1e-6)
    tflite = convert_policy_to_tflite(network, tmp_path / f"{kind}.tflite", k=K)
    assert_builtin_only(tflite)
    out = LiteRTPolicy(tflite).recommend(histories)
    if kind == "qat":
        assert_meets_bars(agreement(out, network, histories), "qat")
        return
    np.testing.assert_array_equal(out["item_ids"], ids)
    np.testing.assert_allclose(out["probabilities"], probabilities, rtol=1e-5, atol=1e-6)
    assert sparsity_report(network)["sparsity"] == pytest.approx(0.5, abs=0.02)
    checkpoint = tf.train.load_checkpoint(str(path / "variables" / "variables"))
    tables = [checkpoint.get_tensor(name)  # the item table, (vocab, dim): saved sparse
              for name, shape in checkpoint.get_variable_to_shape_map().items()
              if shape == [VOCAB, DIM]]
    assert len(tables) == 1 and np.mean(tables[0] == 0) == pytest.approx(0.5, abs=0.02)


def _logits(network: keras.Model, rows: np.ndarray) -> np.ndarray:
    return network(tf.constant(rows), training=False)["logits"].numpy()


def test_padding_stays_masked_after_pruning(optimized, histories):
    """Padded positions are id 0 (`PaddingMask`), so their content is the table's row 0 plus a
    position vector: less padding, or another row 0, must leave every real output (the logits
    of actions, ids >= 2) unchanged, before and after `strip_pruning`."""
    short = histories[(histories > 0).sum(1) <= 3]  # real items fit in the last 3 positions
    assert len(short) >= 3
    embeddings = optimized["pruned"][1].get_layer("item_embedding").embeddings  # shared
    saved = embeddings.numpy()
    for network in optimized["pruned"]:
        want = _logits(network, short)
        np.testing.assert_allclose(_logits(network, short[:, -3:])[:, 2:], want[:, 2:],
                                   rtol=1e-5, atol=1e-5)
        embeddings.assign(np.concatenate([np.full_like(saved[:1], 50.0), saved[1:]]))
        try:
            got = _logits(network, short)
        finally:
            embeddings.assign(saved)
        assert np.abs(got[:, 0] - want[:, 0]).min() > 1e-3  # row 0 did change (its score)
        np.testing.assert_allclose(got[:, 2:], want[:, 2:], rtol=1e-5, atol=1e-5)
