"""The attention RL policy's serving contract: top-k actions and their probabilities under the
policy, on TF Serving's REST payloads, with history exclusion, OOV/padding, bad input and
versioning."""

import json

import numpy as np
import pytest

from tfrec_attn._keras import keras, tf
from tfrec_attn.export import PolicyModule, existing_versions, export_policy
from tfrec_attn.export.serving import parse_rest_response, rest_request
from tfrec_attn.models import AttentionPolicy, AttentionPolicyConfig
from tfrec_attn.testing.policy import policy_reference
from tfrec_attn.testing.serving import predict_like_tf_serving

VOCAB, MAX_LEN, K = 30, 6, 4


@pytest.fixture(scope="module")
def policy():
    keras.utils.set_random_seed(0)
    return AttentionPolicy(AttentionPolicyConfig(vocab_size=VOCAB, max_len=MAX_LEN, dim=8))


@pytest.fixture(scope="module")
def histories():
    """Left-padded histories of 1 to 6 items (one with a repeated item)."""
    rng = np.random.default_rng(0)
    lengths = np.array([6, 5, 3, 1, 4, 2])
    real = np.arange(MAX_LEN)[None, :] >= MAX_LEN - lengths[:, None]
    rows = np.where(real, rng.integers(2, VOCAB, (len(lengths), MAX_LEN)), 0)
    rows[0, -1] = rows[0, -2]
    return rows.astype(np.int64)


@pytest.fixture(scope="module")
def exported(policy, histories, tmp_path_factory):
    path = export_policy(policy, tmp_path_factory.mktemp("policy"), max_k=K, warmup=histories)
    return path, tf.saved_model.load(str(path))


def reference(network, histories, k=K, exclude_history=True):
    """NumPy top-k of the Keras network's logits, and `pi(a|s)` (softmax over ids >= 2)."""
    return policy_reference(network, histories, k, exclude_history)


def test_layout_metadata_and_warmup(policy, histories, exported):
    path, loaded = exported
    assert path.parts[-2:] == ("policy", "1")
    info = json.loads((path / "assets.extra" / "tfrec_attn.json").read_text())
    assert info["config"] == json.loads(json.dumps(policy.config.to_dict()))
    assert (info["max_len"], info["vocab_size"], info["max_k"]) == (MAX_LEN, VOCAB, K)
    assert info["signatures"] == ["serving_default"] and info["exclude_history"] is True
    records = tf.data.TFRecordDataset(str(path / "assets.extra" / "tf_serving_warmup_requests"))
    assert sum(1 for _ in records) == len(histories)
    signature = loaded.signatures["serving_default"]
    spec = signature.structured_input_signature[1]["history"]
    assert (spec.dtype, spec.shape.as_list()) == (tf.int64, [None, None])
    outputs = signature.structured_outputs
    assert (outputs["item_ids"].dtype, outputs["probabilities"].dtype) == (tf.int64, tf.float32)


def test_rest_payload_matches_keras(policy, histories, exported):
    path, _ = exported
    body = rest_request(histories)  # {"instances": [{"history": [...]}, ...]}
    got = parse_rest_response(predict_like_tf_serving(path, body))
    ids, probabilities = reference(policy.network, histories)
    np.testing.assert_array_equal(got["item_ids"], ids)
    np.testing.assert_allclose(got["probabilities"], probabilities, rtol=1e-5, atol=1e-6)
    for row, history in zip(got["item_ids"], histories):
        assert row.min() >= 2 and not set(row) & set(history[history > 0])


