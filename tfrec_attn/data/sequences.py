"""Per-user item sequences, train/valid/test splits and padded training batches.

Sequences hold model ids from a `Vocabulary` (`>= FIRST_ITEM_ID`); `PAD_ID` fills the left of
padded rows, so the most recent item is always in the last column.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd

from tfrec_attn._keras import tf
from tfrec_attn.data.parsing import DataError, sort_interactions
from tfrec_attn.data.vocabulary import PAD_ID, Vocabulary


@dataclasses.dataclass
class SequenceData:
    """Chronological item sequences per user.

    Attributes:
        sequences: One `int64` array of model ids per user, oldest first.
        users: Raw user ids, aligned with `sequences`.
        vocab: The item vocabulary.
        dropped_users: Users dropped by `build_sequences` for having too few events.

    Example:
    >>> data = SequenceData([np.array([2, 3, 2])], ["u1"], Vocabulary(["a", "b"]))
    >>> data.num_users, data.num_interactions, data.vocab_size
    (1, 3, 4)
    """

    sequences: list[np.ndarray]
    users: list[str]
    vocab: Vocabulary
    dropped_users: list[str] = dataclasses.field(default_factory=list)

    @property
    def num_users(self) -> int:
        """Number of users (sequences)."""
        return len(self.sequences)

    @property
    def num_interactions(self) -> int:
        """Total events over all sequences."""
        return int(sum(len(s) for s in self.sequences))

    @property
    def vocab_size(self) -> int:
        """`vocab.size`: rows of an item embedding table, including padding and OOV."""
        return self.vocab.size


@dataclasses.dataclass
class Split:
    """Train sequences plus (history, target) pairs for validation and test.

    Attributes:
        train: Sequences to train on.
        valid_histories: Per evaluated user, the events before the validation target.
        valid_targets: `int64` validation targets, aligned with `valid_histories`.
        test_histories: Per evaluated user, the events before the test target.
        test_targets: `int64` test targets.
        valid_users: Raw user ids of the validation rows.
        test_users: Raw user ids of the test rows.
        vocab: Vocabulary the ids come from (set by `temporal_split`, which fits its own).
    """

    train: list[np.ndarray]
    valid_histories: list[np.ndarray]
    valid_targets: np.ndarray
    test_histories: list[np.ndarray]
    test_targets: np.ndarray
    valid_users: list[str] = dataclasses.field(default_factory=list)
    test_users: list[str] = dataclasses.field(default_factory=list)
    vocab: Vocabulary | None = None


def _check_frame(df: pd.DataFrame) -> None:
    """Refuses a frame without `user`, `item`, `timestamp` or with missing values in them.

    A NaN timestamp would sort last and a None / NaN item would become an item `"nan"`.
    """
    missing = [c for c in ("user", "item", "timestamp") if c not in df.columns]
    if missing:
        raise DataError("<DataFrame>", f"missing column(s) {missing}; present columns: "
                        f"{[str(c) for c in df.columns]}")
    for column in ("user", "item", "timestamp"):
        empty = df[column].isna().to_numpy()
        if empty.any():
            raise DataError("<DataFrame>", f"column {column!r} has {int(empty.sum())} missing "
                            f"value(s) (None / NaN / NaT), first at index "
                            f"{df.index[np.argmax(empty)]!r}; drop or fill them first")


def _group(df: pd.DataFrame, vocab: Vocabulary) -> tuple[list[str], list[np.ndarray], list]:
    """Sorted frame -> (users, model-id sequences, timestamp sequences)."""
    users = df["user"].astype(str).to_numpy()
    if not len(users):
        return [], [], []
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    bounds = list(zip(starts.tolist(), [*starts[1:].tolist(), len(users)]))
    ids = vocab.lookup(df["item"])
    times = df["timestamp"].to_numpy()
    return ([str(users[i]) for i in starts], [ids[a:b] for a, b in bounds],
            [times[a:b] for a, b in bounds])


def build_sequences(df: pd.DataFrame, min_events: int = 3, max_events: int | None = None,
                    on_short: str = "drop") -> SequenceData:
    """Groups an interactions frame into chronological per-user sequences.

    The vocabulary is fitted on the items of the users that are kept (so every known item occurs
    in some sequence). `max_events` keeps each user's most recent events, after the
    `min_events` check.

    Args:
        df: Frame with `user`, `item`, `timestamp` columns (any order; sorted stably here).
        min_events: Users with fewer events are dropped (`on_short="drop"`) or rejected.
        max_events: Keep at most this many most recent events per user; `None` keeps all.
        on_short: `"drop"` (listed in `dropped_users`) or `"raise"` a `DataError`.

    Returns:
        `SequenceData`.

    Example:
    >>> df = pd.DataFrame({"user": ["u", "u", "u", "v"], "item": ["b", "a", "b", "a"],
    ...                    "timestamp": [3, 1, 2, 1]})
    >>> data = build_sequences(df, min_events=2)
    >>> data.users, data.sequences[0].tolist(), data.dropped_users
    (['u'], [2, 3, 3], ['v'])
    """
    if on_short not in ("drop", "raise"):
        raise ValueError(f"on_short must be 'drop' or 'raise'. Received: on_short={on_short!r}")
    if min_events < 1:
        raise ValueError(f"min_events must be >= 1. Received: min_events={min_events}")
    if max_events is not None and max_events < 1:
        raise ValueError(f"max_events must be >= 1 or None. Received: max_events={max_events}")
    _check_frame(df)
    df = sort_interactions(df)
    codes, uniques = pd.factorize(df["user"].astype(str))
    counts = np.bincount(codes, minlength=len(uniques))
    dropped = [str(u) for u in np.asarray(uniques, dtype=object)[counts < min_events]]
    if dropped and on_short == "raise":
        first = int(counts[counts < min_events][0])
        raise DataError("<DataFrame>", f"user {dropped[0]!r} has {first} events, fewer than "
                        f"min_events={min_events}")
    short = counts[codes] < min_events
    kept = df[~short]
    vocab = Vocabulary.fit(kept["item"])
    user_ids, sequences, _ = _group(kept, vocab)
    if max_events is not None:
        sequences = [s[-max_events:] for s in sequences]
    return SequenceData(sequences, user_ids, vocab, dropped_users=dropped)


def leave_one_out(data: SequenceData) -> Split:
    """SASRec split: last item is the test target, second-last the validation target.

    Per user `s`: `train = s[:-2]`, valid = (`s[:-2]`, `s[-2]`), test = (`s[:-1]`, `s[-1]`).

    Args:
        data: Sequences with at least 3 events each.

    Returns:
        `Split` with one validation and one test row per user.

    Example:
    >>> data = SequenceData([np.array([2, 3, 4, 5])], ["u"], Vocabulary(list("abcd")))
    >>> split = leave_one_out(data)
    >>> split.train[0].tolist(), split.valid_targets.tolist(), split.test_histories[0].tolist()
    ([2, 3], [4], [2, 3, 4])
    """
    for user, seq in zip(data.users, data.sequences):
        if len(seq) < 3:
            raise DataError("<SequenceData>", f"user {user!r} has {len(seq)} events; "
                            "leave_one_out needs at least 3")
    seqs = [np.asarray(s, dtype=np.int64) for s in data.sequences]
    return Split(
        train=[s[:-2] for s in seqs],
        valid_histories=[s[:-2] for s in seqs],
        valid_targets=np.asarray([s[-2] for s in seqs], dtype=np.int64),
        test_histories=[s[:-1] for s in seqs],
        test_targets=np.asarray([s[-1] for s in seqs], dtype=np.int64),
        valid_users=list(data.users),
        test_users=list(data.users),
        vocab=data.vocab,
    )


def _cutoff(times: np.ndarray, fraction: float) -> float:
    """Timestamp at which the last `fraction` of events (by count) begins (none: no events)."""
    if fraction <= 0 or not len(times):
        return np.inf
    ordered = np.sort(times)
    return ordered[min(len(ordered) - 1, int(np.floor(len(ordered) * (1 - fraction))))]


def temporal_split(df: pd.DataFrame, valid_fraction: float = 0.1,
                   test_fraction: float = 0.1) -> Split:
    """Global-time split: the last events in time are held out, with two cutoffs.

    Events with `timestamp < valid_cutoff` are training events; those in
    `[valid_cutoff, test_cutoff)` the validation period; those `>= test_cutoff` the test period.
    Per user, only the **first** event after a cutoff is evaluated (later ones would leak held-out
    events into the history); its history is all the user's earlier events (for test: training
    and validation events). Users without earlier events are not evaluated. `train` holds each
    user's training-period events (users with fewer than 2 are left out). The vocabulary is
    fitted on all events, so targets may be items never seen in training (returned in
    `Split.vocab`).

    Args:
        df: Interactions frame.
        valid_fraction: Share of events (by count) after the validation cutoff, before test.
        test_fraction: Share of events after the test cutoff.

    Returns:
        `Split` with `vocab` set.

    Example:
    >>> df = pd.DataFrame({"user": ["u"] * 4 + ["v"] * 2, "item": list("abcdab"),
    ...                    "timestamp": [1, 2, 3, 9, 4, 10]})
    >>> split = temporal_split(df, valid_fraction=0.0, test_fraction=0.3)
    >>> split.test_users, split.test_histories[0].tolist(), split.test_targets.tolist()
    (['u', 'v'], [2, 3, 4], [5, 3])
    """
    for name, value in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise ValueError(f"{name} must be in [0, 1). Received: {name}={value}")
    if valid_fraction + test_fraction >= 1:
        raise ValueError("valid_fraction + test_fraction must be < 1. Received: "
                         f"{valid_fraction} + {test_fraction}")
    _check_frame(df)
    df = sort_interactions(df)
    times = df["timestamp"].to_numpy()
    test_cut = _cutoff(times, test_fraction)
    valid_cut = min(_cutoff(times, valid_fraction + test_fraction), test_cut)
    vocab = Vocabulary.fit(df["item"])
    users, sequences, timelines = _group(df, vocab)
    split = Split([], [], np.zeros(0, np.int64), [], np.zeros(0, np.int64), vocab=vocab)
    valid_targets, test_targets = [], []
    for user, seq, when in zip(users, sequences, timelines):
        n_train = int(np.searchsorted(when, valid_cut, side="left"))
        n_before_test = int(np.searchsorted(when, test_cut, side="left"))
        if n_train >= 2:
            split.train.append(seq[:n_train])
        if 0 < n_train < n_before_test:
            split.valid_histories.append(seq[:n_train])
            valid_targets.append(seq[n_train])
            split.valid_users.append(user)
        if 0 < n_before_test < len(seq):
            split.test_histories.append(seq[:n_before_test])
            test_targets.append(seq[n_before_test])
            split.test_users.append(user)
    split.valid_targets = np.asarray(valid_targets, dtype=np.int64)
    split.test_targets = np.asarray(test_targets, dtype=np.int64)
    return split


def pad_left(sequences: Sequence[np.ndarray], max_len: int, pad_id: int = PAD_ID) -> np.ndarray:
    """Left-pads (or truncates to the most recent `max_len` items) every sequence.

    Args:
        sequences: Integer sequences.
        max_len: Output width.
        pad_id: Fill value.

    Returns:
        `int64` array `(len(sequences), max_len)`.

    Example:
    >>> pad_left([np.array([5, 6]), np.array([1, 2, 3, 4])], 3).tolist()
    [[0, 5, 6], [2, 3, 4]]
    """
    if max_len < 1:
        raise ValueError(f"max_len must be positive. Received: max_len={max_len}")
    out = np.full((len(sequences), max_len), pad_id, dtype=np.int64)
    for row, seq in zip(out, sequences):
        tail = np.asarray(seq, dtype=np.int64)[-max_len:]
        if len(tail):
            row[max_len - len(tail):] = tail
    return out


def _windows(seq: np.ndarray, max_len: int, sliding: bool) -> list[np.ndarray]:
    """Windows of up to `max_len + 1` items, from the end; consecutive windows share one item."""
    end = len(seq)
    windows = []
    while True:
        start = max(0, end - max_len - 1)
        windows.append(seq[start:end])
        if start == 0 or not sliding:
            return windows
        end = start + 1


def training_examples(train: Sequence[np.ndarray], max_len: int,
                      sliding: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Next-item examples: `inputs = s[:-1]`, `targets = s[1:]`, both left-padded.

    `targets[i, t]` is the item that follows `inputs[i, t]`; padding positions hold `PAD_ID` in
    both. Sequences shorter than 2 are skipped. A sequence longer than `max_len + 1` contributes
    only its last `max_len + 1` items, unless `sliding=True`, which adds earlier windows so
    every transition is a target exactly once (chunks taken from the end).

    Args:
        train: Training sequences.
        max_len: Example width.
        sliding: Emit extra windows for long sequences.

    Returns:
        `(inputs, targets)`, `int64` arrays `(n, max_len)`.

    Example:
    >>> inputs, targets = training_examples([np.array([2, 3, 4])], max_len=3)
    >>> inputs.tolist(), targets.tolist()
    ([[0, 2, 3]], [[0, 3, 4]])
    """
    if max_len < 1:
        raise ValueError(f"max_len must be positive. Received: max_len={max_len}")
    windows = [w for s in train if len(s) >= 2
               for w in _windows(np.asarray(s, dtype=np.int64), max_len, sliding)]
    inputs = pad_left([w[:-1] for w in windows], max_len)
    targets = pad_left([w[1:] for w in windows], max_len)
    return inputs, targets


