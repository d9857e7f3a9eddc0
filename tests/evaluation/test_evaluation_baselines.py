"""Popularity and co-occurrence baselines."""

import numpy as np
import pytest

import tfrec_attn.evaluation as ev

VOCAB = 12


def test_popularity_ranks_most_popular_first():
    train = [np.array([5, 5, 5, 7]), np.array([7, 5, 3]), np.array([0, 1, 1, 1, 1])]
    model = ev.PopularityRecommender(VOCAB).fit(train)
    scores = model.score([np.array([2]), np.array([9, 10])])
    assert scores.shape == (2, VOCAB)
    np.testing.assert_array_equal(ev.topk_from_scores(scores, 3), [[5, 7, 3]] * 2)
    assert np.isneginf(scores[:, :2]).all()  # padding and OOV are never recommended


def _chain_data(rng, num_users=40):
    """Random sequences in which item 4 is always followed by item 9."""
    sequences = []
    for _ in range(num_users):
        seq = list(rng.integers(2, VOCAB, size=6))
        seq = [x for x in seq if x not in (4, 9)]
        pos = int(rng.integers(0, len(seq) + 1))
        sequences.append(np.array(seq[:pos] + [4, 9] + seq[pos:]))
    return sequences


@pytest.mark.parametrize("window, directed", [(1, True), (3, True), (2, False)])
def test_cooccurrence_recovers_planted_chain(window, directed):
    train = _chain_data(np.random.default_rng(0))
    model = ev.CooccurrenceRecommender(VOCAB, window=window, directed=directed).fit(train)
    scores = model.score([np.array([3, 4]), np.array([2, 7, 6, 4])])
    assert ev.topk_from_scores(scores, 1).ravel().tolist() == [9, 9]
    out = ev.evaluate(model.score, [np.array([2, 4])] * 3, np.array([9] * 3), VOCAB, ks=(1,))
    assert out["hr@1"] == 1.0


def test_cooccurrence_weights_recent_items_most():
    train = [np.array([2, 3]), np.array([4, 5])]
    model = ev.CooccurrenceRecommender(VOCAB, window=1, recency_decay=0.5).fit(train)
    scores = model.score([np.array([2, 4]), np.array([4, 2])])
    assert ev.topk_from_scores(scores, 1).ravel().tolist() == [5, 3]


def test_cooccurrence_ties_broken_by_popularity_and_empty_history_falls_back():
    train = [np.array([2, 3]), np.array([2, 4]), np.array([4, 6, 6, 6])]
    model = ev.CooccurrenceRecommender(VOCAB, window=1).fit(train)
    scores = model.score([np.array([2]), np.array([], dtype=np.int64), np.array([0, 1])])
    assert ev.topk_from_scores(scores, 2)[0].tolist() == [4, 3]  # 3 and 4 tie; 4 is popular
    assert ev.topk_from_scores(scores, 1)[1:].ravel().tolist() == [6, 6]
    assert scores[0, 3] - scores[0, 4] < 1e-3  # the tie-breaker is tiny


def test_cooccurrence_rows_are_transition_probabilities():
    model = ev.CooccurrenceRecommender(VOCAB, window=2).fit([np.array([2, 3, 4, 2, 5])])
    row_sums = np.bincount(
        np.repeat(np.arange(VOCAB), np.diff(model.indptr)), weights=model.data, minlength=VOCAB
    )
    np.testing.assert_allclose(row_sums[[2, 3, 4]], 1.0)


def test_evaluate_baselines_returns_metrics_per_model():
    train = _chain_data(np.random.default_rng(1))
    histories = [np.array([3, 4]), np.array([4])]
    out = ev.evaluate_baselines(
        train,
        histories,
        np.array([9, 9]),
        VOCAB,
        "sampled-5",
        cooccurrence_kwargs={"window": 1},
        ks=(1, 5),
        seed=3,
    )
    assert set(out) == {"popularity", "cooccurrence"}
    assert out["cooccurrence"]["hr@1"] == 1.0
    assert all(type(v) is float for metrics in out.values() for v in metrics.values())


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: ev.PopularityRecommender(2), "vocab_size"),
        (lambda: ev.CooccurrenceRecommender(VOCAB, window=0), "window must be a positive int"),
        (lambda: ev.CooccurrenceRecommender(VOCAB, window=True), "window must be a positive int"),
        (
            lambda: ev.CooccurrenceRecommender(VOCAB, num_recent=0),
            "num_recent must be a positive int. Received: num_recent=0",
        ),
        (lambda: ev.CooccurrenceRecommender(VOCAB, recency_decay=0.0), "recency_decay"),
        (lambda: ev.PopularityRecommender(VOCAB).fit([np.array([12])]), "train_sequences"),
        (lambda: ev.CooccurrenceRecommender(VOCAB).fit([]), "empty"),
    ],
)
def test_baseline_validation(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("cls", [ev.PopularityRecommender, ev.CooccurrenceRecommender])
def test_score_before_fit_raises(cls):
    with pytest.raises(RuntimeError, match="before fit"):
        cls(VOCAB).score([np.array([2])])
