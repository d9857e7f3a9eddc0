"""A SASRec with a transition prior: the SavedModel signatures, the TFLite files and the
optimization wrappers rank by the same mixture as the Keras model."""

import numpy as np
import pytest

from tfrec_attn._keras import tf
from tfrec_attn.data import pad_left
from tfrec_attn.evaluation import CooccurrenceRecommender
from tfrec_attn.export import (
    LiteRTRecommender,
    assert_builtin_only,
    convert_to_tflite,
    tflite_ops,
)
from tfrec_attn.export.saved_model import export_saved_model
from tfrec_attn.models import SASRec, SASRecConfig, build_scoring_model
from tfrec_attn.training.scoring import make_score_fn
from tfrec_attn.training.transition_prior import fill_item_item

MAX_LEN = 12  # the `tiny_sasrec` fixture's max_len
K = 10
NEIGHBORS = 8
MIX = 0.5


@pytest.fixture(scope="module", params=[0, 6], ids=["transitions", "with_item_item"])
def prior_model(request, chain_sequences, tiny_sasrec):
    """`tiny_sasrec`'s weights with a transition prior fitted on the same sequences, and (the
    second) its EASE item-item term (BENCHMARKS 3p) at weight 2."""
    sequences, vocab = chain_sequences
    config = SASRecConfig(**{**tiny_sasrec.config.to_dict(), "transition_neighbors": NEIGHBORS,
                             "item_item_neighbors": request.param})
    model = SASRec(config)
    model(tf.zeros((1, MAX_LEN), tf.int64))
    model.encoder.set_weights(tiny_sasrec.encoder.get_weights())
    train = [s[:-1] for s in sequences]
    baseline = CooccurrenceRecommender(vocab).fit(train)
    model.transition_prior.set_table(*baseline.neighbor_table(NEIGHBORS))
    model.transition_prior.set_mix(MIX)
    if request.param:
        fill_item_item(model, train, l2=10.0, scale=2.0)
    return model


@pytest.fixture(scope="module")
def histories(chain_sequences):
    sequences, _ = chain_sequences
    return pad_left([s[:-1] for s in sequences[:48]], MAX_LEN)


def test_the_prior_changes_the_ranking(prior_model, histories):
    """Otherwise the tests below could not tell a graph with the prior from one without."""
    mixed = prior_model.topk_model(k=K)(tf.constant(histories))["item_ids"].numpy()
    plain = SASRec(SASRecConfig(**{**prior_model.config.to_dict(), "transition_neighbors": 0,
                                   "item_item_neighbors": 0}))
    plain(tf.zeros((1, MAX_LEN), tf.int64))
    plain.encoder.set_weights(prior_model.encoder.get_weights())
    alone = plain.topk_model(k=K)(tf.constant(histories))["item_ids"].numpy()
    assert np.mean(mixed != alone) > 0.2


@pytest.mark.parametrize("prior_model", [6], indirect=True, ids=["with_item_item"])
def test_the_item_item_term_changes_the_ranking(prior_model, histories):
    """Otherwise the `with_item_item` runs of the tests below could not tell it is exported."""
    prior = prior_model.transition_prior
    with_term = prior_model.topk_model(k=K)(tf.constant(histories))["item_ids"].numpy()
    scale = float(prior.item_item_scale.numpy())
    prior.set_item_item_scale(0.0)
    try:
        without = prior_model.topk_model(k=K)(tf.constant(histories))["item_ids"].numpy()
    finally:
        prior.set_item_item_scale(scale)
    assert np.mean(with_term != without) > 0.2


