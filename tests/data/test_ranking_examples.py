"""CTR examples for ranking models: positives, sampled negatives, determinism, validation."""

import numpy as np
import pytest

from tfrec_attn.data import build_sequences, generate_synthetic
from tfrec_attn.data.ranking_examples import make_ranking_dataset, ranking_examples

SEQUENCES = [np.array([2, 5, 3, 7]), np.array([4, 6]), np.array([9])]


def test_rows_hold_the_history_the_true_next_item_and_unseen_negatives():
    ex = ranking_examples(SEQUENCES, max_len=2, vocab_size=12, num_negatives=3, seed=0)
    # 3 targets of the first user + 1 of the second; the third (1 item) gives none.
    assert len(ex["label"]) == 4 * 4
    assert ex["history"].dtype == np.int64 and ex["candidate"].dtype == np.int64
    assert ex["label"].dtype == np.float32
    np.testing.assert_array_equal(ex["label"].reshape(4, 4), [[1, 0, 0, 0]] * 4)
    positives = ex["candidate"][::4]
    np.testing.assert_array_equal(positives, [5, 3, 7, 6])
    np.testing.assert_array_equal(ex["history"][::4], [[0, 2], [2, 5], [5, 3], [0, 4]])
    # The negatives of a row share its history and never come from the user's sequence.
    groups = ex["history"].reshape(4, 4, 2)
    assert (groups == groups[:, :1]).all()
    negatives = ex["candidate"].reshape(4, 4)[:, 1:]
    assert not np.isin(negatives[:3], SEQUENCES[0]).any()
    assert not np.isin(negatives[3], SEQUENCES[1]).any()
    assert negatives.min() >= 2 and negatives.max() < 12


def test_seeded_and_deterministic():
    a = ranking_examples(SEQUENCES, 3, 50, num_negatives=2, seed=7)
    b = ranking_examples(SEQUENCES, 3, 50, num_negatives=2, seed=7)
    c = ranking_examples(SEQUENCES, 3, 50, num_negatives=2, seed=8)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["candidate"], c["candidate"])
    np.testing.assert_array_equal(a["candidate"][::3], c["candidate"][::3])  # same positives


def test_last_only_gives_one_positive_per_sequence():
    ex = ranking_examples(SEQUENCES, 5, 12, num_negatives=1, last_only=True)
    np.testing.assert_array_equal(ex["candidate"][::2], [7, 6])
    np.testing.assert_array_equal(ex["history"][::2], [[0, 0, 2, 5, 3], [0, 0, 0, 0, 4]])


def test_negatives_cover_a_nearly_exhausted_catalogue():
    """Rejection sampling still finishes when one item is left outside the sequence."""
    ex = ranking_examples([np.arange(2, 11)], 4, vocab_size=12, num_negatives=5)
    np.testing.assert_array_equal(ex["candidate"].reshape(-1, 6)[:, 1:], 11)


def test_dataset_batches_synthetic_sequences():
    data = build_sequences(generate_synthetic(num_users=20, num_items=30, mean_length=5))
    ds = make_ranking_dataset(data.sequences, 8, data.vocab_size, batch_size=16, seed=3)
    batches = list(ds)
    total = sum(len(b["label"]) for b in batches)
    assert total == 2 * sum(len(s) - 1 for s in data.sequences)
    first = batches[0]
    assert first["history"].shape == (16, 8) and first["candidate"].shape == (16,)
    assert 0 < float(np.mean(first["label"])) < 1  # shuffled: positives and negatives mixed
    again = next(iter(make_ranking_dataset(data.sequences, 8, data.vocab_size, 16, seed=3)))
    np.testing.assert_array_equal(again["candidate"], first["candidate"])


@pytest.mark.parametrize("kwargs, match", [
    ({"max_len": 0}, "max_len must be an int >= 1"),
    ({"num_negatives": 0}, "num_negatives must be an int >= 1"),
    ({"num_negatives": 10}, "num_negatives must be at most the 9 catalogue items"),
    ({"vocab_size": 2}, "vocab_size must be an int >= 3"),
    ({"seed": 1.5}, "seed must be an int"),
    ({"sequences": np.array([[2, 3]])}, "sequences must be a list"),
    ({"sequences": []}, "sequences must not be empty"),
    ({"sequences": [np.array([[2, 3]])]}, r"sequences\[0\] must be a 1-D integer array"),
    ({"sequences": [np.array([2.0, 3.0])]}, r"sequences\[0\] must be a 1-D integer array"),
    ({"sequences": [np.array([2, 3]), np.array([1, 4])]}, r"sequences\[1\] has ids outside"),
    ({"sequences": [np.array([2, 12])]}, r"sequences\[0\] has ids outside"),
    ({"sequences": [np.arange(2, 12)]}, "covers the whole catalogue"),
])
def test_bad_arguments_raise(kwargs, match):
    arguments = {"sequences": SEQUENCES, "max_len": 4, "vocab_size": 12, **kwargs}
    with pytest.raises(ValueError, match=match):
        ranking_examples(**arguments)


def test_dataset_rejects_bad_batch_size_and_sequences_without_targets():
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        make_ranking_dataset(SEQUENCES, 4, 12, batch_size=0)
    with pytest.raises(ValueError, match="no examples"):
        make_ranking_dataset([np.array([3])], 4, 12, batch_size=2)
