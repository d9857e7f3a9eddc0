"""`set_ranking_metrics`: Mult-VAE's Recall@k / NDCG@k for held-out sets, by hand."""

import math

import numpy as np
import pytest

from tfrec_attn.evaluation import set_ranking_metrics, topk_from_scores

LOG = math.log2


def test_hand_computed_recall_and_ndcg():
    recommended = np.array([[2, 3, 4, 5],    # held out {3, 5}: hits at ranks 1 and 3
                            [6, 7, 8, 9],    # held out {6, 7, 8, 9, 10, 11}: all 4 hit
                            [2, 3, 0, 0],    # held out {9}: no hit (padding never hits)
                            [4, 5, 6, 7]])   # nothing held out: skipped
    held_out = [np.array([3, 5]), np.arange(6, 12), np.array([9]), np.array([], np.int64)]
    out = set_ranking_metrics(recommended, held_out, ks=(2, 4))
    assert out["users"] == 3.0
    # k=2: user 0 finds 1 of min(2, 2); user 1 finds 2 of min(2, 6); user 2 none.
    assert out["recall@2"] == pytest.approx((1 / 2 + 2 / 2 + 0) / 3)
    ndcg0 = (1 / LOG(3)) / (1 + 1 / LOG(3))
    assert out["ndcg@2"] == pytest.approx((ndcg0 + 1.0 + 0.0) / 3)
    # k=4: user 0 finds 2 of 2 at ranks 1, 3; user 1 finds 4 of min(4, 6) = 4 (perfect).
    assert out["recall@4"] == pytest.approx((1.0 + 1.0 + 0.0) / 3)
    ndcg0 = (1 / LOG(3) + 1 / LOG(5)) / (1 + 1 / LOG(3))
    assert out["ndcg@4"] == pytest.approx((ndcg0 + 1.0 + 0.0) / 3)


def test_matches_a_loop_reference_on_random_lists():
    rng = np.random.default_rng(0)
    vocab, n, k = 40, 25, 7
    scores = rng.normal(size=(n, vocab))
    held_out = [rng.choice(np.arange(2, vocab), size=rng.integers(1, 12), replace=False)
                for _ in range(n)]
    top = topk_from_scores(scores, k)
    recalls, ndcgs = [], []
    for row, items in zip(top, held_out):
        gains = [1 / LOG(r + 2) for r, item in enumerate(row) if item in set(items)]
        ideal = sum(1 / LOG(r + 2) for r in range(min(k, len(items))))
        recalls.append(len(gains) / min(k, len(items)))
        ndcgs.append(sum(gains) / ideal)
    out = set_ranking_metrics(top, held_out, ks=(k,))
    assert out[f"recall@{k}"] == pytest.approx(np.mean(recalls))
    assert out[f"ndcg@{k}"] == pytest.approx(np.mean(ndcgs))
    assert 0 < out[f"ndcg@{k}"] < 1


@pytest.mark.parametrize("recommended, held_out, ks, message", [
    (np.array([[2, 3]]), [np.array([2])], (3,), "max\\(ks\\)=3"),
    (np.array([[2, 3]]), [np.array([2]), np.array([3])], (1,), "one row per held_out"),
    (np.array([[2, 2, 0]]), [np.array([2])], (2,), "more than once"),
    (np.array([2, 3]), [np.array([2])], (1,), "2-D integer"),
    (np.array([[2.0, 3.0]]), [np.array([2])], (1,), "2-D integer"),
    (np.array([[2, 3]]), [np.array([], np.int64)], (1,), "no user"),
    (np.array([[2, 3]]), [np.array([2])], (0,), "k must be a positive"),
    (np.array([[2, 3]]), np.array([[2, 3]]), (1,), "held_out must be a sequence"),
])
def test_bad_arguments_are_named(recommended, held_out, ks, message):
    with pytest.raises(ValueError, match=message):
        set_ranking_metrics(recommended, held_out, ks)


def test_padding_may_repeat():
    out = set_ranking_metrics(np.array([[3, 0, 0]]), [np.array([3, 4])], ks=(3,))
    assert out["recall@3"] == 0.5 and out["ndcg@3"] == pytest.approx(1 / (1 + 1 / LOG(3)))
