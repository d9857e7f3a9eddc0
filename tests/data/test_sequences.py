"""Tests for `tfrec_attn.data.sequences`: grouping, splits, padding and the tf.data pipeline."""

import numpy as np
import pandas as pd
import pytest

from tfrec_attn._keras import tf
from tfrec_attn.data import (
    PAD_ID,
    DataError,
    SequenceData,
    Vocabulary,
    build_sequences,
    leave_one_out,
    make_eval_arrays,
    make_training_dataset,
    pad_left,
    temporal_split,
    training_examples,
)


def _frame(rows):
    return pd.DataFrame(rows, columns=["user", "item", "timestamp"])


def _arrays(*lists):
    return [np.asarray(x, dtype=np.int64) for x in lists]


@pytest.fixture
def interactions():
    # items a..e -> ids 2..6; user "2" is short (2 events); rows deliberately unsorted.
    return _frame([
        ("1", "c", 30), ("1", "a", 10), ("2", "e", 5), ("1", "b", 20), ("1", "d", 40),
        ("2", "a", 6), ("3", "b", 1), ("3", "b", 2), ("3", "a", 3),
    ])


def test_build_sequences_groups_chronologically(interactions):
    data = build_sequences(interactions, min_events=3)
    assert data.users == ["1", "3"]
    assert data.dropped_users == ["2"]
    assert data.vocab.tokens == ["a", "b", "c", "d"]  # "e" only belongs to the dropped user
    assert [s.tolist() for s in data.sequences] == [[2, 3, 4, 5], [3, 3, 2]]
    assert all(s.dtype == np.int64 for s in data.sequences)
    assert (data.num_users, data.num_interactions, data.vocab_size) == (2, 7, 6)


def test_build_sequences_max_events_and_on_short(interactions):
    data = build_sequences(interactions, min_events=2, max_events=2)
    assert [s.tolist() for s in data.sequences] == [[4, 5], [6, 2], [3, 2]]
    with pytest.raises(DataError, match="user '2' has 2 events"):
        build_sequences(interactions, min_events=3, on_short="raise")
    with pytest.raises(ValueError, match="on_short"):
        build_sequences(interactions, on_short="keep")
    with pytest.raises(DataError, match="missing column"):
        build_sequences(interactions.drop(columns="timestamp"))


@pytest.mark.parametrize("column,values,count", [
    ("timestamp", [np.nan, 2, 1, 4], 1),  # would sort last
    ("item", ["a", None, np.nan, "b"], 2),  # would both become an item "nan"
    ("user", ["u", "u", None, "u"], 1),
    ("timestamp", pd.to_datetime(["2020-01-01", None, "2020-01-02", "2020-01-03"]), 1),
    ("item", pd.array(["a", pd.NA, "b", "c"], dtype="string"), 1),
])
@pytest.mark.parametrize("split", [build_sequences, temporal_split])
def test_missing_values_name_the_column_and_count(column, values, count, split):
    frame = pd.DataFrame({"user": ["u"] * 4, "item": list("abcd"), "timestamp": [1, 2, 3, 4]})
    frame[column] = values
    with pytest.raises(DataError, match=f"column '{column}' has {count} missing value"):
        split(frame)


def test_leave_one_out_hand_checked():
    vocab = Vocabulary(list("abcdefgh"))
    data = SequenceData(_arrays([2, 3, 4, 5, 6], [7, 8, 9]), ["u", "v"], vocab)
    split = leave_one_out(data)
    assert [s.tolist() for s in split.train] == [[2, 3, 4], [7]]
    assert [s.tolist() for s in split.valid_histories] == [[2, 3, 4], [7]]
    assert split.valid_targets.tolist() == [5, 8]
    assert [s.tolist() for s in split.test_histories] == [[2, 3, 4, 5], [7, 8]]
    assert split.test_targets.tolist() == [6, 9]
    assert split.test_targets.dtype == np.int64
    assert split.test_users == ["u", "v"] and split.vocab is data.vocab


def test_leave_one_out_rejects_short_users():
    data = SequenceData(_arrays([2, 3, 4], [2, 3]), ["u", "short"], Vocabulary(list("abc")))
    with pytest.raises(DataError, match="user 'short' has 2 events"):
        leave_one_out(data)


