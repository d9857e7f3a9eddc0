"""Protocol behaviour: exclusion, sampling determinism, padding/OOV handling, validation."""

import pathlib

import numpy as np
import pytest

import tfrec_attn.evaluation as ev

VOCAB = 30


def _fixed_scorer(table):
    """A score_fn that returns the same row of scores for every user."""
    table = np.asarray(table, dtype=np.float64)
    return lambda batch: np.tile(table, (len(batch), 1))


def _oracle(targets_by_first_item):
    """A score_fn that puts the target (looked up by history[0]) strictly on top."""

    def score(batch):
        scores = np.random.default_rng(len(batch)).random((len(batch), VOCAB))
        for row, history in enumerate(batch):
            scores[row, targets_by_first_item[int(history[0])]] = 2.0
        return scores

    return score


@pytest.fixture
def users():
    rng = np.random.default_rng(123)
    histories = [
        rng.choice(np.arange(2, VOCAB), size=rng.integers(1, 8), replace=False) for _ in range(37)
    ]
    targets = np.array([np.setdiff1d(np.arange(2, VOCAB), h)[0] for h in histories])
    return histories, targets


def test_history_item_that_would_outrank_target_is_excluded():
    scores = np.zeros(VOCAB)
    scores[5], scores[7] = 2.0, 1.0  # item 5 beats target 7 but is in the history
    args = (_fixed_scorer(scores), [np.array([5, 3])], np.array([7]), VOCAB)
    assert ev.evaluate(*args, ks=(1,))["hr@1"] == 1.0
    assert ev.evaluate(*args, ks=(1,), exclude_history=False)["hr@1"] == 0.0


def test_repeat_target_is_a_miss_when_history_is_excluded():
    scores = np.zeros(VOCAB)
    scores[7] = 1.0
    args = (_fixed_scorer(scores), [np.array([7, 4, 7])], np.array([7]), VOCAB)
    out = ev.evaluate(*args, ks=(1, 20))
    assert out["hr@1"] == 0.0 and out["hr@20"] == 0.0 and out["repeat_targets"] == 1.0
    assert ev.evaluate(*args, ks=(1,), exclude_history=False)["hr@1"] == 1.0


def test_boosting_history_items_gains_nothing_under_full_protocol():
    # The leak the rule closes: a scorer that puts every history item first must not find a
    # repeat target "alone among them" at rank 1.
    def history_first(batch):
        scores = np.zeros((len(batch), VOCAB))
        for row, history in enumerate(batch):
            scores[row, history] = 10.0
        return scores

    histories = [np.array([3, 5, 9]), np.array([4, 6])]
    targets = np.array([5, 8])  # row 0 repeats 5; row 1 is a new item
    out = ev.evaluate(history_first, histories, targets, VOCAB, ks=(1,))
    assert out["hr@1"] == 0.0 and out["repeat_targets"] == 0.5


@pytest.mark.parametrize("protocol", ["full", "sampled", "sampled-5"])
def test_pad_and_oov_never_counted(protocol):
    scores = np.zeros(VOCAB)
    scores[:2] = 100.0  # padding and OOV would beat everything
    scores[9] = 1.0
    out = ev.evaluate(
        _fixed_scorer(scores),
        [np.array([0, 1, 3])],
        np.array([9]),
        VOCAB,
        protocol,
        ks=(1,),
        num_negatives=26,  # every real item except the history item and the target
    )
    assert out["hr@1"] == 1.0


@pytest.mark.parametrize("protocol", ["full", "sampled", "sampled-10"])
def test_constant_scorer_scores_zero(protocol, users):
    histories, targets = users
    out = ev.evaluate(
        _fixed_scorer(np.ones(VOCAB)),
        histories,
        targets,
        VOCAB,
        protocol,
        ks=(1, 5),
        num_negatives=8,
    )
    assert out["hr@5"] == 0.0 and out["mrr"] < 0.2


@pytest.mark.parametrize("protocol", ["full", "sampled-20"])
def test_oracle_gets_perfect_hit_rate(protocol):
    histories = [np.array([h]) for h in range(2, 12)]
    targets = np.array([h + 10 for h in range(2, 12)])
    oracle = _oracle({h: h + 10 for h in range(2, 12)})
    out = ev.evaluate(oracle, histories, targets, VOCAB, protocol, ks=(1,))
    assert out["hr@1"] == 1.0 and out["mrr"] == 1.0


