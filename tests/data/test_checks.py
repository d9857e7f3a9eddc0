"""`check_id_sequences`: the one check of per-user id lists behind item sets and CTR examples."""

import numpy as np
import pytest

from tfrec_attn.data.checks import check_id_sequences
from tfrec_attn.data.item_sets import make_item_set_dataset, multi_hot, split_item_sets
from tfrec_attn.data.ranking_examples import ranking_examples


@pytest.mark.parametrize("sequences, vocab_size", [
    ([np.array([2, 3]), [4], np.array([], np.int64)], 5),
    ((np.array([9, 2], np.int32), np.array([], np.float64)), None),  # empty rows: any dtype
    ([np.array([2], np.uint8)], 3),
])
def test_good_rows_come_back_as_int64(sequences, vocab_size):
    checked = check_id_sequences(sequences, "rows", vocab_size)
    assert all(row.dtype == np.int64 for row in checked)
    assert [row.tolist() for row in checked] == [np.asarray(s).tolist() for s in sequences]


@pytest.mark.parametrize("sequences, kwargs, message", [
    (np.array([[2, 3]]), {}, r"^rows must be a list of 1-D integer arrays .* ndarray"),
    ({"a": [2]}, {}, "^rows must be a list .* dict"),
    ("23", {}, "^rows must be a list .* str"),
    ([], {}, r"^rows must not be empty\. Received: rows=\[\]"),
    ([np.array([2]), np.array([[2, 3]])], {}, r"^rows\[1\] must be a 1-D integer array\. "
                                              r"Received: shape \(1, 2\)"),
    ([np.array([2.0])], {}, r"^rows\[0\] must be a 1-D integer array.*dtype float64"),
    ([np.array([3]), np.array([2]), np.array([1, 4])], {},
     r"^rows\[2\] has ids outside \[FIRST_ITEM_ID=2, \.\.\.\).*min 1, max 4"),
    ([np.array([2, 7])], {"vocab_size": 7},
     r"^rows\[0\] has ids outside \[FIRST_ITEM_ID=2, vocab_size=7\).*min 2, max 7"),
])
def test_bad_input_names_the_argument_and_the_row(sequences, kwargs, message):
    with pytest.raises(ValueError, match=message):
        check_id_sequences(sequences, "rows", **kwargs)


def test_allow_empty_accepts_no_rows():
    assert check_id_sequences([], "rows", 5, allow_empty=True) == []


@pytest.mark.parametrize("call, message", [
    (lambda: split_item_sets([np.array([2]), np.array([1])]), r"sequences\[1\] has ids outside"),
    (lambda: multi_hot([np.array([2]), np.array([6])], 5), r"sets\[1\] has ids .*vocab_size=5"),
    (lambda: make_item_set_dataset([np.array([2])], 5, 2, 1, targets=[np.array([[3]])]),
     r"targets\[0\] must be a 1-D integer array"),
    (lambda: ranking_examples((np.array([2, 3]), np.array([2, 9])), 2, 8),
     r"sequences\[1\] has ids outside"),
])
def test_every_caller_reports_through_the_shared_check(call, message):
    with pytest.raises(ValueError, match=message):
        call()