def test_saved_model_signatures_rank_by_the_mixture(prior_model, histories, tmp_path):
    path = export_saved_model(prior_model, tmp_path, "prior", k=K)
    loaded = tf.saved_model.load(str(path))
    want = prior_model.topk_model(k=K)(tf.constant(histories))
    got = loaded.signatures["serving_default"](history=tf.constant(histories))
    np.testing.assert_array_equal(got["item_ids"].numpy(), want["item_ids"].numpy())
    np.testing.assert_allclose(got["scores"].numpy(), want["scores"].numpy(), rtol=1e-5,
                               atol=1e-5)
    # `score` gives the mixture's log-probabilities of the candidates, as the scorer does
    candidates = np.tile(np.arange(2, 12, dtype=np.int64), (len(histories), 1))
    scored = loaded.signatures["score"](history=tf.constant(histories),
                                        candidate_ids=tf.constant(candidates))["scores"]
    full = make_score_fn(prior_model.scorer, MAX_LEN)(list(histories))
    np.testing.assert_allclose(scored.numpy(), np.take_along_axis(full, candidates, 1),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("quantization", ["none", "dynamic"])
def test_tflite_ranks_by_the_mixture(prior_model, histories, tmp_path, quantization):
    path = convert_to_tflite(prior_model, tmp_path / "prior.tflite", k=K,
                             quantization=quantization)
    assert_builtin_only(path)
    got = LiteRTRecommender(path).recommend(histories)["item_ids"]
    want = prior_model.topk_model(k=K)(tf.constant(histories))["item_ids"].numpy()
    if quantization == "none":
        np.testing.assert_array_equal(got, want)
    else:  # int8 weights: most of each list stays
        overlap = np.mean([len(set(a) & set(b)) / K for a, b in zip(got, want)])
        assert overlap >= 0.9


def test_int8_file_keeps_the_mixture(prior_model, histories, tmp_path):
    path = convert_to_tflite(prior_model, tmp_path / "int8.tflite", k=K, quantization="int8",
                             representative_histories=histories)
    got = LiteRTRecommender(path).recommend(histories)["item_ids"]
    want = prior_model.topk_model(k=K)(tf.constant(histories))["item_ids"].numpy()
    overlap = np.mean([len(set(a) & set(b)) / K for a, b in zip(got, want)])
    assert overlap >= 0.8


def test_scoring_model_without_prior_is_the_tied_scores(prior_model, histories):
    plain = build_scoring_model(prior_model.encoder)(tf.constant(histories)).numpy()
    mixed = prior_model.scorer(tf.constant(histories)).numpy()
    assert plain.shape == mixed.shape
    assert not np.allclose(np.argsort(-plain, 1)[:, :K], np.argsort(-mixed, 1)[:, :K])


def _prior_only_model(chain_sequences, max_len=MAX_LEN, mix=MIX):
    """An untrained SASRec whose item table is all zeros: every item scores the same, so its
    ranking is the prior's alone (any rounding of the prior shows in the top-k)."""
    sequences, vocab = chain_sequences
    model = SASRec(SASRecConfig(vocab_size=vocab, max_len=max_len, dim=8, num_blocks=1,
                                transition_neighbors=NEIGHBORS))
    model(tf.zeros((1, max_len), tf.int64))
    table = model.item_embedding.embeddings
    table.assign(tf.zeros_like(table))
    baseline = CooccurrenceRecommender(vocab).fit([s[:-1] for s in sequences])
    model.transition_prior.set_table(*baseline.neighbor_table(NEIGHBORS))
    model.transition_prior.set_mix(mix)
    return model


@pytest.mark.parametrize("quantization", ["dynamic", "int8"])
def test_quantized_files_keep_the_prior_exact(chain_sequences, histories, tmp_path,
                                              quantization):
    """The prior's table and arithmetic are not quantized: with the model's scores all equal,
    a quantized file ranks the first items exactly as Keras (a table quantized with one int8
    scale, or int8 gathers and sums, reorder them)."""
    model = _prior_only_model(chain_sequences)
    path = convert_to_tflite(model, tmp_path / f"{quantization}.tflite", k=3,
                             quantization=quantization, representative_histories=histories)
    got = LiteRTRecommender(path).recommend(histories)
    want = model.topk_model(k=3)(tf.constant(histories))
    # ties (equal q) may come in any order: compare the scores, then ids where scores differ
    np.testing.assert_allclose(got["scores"], want["scores"].numpy(), rtol=1e-4, atol=1e-4)
    distinct = np.diff(want["scores"].numpy(), axis=1) < -1e-4
    np.testing.assert_array_equal(got["item_ids"][:, 0][distinct[:, 0]],
                                  want["item_ids"].numpy()[:, 0][distinct[:, 0]])


def test_a_prior_with_weight_zero_is_left_out_of_the_exports(chain_sequences, histories,
                                                              tmp_path):
    model = _prior_only_model(chain_sequences, mix=0.0)
    assert "LOG_SOFTMAX" not in tflite_ops(convert_to_tflite(model, tmp_path / "m.tflite"))
    path = export_saved_model(model, tmp_path, "zero", k=K)
    loaded = tf.saved_model.load(str(path))
    candidates = np.tile(np.arange(2, 12, dtype=np.int64), (len(histories), 1))
    scores = loaded.signatures["score"](history=tf.constant(histories),
                                        candidate_ids=tf.constant(candidates))["scores"]
    np.testing.assert_array_equal(scores.numpy(), 0.0)  # the tied dot products of zeros
    assert "transition_prior" not in [layer.name for layer in model.topk_model().layers]


def test_saved_model_reads_the_ids_the_keras_model_reads(chain_sequences, tmp_path):
    """With `max_len` (3) below the prior's `num_recent` (5), a longer request's older ids
    must not reach the prior in `serving_default` when Keras never sees them."""
    model = _prior_only_model(chain_sequences, max_len=3)
    sequences, _ = chain_sequences
    request = np.array([sequences[0][:6]], np.int64)
    path = export_saved_model(model, tmp_path, "short", k=K)
    got = tf.saved_model.load(str(path)).signatures["serving_default"](
        history=tf.constant(request))
    want = model.scorer(tf.constant(request[:, -3:])).numpy()
    want[0, request[0]] = -np.inf  # the whole request is excluded
    want[0, :2] = -np.inf
    np.testing.assert_allclose(got["scores"].numpy()[0], np.sort(want[0])[::-1][:K],
                               rtol=1e-5, atol=1e-5)