def test_sampled_is_deterministic_and_independent_of_batch_size(users):
    histories, targets = users
    noisy = lambda batch: np.stack(  # noqa: E731 - a deterministic per-user scorer
        [np.random.default_rng(int(h.sum())).random(VOCAB) for h in batch]
    )
    runs = [
        ev.evaluate(
            noisy, histories, targets, VOCAB, "sampled", num_negatives=10, seed=7, batch_size=bs
        )
        for bs in (1, 5, 512)
    ]
    assert runs[0] == runs[1] == runs[2]
    other_seed = ev.evaluate(noisy, histories, targets, VOCAB, "sampled", num_negatives=10, seed=8)
    assert other_seed != runs[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sampled_negatives_avoid_history_and_target(seed):
    rng = np.random.default_rng(seed)
    history = np.array([0, 2, 3, 4, 5, 6, 1])
    for count in (5, 20, 22):  # sparse (rejection) and dense (explicit set) paths
        negatives = ev.sample_negatives(rng, history, 9, VOCAB, count)
        assert negatives.size == count == np.unique(negatives).size
        assert not np.isin(negatives, [0, 1, 2, 3, 4, 5, 6, 9]).any()
        assert negatives.min() >= 2 and negatives.max() < VOCAB


def test_sampled_negatives_too_many_raises():
    with pytest.raises(ValueError, match="num_negatives=30"):
        ev.sample_negatives(np.random.default_rng(0), np.array([2]), 3, VOCAB, 30)


def test_protocol_uses_negatives_only_outside_history():
    """A scorer that loves history items would lose if a history item were a negative."""
    history = np.arange(2, 20)
    scores = np.zeros(VOCAB)
    scores[history] = 5.0
    scores[25] = 1.0
    out = ev.evaluate(_fixed_scorer(scores), [history], np.array([25]), VOCAB, "sampled-8", ks=(1,))
    assert out["hr@1"] == 1.0


def test_full_protocol_reports_coverage_and_sampled_does_not(users):
    histories, targets = users
    scorer = _fixed_scorer(np.arange(VOCAB, dtype=float))
    full = ev.evaluate(scorer, histories, targets, VOCAB, ks=(1, 5))
    sampled = ev.evaluate(scorer, histories, targets, VOCAB, "sampled-5", ks=(1, 5))
    assert 0.0 < full["coverage@1"] <= full["coverage@5"] <= 1.0
    assert not any(key.startswith("coverage") for key in sampled)
    assert all(type(v) is float for v in full.values())
    assert full["users"] == float(len(targets))


@pytest.mark.parametrize(
    "scores, k, exclude, expected",
    [
        ([[9, 9, 1, 5, 5, 3]], 3, None, [[3, 4, 5]]),  # ties go to lower id; pad/OOV skipped
        ([[0, 0, 1, 7, 2]], 2, [np.array([3])], [[4, 2]]),
        ([[0, 0, 1, 7, 2]], 3, [np.array([2, 3])], [[4, 0, 0]]),  # PAD_ID fills the tail
        ([[0, 0, -np.inf, 1, -np.inf]], 3, None, [[3, 2, 4]]),
    ],
)
def test_topk_from_scores(scores, k, exclude, expected):
    assert ev.topk_from_scores(np.array(scores, dtype=float), k, exclude).tolist() == expected


@pytest.mark.parametrize("ties", ["none", "many", "mixed"])
def test_topk_matches_stable_argsort(ties):
    rng = np.random.default_rng(0)
    scores = rng.random((20, 40))
    if ties != "none":
        rows = slice(None) if ties == "many" else slice(0, 20, 3)
        scores[rows] = rng.integers(0, 5, size=scores[rows].shape)
    expected = np.argsort(-scores[:, 2:], axis=1, kind="stable")[:, :7] + 2
    np.testing.assert_array_equal(ev.topk_from_scores(scores, 7), expected)


@pytest.mark.parametrize(
    "scores, k, match",
    [
        (np.zeros((2, 5)), 4, r"k must be in \[1, 3\]"),
        (np.zeros((2, 5)), 0, r"k must be in"),
        (np.zeros(5), 1, "2-D"),
        (np.array([[0.0, 0.0, np.nan, 1.0]]), 1, "NaN"),
    ],
)
def test_topk_validation(scores, k, match):
    with pytest.raises(ValueError, match=match):
        ev.topk_from_scores(scores, k)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"targets": np.array([3, 4])}, "same length"),
        ({"protocol": "leave-one-out"}, "protocol must be"),
        ({"protocol": "sampled-0"}, "protocol 'sampled-0' must sample at least 1 negative"),
        ({"targets": np.array([1])}, r"targets must be real item ids in \[2, 30\)"),
        ({"targets": np.array([30])}, r"\[2, 30\)"),
        ({"score_fn": lambda b: np.zeros((len(b), 29))}, r"\(1, 30\).*Received: \(1, 29\)"),
        ({"score_fn": lambda b: np.full((len(b), 30), np.nan)}, "NaN"),
        ({"histories": [np.array([31])]}, "histories must hold ids"),
        ({"batch_size": 0}, "batch_size"),
        ({"vocab_size": 2}, "vocab_size"),
        ({"ks": (0,)}, "k must be a positive"),
        ({"ks": (40,)}, "max\\(ks\\)=40"),
        ({"targets": np.array([], dtype=np.int64), "histories": []}, "empty"),
    ],
)
def test_evaluate_validation(kwargs, match):
    call = {
        "score_fn": _fixed_scorer(np.zeros(VOCAB)),
        "histories": [np.array([2])],
        "targets": np.array([3]),
        "vocab_size": VOCAB,
    } | kwargs
    with pytest.raises(ValueError, match=match):
        ev.evaluate(**call)