def test_temporal_split_hand_checked():
    df = _frame([
        ("u", "a", 1), ("u", "b", 2), ("u", "c", 3), ("u", "d", 7), ("u", "e", 9), ("u", "a", 10),
        ("v", "b", 4), ("v", "c", 8), ("w", "d", 5), ("w", "e", 6),
    ])
    # 10 events: valid period starts at the 7th-smallest time (7), test at the 9th (9).
    split = temporal_split(df, valid_fraction=0.2, test_fraction=0.2)
    ids = split.vocab.lookup
    # v has a single training-period event, too few to train on.
    train = [s.tolist() for s in split.train]
    assert train == [ids(list("abc")).tolist(), ids(list("de")).tolist()]
    assert split.valid_users == ["u", "v"]
    assert [s.tolist() for s in split.valid_histories] == [ids(list("abc")).tolist(), [3]]
    assert split.valid_targets.tolist() == ids(["d", "c"]).tolist()
    # Test: only u has events >= 9; the first one is evaluated, history includes valid events.
    assert split.test_users == ["u"]
    assert split.test_histories[0].tolist() == ids(list("abcd")).tolist()
    assert split.test_targets.tolist() == ids(["e"]).tolist()


def test_temporal_split_validates_fractions():
    df = _frame([("u", "a", 1)])
    for kwargs in ({"test_fraction": 1.0}, {"valid_fraction": -0.1},
                   {"valid_fraction": 0.5, "test_fraction": 0.5}):
        with pytest.raises(ValueError, match="fraction"):
            temporal_split(df, **kwargs)


@pytest.mark.parametrize("max_len,expected", [
    (4, [[0, 0, 2, 3], [4, 5, 6, 7], [0, 0, 0, 0]]),
    (2, [[2, 3], [6, 7], [0, 0]]),  # keeps the most recent items
])
def test_pad_left(max_len, expected):
    padded = pad_left(_arrays([2, 3], [4, 5, 6, 7], []), max_len)
    assert padded.dtype == np.int64 and padded.tolist() == expected
    assert make_eval_arrays(_arrays([2, 3], [4, 5, 6, 7], []), max_len).tolist() == expected
    assert pad_left(_arrays([2]), 2, pad_id=-1).tolist() == [[-1, 2]]
    with pytest.raises(ValueError, match="max_len must be positive"):
        pad_left(_arrays([2]), 0)


def test_training_examples_alignment():
    inputs, targets = training_examples(_arrays([2, 3, 4], [5], [6, 7, 8, 9, 10, 11]), max_len=4)
    # [5] has no transition; the long sequence keeps its last max_len + 1 items.
    assert inputs.tolist() == [[0, 0, 2, 3], [7, 8, 9, 10]]
    assert targets.tolist() == [[0, 0, 3, 4], [8, 9, 10, 11]]
    assert (inputs[targets == PAD_ID] == PAD_ID).all()


def test_training_examples_sliding_covers_every_transition_once():
    seq = np.arange(2, 12, dtype=np.int64)  # 10 items, 9 transitions
    inputs, targets = training_examples([seq], max_len=4, sliding=True)
    assert inputs.tolist() == [[7, 8, 9, 10], [3, 4, 5, 6], [0, 0, 0, 2]]
    assert targets.tolist() == [[8, 9, 10, 11], [4, 5, 6, 7], [0, 0, 0, 3]]
    pairs = {(i, t) for row_i, row_t in zip(inputs, targets) for i, t in zip(row_i, row_t) if t}
    assert pairs == {(a, a + 1) for a in range(2, 11)}


def _epoch(ds):
    return [{k: v.numpy() for k, v in batch.items()} for batch in ds]


def test_make_training_dataset_shapes_and_dtypes():
    train = [np.arange(2, 2 + n, dtype=np.int64) for n in range(2, 9)]  # 7 examples
    ds = make_training_dataset(train, max_len=5, batch_size=3, trim=False, bucket=False)
    assert set(ds.element_spec) == {"history", "targets"}
    assert ds.element_spec["history"].dtype == tf.int64
    assert ds.element_spec["targets"].shape.as_list() == [None, 5]
    assert [b["history"].shape for b in _epoch(ds)] == [(3, 5), (3, 5), (1, 5)]
    fixed = make_training_dataset(train, max_len=5, batch_size=3, drop_remainder=True,
                                  trim=False, bucket=False)
    assert fixed.element_spec["history"].shape.as_list() == [3, 5]
    assert len(_epoch(fixed)) == 2


def test_make_training_dataset_seeded_shuffle():
    train = [np.asarray([i + 2, i + 3], dtype=np.int64) for i in range(64)]
    first = _epoch(make_training_dataset(train, max_len=2, batch_size=64, seed=1, trim=False))
    again = _epoch(make_training_dataset(train, max_len=2, batch_size=64, seed=1, trim=False))
    other = _epoch(make_training_dataset(train, max_len=2, batch_size=64, seed=2, trim=False))
    np.testing.assert_array_equal(first[0]["history"], again[0]["history"])
    assert not np.array_equal(first[0]["history"], other[0]["history"])
    ordered = _epoch(make_training_dataset(train, max_len=2, batch_size=64, shuffle=False,
                                           trim=False))
    np.testing.assert_array_equal(ordered[0]["history"][:, 1], np.arange(2, 66))
    # Same examples, each epoch reshuffled.
    ds = make_training_dataset(train, max_len=2, batch_size=64, seed=1, trim=False)
    epoch1, epoch2 = _epoch(ds)[0]["history"], _epoch(ds)[0]["history"]
    assert sorted(epoch1[:, 1]) == sorted(epoch2[:, 1]) and not np.array_equal(epoch1, epoch2)
    np.testing.assert_array_equal(first[0]["targets"][:, 1] - 1, first[0]["history"][:, 1])


