"""A SASRec with a transition prior: the SavedModel signatures, the TFLite files and the
optimization wrappers rank by the same mixture as the Keras model."""

import numpy as np
import pytest

from tfrec_attn._keras import tf
from tfrec_attn.data import pad_left
from tfrec_attn.evaluation import CooccurrenceRecommender
from tfrec_attn.export import LiteRTRecommender, assert_builtin_only, convert_to_tflite
from tfrec_attn.export.saved_model import export_saved_model
from tfrec_attn.models import SASRec, SASRecConfig, build_scoring_model
from tfrec_attn.training.scoring import make_score_fn

MAX_LEN = 12  # the `tiny_sasrec` fixture's max_len
K = 10
NEIGHBORS = 8
MIX = 0.5


@pytest.fixture(scope="module")
def prior_model(chain_sequences, tiny_sasrec):
    """`tiny_sasrec`'s weights with a transition prior fitted on the same sequences."""
    sequences, vocab = chain_sequences
    config = SASRecConfig(**{**tiny_sasrec.config.to_dict(), "transition_neighbors": NEIGHBORS})
    model = SASRec(config)
    model(tf.zeros((1, MAX_LEN), tf.int64))
    model.encoder.set_weights(tiny_sasrec.encoder.get_weights())
    baseline = CooccurrenceRecommender(vocab).fit([s[:-1] for s in sequences])
    model.transition_prior.set_table(*baseline.neighbor_table(NEIGHBORS))
    model.transition_prior.set_mix(MIX)
    return model


@pytest.fixture(scope="module")
def histories(chain_sequences):
    sequences, _ = chain_sequences
    return pad_left([s[:-1] for s in sequences[:48]], MAX_LEN)


def test_the_prior_changes_the_ranking(prior_model, histories):
    """Otherwise the tests below could not tell a graph with the prior from one without."""
    mixed = prior_model.topk_model(k=K)(tf.constant(histories))["item_ids"].numpy()
    plain = SASRec(SASRecConfig(**{**prior_model.config.to_dict(), "transition_neighbors": 0}))
    plain(tf.zeros((1, MAX_LEN), tf.int64))
    plain.encoder.set_weights(prior_model.encoder.get_weights())
    alone = plain.topk_model(k=K)(tf.constant(histories))["item_ids"].numpy()
    assert np.mean(mixed != alone) > 0.2


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
