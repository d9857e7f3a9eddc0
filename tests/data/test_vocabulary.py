"""Tests for `tfrec_attn.data.vocabulary`."""

import json

import numpy as np
import pandas as pd
import pytest

from tfrec_attn.data import FIRST_ITEM_ID, OOV_ID, PAD_ID, Vocabulary


def test_reserved_ids():
    assert (PAD_ID, OOV_ID, FIRST_ITEM_ID) == (0, 1, 2)


@pytest.mark.parametrize("raw,tokens", [
    ([10, 9, 100, 9], ["9", "10", "100"]),  # integers sort numerically
    (["10", "9", "100"], ["9", "10", "100"]),
    (["b", "a", "10", "b"], ["10", "a", "b"]),  # mixed: lexicographic
    (np.array([3, 1, 2]), ["1", "2", "3"]),
    (pd.Series(["x", "y", "x"]), ["x", "y"]),
])
def test_fit_is_sorted_and_deterministic(raw, tokens):
    vocab = Vocabulary.fit(raw)
    assert vocab.tokens == tokens
    assert vocab.size == len(tokens) + 2 == len(vocab) + 2
    assert Vocabulary.fit(list(raw)[::-1]) == vocab


def test_lookup_int_and_str_ids_agree_and_unknown_is_oov():
    vocab = Vocabulary.fit([5, 7])
    ids = vocab.lookup([5, "7", "5", 8, "nope"])
    assert ids.dtype == np.int64
    assert ids.tolist() == [2, 3, 2, OOV_ID, OOV_ID]
    assert vocab.lookup(np.array([[7, 9]])).shape == (1, 2)
    assert vocab.lookup([]).shape == (0,)


def test_inverse():
    vocab = Vocabulary(["a", "b"])
    assert vocab.inverse(vocab.lookup(["b", "a"])).tolist() == ["b", "a"]
    assert vocab.inverse([[PAD_ID, OOV_ID]]).tolist() == [["<pad>", "<oov>"]]
    with pytest.raises(ValueError, match=r"must be in \[0, 4\)"):
        vocab.inverse([4])


def test_json_round_trip(tmp_path):
    vocab = Vocabulary.fit(["z", "10", 3])
    path = tmp_path / "vocab.json"
    vocab.to_json(path)
    loaded = Vocabulary.from_json(path)
    assert loaded == vocab and loaded.size == vocab.size
    np.testing.assert_array_equal(loaded.lookup(["z", 3, "q"]), vocab.lookup(["z", 3, "q"]))


def test_from_json_rejects_other_files(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"items": ["a"]}))
    with pytest.raises(ValueError, match="not a tfrec_attn vocabulary"):
        Vocabulary.from_json(path)


def test_duplicate_tokens_rejected():
    with pytest.raises(ValueError, match="distinct"):
        Vocabulary(["a", "b", "a"])


@pytest.mark.parametrize("raw", [["a", "<oov>"], ["<pad>", "b"]])
def test_raw_ids_named_like_the_reserved_ids_are_refused(raw):
    """`inverse` names ids 0 and 1 `<pad>` / `<oov>`: an item of that name could not be told
    apart from them when decoding."""
    with pytest.raises(ValueError, match=r"Item ids \['<(oov|pad)>'\] are the names `inverse` "
                                         r"gives"):
        Vocabulary.fit(raw)
