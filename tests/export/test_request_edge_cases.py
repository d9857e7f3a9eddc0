"""Requests at the edges of every exported SavedModel: an empty history (a cold-start user) gets
the model's padding-only prediction on every signature, and top-k slots no eligible item fills
hold id -1 (score -inf, probability 0) rather than an excluded id."""

import numpy as np
import pytest

from tfrec_attn._keras import keras, tf
from tfrec_attn.export import (
    LiteRTPolicy,
    convert_policy_to_tflite,
    export_autoencoder,
    export_policy,
    export_ranker,
    export_saved_model,
)
from tfrec_attn.models import (
    DIN,
    AttentionAutoencoderConfig,
    AttentionPolicy,
    AttentionPolicyConfig,
    DINConfig,
    SASRec,
    SASRecConfig,
    build_attention_autoencoder,
)

VOCAB, MAX_LEN, K = 12, 6, 5  # 10 items: a history can cover most of the catalogue


def _sasrec():
    return SASRec(SASRecConfig(vocab_size=VOCAB, max_len=MAX_LEN, dim=8, num_blocks=1))


def _policy():
    return AttentionPolicy(AttentionPolicyConfig(vocab_size=VOCAB, max_len=MAX_LEN, dim=8))


EXPORTS = {
    "sasrec": lambda root: export_saved_model(_sasrec(), root, "sasrec", k=K),
    "sasrec_candidates": lambda root: export_saved_model(_sasrec(), root, "candidates", k=3,
                                                         candidate_ids=[5, 6, 7]),
    "policy": lambda root: export_policy(_policy(), root, max_k=K),
    "din": lambda root: export_ranker(
        DIN(DINConfig(vocab_size=VOCAB, max_len=MAX_LEN, dim=4, attention_units=(4,),
                      mlp_units=(4,))), root, max_k=K),
    "autoencoder": lambda root: export_autoencoder(
        build_attention_autoencoder(AttentionAutoencoderConfig(
            VOCAB, max_len=MAX_LEN, dim=8, num_heads=2, num_blocks=0)), root, max_k=K),
}


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """`loaded(name)`: the reloaded export of `EXPORTS[name]` (untrained weights), saved once."""
    cache = {}

    def load(name):
        if name not in cache:
            keras.utils.set_random_seed(0)
            path = EXPORTS[name](tmp_path_factory.mktemp(name))
            cache[name] = tf.saved_model.load(str(path))
        return cache[name]

    return load


# (export, signature, the history input's name, the other inputs of a 2-row request)
COLD_START = {
    "sasrec-serving_default": ("sasrec", "serving_default", "history", {}),
    "sasrec-recommend": ("sasrec", "recommend", "history", {"k": tf.constant(3)}),
    "sasrec-score": ("sasrec", "score", "history",
                     {"candidate_ids": tf.constant([[2, 3, 4]] * 2, tf.int64)}),
    "sasrec-user_embedding": ("sasrec", "user_embedding", "history", {}),
    "policy-serving_default": ("policy", "serving_default", "history", {}),
    "din-serving_default": ("din", "serving_default", "history",
                            {"candidates": tf.constant([[2, 3, 4, 0]] * 2, tf.int64)}),
    "din-rank": ("din", "rank", "history",
                 {"candidates": tf.constant([[2, 3, 4, 0]] * 2, tf.int64)}),
    "autoencoder-serving_default": ("autoencoder", "serving_default", "items", {}),
}


@pytest.mark.parametrize("case", COLD_START.values(), ids=COLD_START.keys())
def test_empty_history_gets_the_padding_only_prediction(loaded, case):
    """A history of length 0 answers like a history of padding only (0, 1 or max_len + 2
    zeros), with the usual shapes and dtypes; it used to fail on the last position's slice."""
    name, signature, history_name, others = case
    function = loaded(name).signatures[signature]

    def call(length):
        return function(**{history_name: tf.zeros((2, length), tf.int64)}, **others)

    empty = call(0)
    for length in (1, MAX_LEN + 2):
        padding = call(length)
        assert set(empty) == set(padding)
        for key, value in padding.items():
            assert (empty[key].dtype, empty[key].shape) == (value.dtype, value.shape), key
            np.testing.assert_allclose(empty[key].numpy(), value.numpy(), rtol=1e-5, atol=1e-6)
    for key, value in empty.items():
        if value.dtype.is_floating:
            assert np.isfinite(value.numpy()).all(), key
    if "item_ids" in empty and name != "din":  # a cold start still gets K real items
        assert (empty["item_ids"].numpy() >= 2).all()


# (export, signature, other inputs, history rows, the ids each row may get)
UNFILLED = {
    "sasrec-serving_default": (
        "sasrec", "serving_default", {},
        [list(range(2, 10)), [0] * 7 + [2]], [{10, 11}, set(range(3, VOCAB))]),
    "sasrec-recommend": (
        "sasrec", "recommend", {"k": tf.constant(4)},
        [list(range(3, 11)), [0, 0, 0, 4, 5, 6, 7, 8]], [{2, 11}, {2, 3, 9, 10, 11}]),
    "sasrec-candidate_set": (
        "sasrec_candidates", "serving_default", {}, [[0, 5, 9], [0, 2, 3]], [{6, 7}, {5, 6, 7}]),
    "policy-serving_default": (  # the whole request is excluded, beyond max_len too
        "policy", "serving_default", {},
        [[9, 2, 3, 4, 5, 6, 7], [0, 0, 0, 0, 0, 0, 2]], [{8, 10, 11}, set(range(3, VOCAB))]),
    "autoencoder-serving_default": (  # the whole request is excluded, beyond max_len too
        "autoencoder", "serving_default", {},
        [list(range(2, 10)), [0] * 7 + [2]], [{10, 11}, set(range(3, VOCAB))]),
}