def test_trimmed_buckets_keep_every_example_right_aligned():
    rng = np.random.default_rng(0)
    train = [np.arange(2, 2 + n, dtype=np.int64) for n in rng.integers(2, 40, size=200)]
    full_inputs, full_targets = training_examples(train, 32)
    batches = _epoch(make_training_dataset(train, max_len=32, batch_size=16, seed=3))
    widths = [b["history"].shape[1] for b in batches]
    assert min(widths) < 8 and max(widths) == 32  # short batches really are short
    rows = []
    for b in batches:
        # Trimming only removes columns that are padding in every row of the batch.
        assert (b["history"][:, 0] > 0).any()
        h = np.pad(b["history"], ((0, 0), (32 - b["history"].shape[1], 0)))
        t = np.pad(b["targets"], ((0, 0), (32 - b["targets"].shape[1], 0)))
        rows += [tuple(x) + tuple(y) for x, y in zip(h, t)]
    expected = [tuple(x) + tuple(y) for x, y in zip(full_inputs, full_targets)]
    assert sorted(rows) == sorted(expected)


@pytest.mark.parametrize("batch_size, drop_remainder, sliding", [
    (16, False, False), (16, True, False), (7, False, True), (7, True, True), (500, False, False),
])
def test_bucketed_dataset_knows_its_batch_count(batch_size, drop_remainder, sliding):
    """Keras' first-epoch progress bar needs the count: it is declared, and exact (a wrong
    count fails the epoch's iteration)."""
    rng = np.random.default_rng(1)
    train = [np.arange(2, 2 + n, dtype=np.int64) for n in rng.integers(2, 70, size=150)]
    ds = make_training_dataset(train, max_len=32, batch_size=batch_size, seed=0,
                               drop_remainder=drop_remainder, sliding=sliding)
    declared = int(ds.cardinality())
    assert declared > 0
    for _ in range(2):  # reshuffled epochs fill the buckets in another order
        assert len(_epoch(ds)) == declared

def test_make_training_dataset_rejects_empty():
    with pytest.raises(ValueError, match="No training examples"):
        make_training_dataset(_arrays([2]), max_len=3, batch_size=2)


@pytest.mark.parametrize("times, kind", [(["9", "10", "11"], "text"),
                                         ([True, False, True], "bools")])
def test_timestamps_that_do_not_sort_as_time_are_refused(times, kind):
    """Text timestamps (`pd.read_csv(..., dtype=str)`) sorted as text: '10' before '9', so
    histories came out of order and a temporal split leaked later events into test histories."""
    df = _frame([("u", "a", times[0]), ("u", "b", times[1]), ("u", "c", times[2])])
    df["timestamp"] = pd.Series(times, dtype=object if kind == "text" else bool)
    for split in (build_sequences, lambda frame: temporal_split(frame, 0.0, 0.3)):
        with pytest.raises(DataError, match=rf"column 'timestamp' holds {kind} .* does not "
                                            r"sort as time .*pd\.to_numeric"):
            split(df)
    df["timestamp"] = pd.to_datetime(["2020-01-09", "2020-01-10", "2020-01-11"])
    data = build_sequences(df)
    assert data.vocab.inverse(data.sequences[0]).tolist() == ["a", "b", "c"]


def test_temporal_split_of_no_events_is_empty():
    """As `build_sequences` and `leave_one_out`: no users, not an IndexError."""
    split = temporal_split(_frame([]).astype({"timestamp": "int64"}))
    assert split.train == [] and split.test_users == [] and len(split.test_targets) == 0


@pytest.mark.parametrize("train, message", [
    ([np.array([2, -3, 4])], r"train\[0\]: model ids must be >= 0 .* it holds -3"),
    ([np.array([2, 3]), np.array([[2, 3], [4, 5]])],
     r"train\[1\]: expected a 1-D sequence of item ids, got shape \(2, 2\)"),
    ([np.array([2.0, 3.5])], r"train\[0\]: expected integer model ids"),
])
def test_training_dataset_refuses_ids_that_are_not_model_ids(train, message):
    with pytest.raises(ValueError, match=message):
        make_training_dataset(train, max_len=4, batch_size=2)
