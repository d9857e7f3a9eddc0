"""Item sets: recency-ordered distinct items, seeded fold-in / held-out splits and the
`(padded set, multi-hot)` dataset."""

import numpy as np
import pytest

from tfrec_attn.data.item_sets import (
    item_set,
    make_item_set_dataset,
    multi_hot,
    split_item_sets,
)

SEQUENCES = [np.arange(2, 12), np.array([5, 3, 5, 7, 3]), np.array([9]), np.array([4, 4])]


def test_item_set_keeps_last_occurrence_order():
    assert item_set(np.array([5, 3, 5, 7, 3])).tolist() == [5, 7, 3]
    assert item_set(np.array([], np.int64)).tolist() == []


def test_split_holds_out_a_fraction_disjointly_and_is_seeded():
    split = split_item_sets(SEQUENCES, holdout_fraction=0.3, seed=4)
    for seq, fold_in, held_out in zip(SEQUENCES, split.fold_in, split.held_out):
        assert not set(fold_in) & set(held_out)
        assert sorted([*fold_in, *held_out]) == sorted(set(seq))
        assert len(fold_in) >= 1
    assert [len(h) for h in split.held_out] == [3, 1, 0, 0]  # round(0.3 * 10), >= 1, none
    assert split.fold_in[0].tolist() == sorted(split.fold_in[0])  # recency order kept
    again = split_item_sets(SEQUENCES, holdout_fraction=0.3, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(split.held_out, again.held_out))
    other = split_item_sets(SEQUENCES, holdout_fraction=0.3, seed=5)
    assert not all(np.array_equal(a, b) for a, b in zip(split.held_out, other.held_out))


def test_dataset_truncates_inputs_and_targets_the_whole_set():
    ds = make_item_set_dataset([SEQUENCES[0], np.array([3])], vocab_size=14, max_len=4,
                               batch_size=8, shuffle=False)
    (items, targets), = list(ds)
    assert items.dtype.name == "int64" and targets.dtype.name == "float32"
    assert items.numpy().tolist() == [[8, 9, 10, 11], [0, 0, 0, 3]]  # most recent 4
    np.testing.assert_array_equal(targets.numpy(), multi_hot([SEQUENCES[0], [3]], 14))
    assert targets.numpy()[0, 2:12].sum() == 10  # targets keep all 10 items


def test_dataset_with_separate_targets_and_shuffle_keeps_rows_aligned():
    sets = [np.array([i]) for i in range(2, 30)]
    ds = make_item_set_dataset(sets, vocab_size=40, max_len=2, batch_size=5,
                               targets=[s + 10 for s in sets], seed=1)
    for items, targets in ds:
        np.testing.assert_array_equal(np.argmax(targets.numpy(), 1), items.numpy()[:, -1] + 10)


@pytest.mark.parametrize("call, message", [
    (lambda: split_item_sets(SEQUENCES, holdout_fraction=1.0), "holdout_fraction"),
    (lambda: split_item_sets([np.array([0, 3])]), "FIRST_ITEM_ID"),
    (lambda: split_item_sets([np.array([2.0])]), "integer"),
    (lambda: make_item_set_dataset(SEQUENCES, 14, 0, 2), "max_len"),
    (lambda: make_item_set_dataset(SEQUENCES, 14, 4, 0), "batch_size"),
    (lambda: make_item_set_dataset(SEQUENCES, 11, 4, 2), "vocab_size"),
    (lambda: make_item_set_dataset(SEQUENCES, 14, 4, 2, targets=SEQUENCES[:2]), "targets"),
    (lambda: make_item_set_dataset([], 14, 4, 2), "empty"),
])
def test_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()
