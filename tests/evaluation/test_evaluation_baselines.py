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


# 4 and 7 are never followed by another item; the smallest transition probability is 2 -> 4's
# 1/3, so each item seen once gets the tie-breaker 1e-3 * (1/3) * recency_decay ** (5 - 1).
COLD_TRAIN = [np.array([2, 3, 4]), np.array([5, 6, 7])]
COLD_TIEBREAK = 1e-3 / 3 * 0.5**4


@pytest.mark.parametrize(
    "history",
    [np.array([4]), np.array([7, 4]), np.array([], np.int64), np.array([]), np.array([0, 1])],
    ids=["no-successor", "two-without-successor", "empty", "empty-float", "pad-and-oov"],
)
def test_cooccurrence_history_without_successor_scores_the_tiebreak_alone(history):
    model = ev.CooccurrenceRecommender(8).fit(COLD_TRAIN)
    for batch in ([history], [history, history]):  # alone, and a batch of such histories
        scores = model.score(batch)
        assert scores.dtype == np.float64 and scores.shape == (len(batch), 8)
        np.testing.assert_allclose(scores[:, 2:], COLD_TIEBREAK)
        assert np.isneginf(scores[:, :2]).all()


def test_evaluate_baselines_with_a_cold_user_in_the_last_batch():
    # batch_size 2: the second batch holds only the user whose item 4 has no successor. Its
    # candidates 2, 3, 5, 6, 7 all tie, so target 5 ranks 4th (ties count against it): RR 1/5.
    out = ev.evaluate_baselines(COLD_TRAIN, [np.array([2]), np.array([5]), np.array([4])],
                                np.array([3, 6, 5]), 8, ks=(1,), batch_size=2)
    assert out["cooccurrence"]["hr@1"] == pytest.approx(2 / 3)  # 2 -> 3 and 5 -> 6 rank first
    assert out["cooccurrence"]["mrr"] == pytest.approx((1 + 1 + 1 / 5) / 3)
    assert out["popularity"]["hr@1"] == 0.0  # every item seen once: all five candidates tie
    assert out["popularity"]["mrr"] == pytest.approx(1 / 5)


@pytest.mark.parametrize("kwargs", [{}, {"normalize": False}, {"directed": False}])
def test_cooccurrence_without_any_transition_falls_back_to_popularity(kwargs):
    # no sequence holds two real items; counts 2: 1, 3: 2. With no transition the tie-breaker's
    # scale is 1e-3 * 0.5 ** 4 and it is divided by the top count, 2.
    train = [np.array([2]), np.array([3, 0]), np.array([1, 3])]
    model = ev.CooccurrenceRecommender(VOCAB, **kwargs).fit(train)
    assert model.data.dtype == np.float64 and model.data.size == 0
    scores = model.score([np.array([2]), np.array([3, 9])])
    expected = np.zeros(VOCAB - 2)
    expected[:2] = 1e-3 * 0.5**4 * np.array([1, 2]) / 2
    np.testing.assert_allclose(scores[:, 2:], [expected, expected])
    assert ev.topk_from_scores(scores, 2).tolist() == [[3, 2], [3, 2]]


@pytest.mark.parametrize("cls", [ev.PopularityRecommender, ev.CooccurrenceRecommender])
@pytest.mark.parametrize(
    "train", [[np.array([2, 3])], [np.array([], np.int64), np.array([0, 1])]],
    ids=["items", "no-real-item"])
def test_baselines_score_an_empty_batch(cls, train):
    scores = cls(VOCAB).fit(train).score([])
    assert scores.shape == (0, VOCAB) and scores.dtype == np.float64