def _trim_batch(batch: dict) -> dict:
    """Drops the leading columns that are padding in every row of the batch.

    Exact for tfrec_attn models: positions are right-aligned and padding is masked, so the
    result is the same, but attention and feed-forward cost shrink with the longest real row.
    """
    width = tf.reduce_max(tf.reduce_sum(tf.cast(batch["history"] > 0, tf.int32), axis=1))
    width = tf.maximum(width, 1)
    start = tf.shape(batch["history"])[1] - width
    return {name: value[:, start:] for name, value in batch.items()}


def _length_buckets(max_len: int) -> list[int]:
    """Bucket boundaries 4, 8, 16, ... below `max_len` (rows of similar length batch together)."""
    bounds, edge = [], 4
    while edge < max_len:
        bounds.append(edge + 1)  # bucket_by_sequence_length buckets are [lo, hi)
        edge *= 2
    return bounds


def check_id_sequences(name: str, sequences: Sequence[np.ndarray]) -> None:
    """Each of `sequences` is a 1-D sequence of integer model ids >= 0 (0 padding, 1 unknown,
    items from 2), else a `ValueError` naming `name`, the sequence and the problem.

    Example:
    >>> check_id_sequences("train", [np.array([2, 3]), np.array([4, -1])])
    Traceback (most recent call last):
    ...
    ValueError: train[1]: model ids must be >= 0 (0 padding, 1 unknown, items from 2); it holds -1
    """
    for i, sequence in enumerate(sequences):
        array = np.asarray(sequence)
        if array.ndim != 1:
            raise ValueError(f"{name}[{i}]: expected a 1-D sequence of item ids, got shape "
                             f"{array.shape}")
        if array.size and not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"{name}[{i}]: expected integer model ids (a Vocabulary's lookup), "
                             f"got dtype {array.dtype}")
        if array.size and array.min() < 0:
            raise ValueError(f"{name}[{i}]: model ids must be >= 0 (0 padding, 1 unknown, items "
                             f"from 2); it holds {array.min()}")