@pytest.mark.parametrize("case", UNFILLED.values(), ids=UNFILLED.keys())
def test_slots_no_eligible_item_fills_hold_minus_one(loaded, case):
    """Fewer eligible items than `k`: every eligible item, best first, then id -1 with score
    -inf (the policy: probability 0). History, padding, OOV and non-candidate ids used to fill
    the tail."""
    name, signature, others, rows, eligible = case
    history = {"items" if name == "autoencoder" else "history": tf.constant(rows, tf.int64)}
    out = loaded(name).signatures[signature](**history, **others)
    ids = out["item_ids"].numpy()
    values = out["scores" if "scores" in out else "probabilities"]
    assert values.dtype == tf.float32
    values = values.numpy()
    for row_ids, row_values, allowed in zip(ids, values, eligible):
        filled = min(len(allowed), len(row_ids))
        assert set(row_ids[:filled]) <= allowed and len(set(row_ids[:filled])) == filled
        assert (row_ids[filled:] == -1).all()
        assert np.isfinite(row_values[:filled]).all()
        assert (np.diff(row_values[:filled]) <= 0).all()
        unfilled = row_values[filled:]
        if "scores" in out:
            assert (unfilled == -np.inf).all()
        else:
            assert (unfilled == 0.0).all() and (row_values[:filled] > 0).all()


@pytest.mark.parametrize("candidate_ids, k, count", [
    ([5, 6, 7], 5, 3),
    ([5, 5, 6, 7], 4, 3),  # distinct ids count
], ids=["more_than_the_set", "duplicates"])
def test_export_refuses_k_above_the_candidate_count(candidate_ids, k, count, tmp_path):
    with pytest.raises(ValueError, match=rf"at most the number of candidate_ids \({count} "
                                         rf"distinct ids\).*Received: k={k}"):
        export_saved_model(_sasrec(), tmp_path, "s", k=k, candidate_ids=candidate_ids)
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())


@pytest.mark.parametrize("name", ["a/b", "../escaped", "", "-x"])
def test_export_refuses_a_name_that_is_not_one_directory(name, tmp_path):
    with pytest.raises(ValueError, match="name must be one directory name"):
        export_saved_model(_sasrec(), tmp_path / "models", name)
    assert not (tmp_path / "models").exists() and not (tmp_path / "escaped").exists()


@pytest.mark.parametrize("quantization", ["none", "int8"])
def test_policy_tflite_marks_unfilled_slots_too(quantization, tmp_path):
    """The policy's LiteRT file holds `PolicyModule.serve`: -1 and probability 0 there too, in
    float and full-integer int8 (SASRec's top-k file cannot: see `build_topk_model`)."""
    keras.utils.set_random_seed(0)
    rows = np.array([[2, 3, 4, 5, 6, 7], [0, 0, 0, 0, 0, 2]], np.int64)
    path = convert_policy_to_tflite(_policy(), tmp_path / "policy.tflite", k=K,
                                    quantization=quantization, representative_data=rows)
    out = LiteRTPolicy(path).recommend(rows)
    assert set(out["item_ids"][0, :4]) == {8, 9, 10, 11}
    assert out["item_ids"][0, 4] == -1 and out["probabilities"][0, 4] == 0.0
    assert (out["item_ids"][1] >= 3).all() and (out["probabilities"][1] > 0).all()


VERSIONED_EXPORTS = {
    "sasrec": lambda root, version=None, **kw: export_saved_model(
        _sasrec(), root, "m", k=K, version=version, **kw),
    "policy": lambda root, version=None, **kw: export_policy(
        _policy(), root, "m", version=version, **kw),
    "din": lambda root, version=None, **kw: export_ranker(
        DIN(DINConfig(vocab_size=VOCAB, max_len=MAX_LEN, dim=4, attention_units=(4,),
                      mlp_units=(4,))), root, "m", version=version, **kw),
    "autoencoder": lambda root, version=None, **kw: export_autoencoder(
        build_attention_autoencoder(AttentionAutoencoderConfig(
            VOCAB, max_len=MAX_LEN, dim=8, num_blocks=0)), root, "m", version=version, **kw),
}


@pytest.mark.parametrize("export", VERSIONED_EXPORTS.values(), ids=VERSIONED_EXPORTS.keys())
@pytest.mark.parametrize("version", [-3, 2.5])
def test_every_export_refuses_a_version_tf_serving_cannot_load(export, version, tmp_path):
    """TF Serving loads only non-negative integer version directories (`din/-3` used to be
    written, and `keep=N` ignored it); a float used to be truncated."""
    with pytest.raises(ValueError, match=rf"version must be an int >= 0 \(TF Serving loads "
                                         rf"only .*\)\. Received: version={version}"):
        export(tmp_path, version)
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())


@pytest.mark.parametrize("export", VERSIONED_EXPORTS.values(), ids=VERSIONED_EXPORTS.keys())
@pytest.mark.parametrize("keep", [-1, 0, "1", 1.5, True])
def test_every_export_refuses_a_bad_keep_before_writing(export, keep, tmp_path):
    """`keep=-1` used to write the version and then fail, `keep=0` was ignored, and a string or
    float failed with a raw TypeError after the write."""
    with pytest.raises(ValueError, match=rf"keep must be an int >= 1 or None \(keep every "
                                         rf"version\)\. Received: keep={keep!r}"):
        export(tmp_path, keep=keep)
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())