def test_including_history_items(policy, histories):
    module = PolicyModule(policy, max_k=VOCAB - 2, exclude_history=False)
    out = module.serve(tf.constant(histories))
    ids, probabilities = reference(policy.network, histories, k=VOCAB - 2, exclude_history=False)
    np.testing.assert_array_equal(out["item_ids"], ids)
    # Every action returned: the probabilities are the whole policy, summing to one.
    np.testing.assert_allclose(out["probabilities"].numpy().sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(out["probabilities"], probabilities, rtol=1e-5, atol=1e-7)


def test_padding_length_and_oov(histories, exported):
    """Over-padded, unpadded and padded rows give the same actions; unknown ids read as OOV."""
    _, loaded = exported
    serve = loaded.signatures["serving_default"]
    want = serve(history=tf.constant(histories))
    longer = serve(history=tf.constant(np.pad(histories, [(0, 0), (4, 0)])))
    np.testing.assert_array_equal(longer["item_ids"], want["item_ids"])
    np.testing.assert_allclose(longer["probabilities"], want["probabilities"], rtol=1e-5,
                               atol=1e-6)
    short = (histories > 0).sum(1) <= 3  # rows whose real items fit in the last 3 positions
    unpadded = serve(history=tf.constant(histories[short][:, -3:]))
    np.testing.assert_array_equal(unpadded["item_ids"], want["item_ids"].numpy()[short])
    np.testing.assert_allclose(unpadded["probabilities"], want["probabilities"].numpy()[short],
                               rtol=1e-5, atol=1e-6)
    bad, oov = histories.copy(), histories.copy()
    bad[:, -1], oov[:, -1] = 10**9, 1
    np.testing.assert_array_equal(serve(history=tf.constant(bad))["item_ids"],
                                  serve(history=tf.constant(oov))["item_ids"])


def test_history_longer_than_max_len_is_read_in_its_window_and_excluded_whole(histories,
                                                                              exported):
    """The network reads the last `max_len` ids; ids before them are excluded too, as SASRec's
    signatures and offline evaluation exclude the whole history (they used to be returned)."""
    serve = exported[1].signatures["serving_default"]
    window = serve(history=tf.constant(histories))
    top = window["item_ids"].numpy()
    longer = np.concatenate([top[:, :2], histories], axis=1)  # two top actions, before it
    got = serve(history=tf.constant(longer))
    ids = got["item_ids"].numpy()
    assert not any(set(before) & set(row) for before, row in zip(top[:, :2], ids))
    np.testing.assert_array_equal(ids[:, :K - 2], top[:, 2:])  # the same state and order
    np.testing.assert_allclose(got["probabilities"].numpy()[:, :K - 2],
                               window["probabilities"].numpy()[:, 2:], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("history, match", [
    (np.zeros(MAX_LEN, np.int64), "tensor history"),
    (np.zeros((1, MAX_LEN), np.float32), "int64"),
])
def test_signature_rejects_bad_input(exported, history, match):
    _, loaded = exported
    with pytest.raises(tf.errors.InvalidArgumentError, match=match):
        loaded.signatures["serving_default"](history=tf.constant(history))


@pytest.mark.parametrize("kwargs, match", [
    ({"max_k": 0}, "max_k must be an int in \\[1, 28\\]"),
    ({"max_k": VOCAB - 1}, "max_k must be an int in"),
    ({"warmup": np.zeros((2, MAX_LEN), np.float32)}, "warmup must be an integer array"),
    ({"exclude_history": "no"}, "exclude_history must be a bool. Received: "
                                "exclude_history='no'"),
    ({"version": -3}, r"version must be an int >= 0 \(TF Serving"),
])
def test_bad_export_arguments_name_the_argument(policy, tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        export_policy(policy, tmp_path, **kwargs)
    assert existing_versions(tmp_path / "policy") == []


def test_rejects_other_models(tmp_path):
    with pytest.raises(ValueError, match="policy_or_network must be an AttentionPolicy"):
        export_policy(keras.Sequential([keras.layers.Dense(2)]), tmp_path)


@pytest.mark.slow  # ~7 s: a second export and reload
def test_network_export_is_the_next_version(policy, histories, exported):
    """A bare network exports too (max_len read from its PositionEmbedding), as version 2."""
    path = export_policy(policy.network, exported[0].parent.parent, max_k=2)
    assert path.name == "2" and existing_versions(path.parent) == [1, 2]
    info = json.loads((path / "assets.extra" / "tfrec_attn.json").read_text())
    assert info["config"] is None and info["max_len"] == MAX_LEN
    got = tf.saved_model.load(str(path)).signatures["serving_default"](
        history=tf.constant(histories))["item_ids"]
    np.testing.assert_array_equal(got, reference(policy.network, histories, k=2)[0])