def make_training_dataset(train: Sequence[np.ndarray], max_len: int, batch_size: int,
                          shuffle: bool = True, seed: int = 0, drop_remainder: bool = False,
                          sliding: bool = False, trim: bool = True,
                          bucket: bool = True) -> tf.data.Dataset:
    """`tf.data` pipeline of `{"history", "targets"}` batches from `training_examples`.

    Cached, then shuffled over all examples (seeded, reshuffled each epoch), grouped into
    batches of similar length (`bucket`), trimmed to the longest row of each batch (`trim`),
    prefetched. Bucketing and trimming make an epoch cost what the real events cost rather
    than `max_len` per user (most histories are far shorter than `max_len`).

    Args:
        train: Training sequences.
        max_len: Example width.
        batch_size: Examples per batch.
        shuffle: Shuffle examples.
        seed: Shuffle seed.
        drop_remainder: Drop the last partial batch (static batch dimension).
        sliding: See `training_examples`.
        trim: Drop columns that are padding in every row of a batch.
        bucket: Batch rows of similar length together (by powers of two).

    Returns:
        Dataset of dicts with `int64` tensors `history` and `targets`, each `(batch, width)`
        with `width <= max_len` (exactly `max_len` when `trim=False`).

    Example:
    >>> ds = make_training_dataset([np.array([2, 3, 4])] * 3, max_len=4, batch_size=2,
    ...                            trim=False)
    >>> [batch["history"].shape.as_list() for batch in ds]
    [[2, 4], [1, 4]]
    >>> [b["history"].shape.as_list() for b in make_training_dataset(
    ...     [np.array([2, 3, 4])] * 3, max_len=4, batch_size=2)]
    [[2, 2], [1, 2]]
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive. Received: batch_size={batch_size}")
    check_id_sequences("train", train)
    inputs, targets = training_examples(train, max_len, sliding=sliding)
    if not len(inputs):
        raise ValueError("No training examples: every train sequence has fewer than 2 items.")
    ds = tf.data.Dataset.from_tensor_slices({"history": inputs, "targets": targets}).cache()
    if shuffle:
        ds = ds.shuffle(len(inputs), seed=seed, reshuffle_each_iteration=True)
    bounds = _length_buckets(max_len)
    if bucket and bounds:
        ds = ds.bucket_by_sequence_length(
            lambda row: tf.reduce_sum(tf.cast(row["history"] > 0, tf.int32)),
            bucket_boundaries=bounds, bucket_batch_sizes=[batch_size] * (len(bounds) + 1),
            no_padding=True, drop_remainder=drop_remainder)
        # Bucketing hides the batch count (Keras' first-epoch progress bar would read
        # "Unknown"); each bucket yields ceil(n / batch_size) batches (floor when dropping).
        lengths = (inputs > 0).sum(axis=1)
        per_bucket = np.bincount(np.searchsorted(bounds, lengths, side="right"),
                                 minlength=len(bounds) + 1)
        batches = per_bucket // batch_size if drop_remainder else -(-per_bucket // batch_size)
        ds = ds.apply(tf.data.experimental.assert_cardinality(int(batches.sum())))
    else:
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if trim:
        ds = ds.map(_trim_batch, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def make_eval_arrays(histories: Sequence[np.ndarray], max_len: int) -> np.ndarray:
    """Padded evaluation inputs: `pad_left(histories, max_len)`.

    Args:
        histories: Per-row histories (e.g. `Split.test_histories`).
        max_len: Width.

    Returns:
        `int64` array `(len(histories), max_len)`.

    Example:
    >>> make_eval_arrays([np.array([7])], 2).tolist()
    [[0, 7]]
    """
    return pad_left(histories, max_len)