def test_evaluation_package_does_not_import_tensorflow():
    package = pathlib.Path(ev.__file__).parent
    for path in package.glob("*.py"):
        source = path.read_text()
        assert "tensorflow" not in source.replace("no TensorFlow", "") and "_keras" not in source


@pytest.mark.parametrize("protocol", ["full", "sampled-5"])
def test_returned_ranks_reproduce_the_summary(protocol, users):
    histories, targets = users
    scorer = _fixed_scorer(np.random.default_rng(4).random(VOCAB))
    summary, ranks = ev.evaluate(scorer, histories, targets, VOCAB, protocol, ks=(1, 5),
                                 seed=3, batch_size=8, return_ranks=True)
    assert summary == ev.evaluate(scorer, histories, targets, VOCAB, protocol, ks=(1, 5), seed=3)
    assert ranks.shape == (len(targets),) and ranks.dtype == np.int64
    assert ev.ndcg_gains(ranks, 5).mean() == summary["ndcg@5"]
    assert ev.hits(ranks, 1).mean() == summary["hr@1"]


def test_sampled_ranks_of_two_scorers_use_the_same_negatives(users):
    """The negatives replayed from the documented sampler give both scorers' ranks exactly, so
    per-user metrics of two scorers evaluated with one seed are paired."""
    histories, targets = users
    up = _fixed_scorer(np.arange(VOCAB, dtype=np.float64))
    odd_first = _fixed_scorer(np.arange(VOCAB) % 2 * 100.0 - np.arange(VOCAB))
    rng = np.random.default_rng(11)
    negatives = [ev.sample_negatives(rng, h, t, VOCAB, 6) for h, t in zip(histories, targets)]
    for scorer in (up, odd_first):
        _, ranks = ev.evaluate(scorer, histories, targets, VOCAB, "sampled-6", seed=11,
                               batch_size=5, return_ranks=True)
        row = scorer([None])[0]
        expected = [int((row[n] >= row[t]).sum()) for n, t in zip(negatives, targets)]
        assert ranks.tolist() == expected


# Two users over 5 real items (ids 2..6): user 0 repeats its history item 2 (a miss), user 1
# has history [4] and target 5, beaten by one candidate. Per table, by hand: the top-2 lists,
# and the MRR when history items stay candidates (user 0's target 2 then ranks again).
_REPEAT_TABLES = {
    "by-id": (np.arange(7.0), [[6, 5], [6, 5]], (1 / 5 + 1 / 2) / 2),  # 6 beats 5; 2 is last
    "repeat-target-on-top": (np.array([0, 0, 10, 0, 0, 5, 0.0]), [[5, 3], [2, 5]], (1 + 1 / 2) / 2),
}


@pytest.mark.parametrize("table", sorted(_REPEAT_TABLES))
def test_removed_repeat_target_is_a_miss_in_every_metric(table):
    scores, top2, mrr_kept = _REPEAT_TABLES[table]
    histories, targets = [np.array([2]), np.array([4])], np.array([2, 5])
    out, ranks = ev.evaluate(_fixed_scorer(scores), histories, targets, 7, ks=(1, 2),
                             return_ranks=True)
    assert ranks.tolist() == [ev.metrics.MISS_RANK, 1]
    assert out["mrr"] == 0.25  # (0 + 1/2) / 2; the repeat earned 1/8 before
    assert out["hr@1"] == out["ndcg@1"] == out["f1@1"] == out["precision@1"] == 0.0
    assert out["hr@2"] == out["recall@2"] == 0.5 and out["precision@2"] == 0.25
    assert out["ndcg@2"] == pytest.approx(0.5 / np.log2(3))
    assert out["f1@2"] == pytest.approx(1 / 3)
    assert out["coverage@1"] == len({top2[0][0], top2[1][0]}) / 5
    assert out["coverage@2"] == len(set(top2[0]) | set(top2[1])) / 5
    kept = ev.evaluate(_fixed_scorer(scores), histories, targets, 7, ks=(1,), exclude_history=False)
    assert kept["mrr"] == pytest.approx(mrr_kept)
