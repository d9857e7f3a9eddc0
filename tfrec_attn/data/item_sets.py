"""Users as item sets: fold-in / held-out splits and `(padded set, multi-hot)` tf.data pipelines.

The input format of set (autoencoder) recommenders such as Mult-DAE (Liang et al., 2018): each
user is the set of distinct items they interacted with, ordered by their most recent occurrence
(so truncating to the last `max_len` keeps the most recent items), and the training target is
the multi-hot vector of the whole set over the catalogue.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from tfrec_attn._keras import tf
from tfrec_attn.data.checks import check_id_sequences
from tfrec_attn.data.sequences import pad_left
from tfrec_attn.data.vocabulary import FIRST_ITEM_ID


@dataclasses.dataclass
class ItemSetSplit:
    """Per user, the items a model reads (`fold_in`) and the items it must find (`held_out`).

    Attributes:
        fold_in: One `int64` array of distinct ids per user, oldest first.
        held_out: One `int64` array per user (empty for users with a single item).
    """

    fold_in: list[np.ndarray]
    held_out: list[np.ndarray]


def item_set(sequence: np.ndarray) -> np.ndarray:
    """The distinct ids of `sequence`, ordered by their last occurrence (most recent last).

    Example:
    >>> item_set(np.array([5, 2, 5, 3])).tolist()
    [2, 5, 3]
    """
    sequence = np.asarray(sequence, dtype=np.int64).ravel()
    _, last_from_end = np.unique(sequence[::-1], return_index=True)
    return sequence[np.sort(len(sequence) - 1 - last_from_end)]


def split_item_sets(sequences: Sequence[np.ndarray], holdout_fraction: float = 0.2,
                    seed: int = 0) -> ItemSetSplit:
    """Holds out a random `holdout_fraction` of each user's distinct items (seeded).

    Each user with at least two distinct items holds out `max(1, round(fraction * n))` of
    them, chosen uniformly, and keeps at least one in the fold-in set; a user with one item
    keeps it and holds out nothing. Fold-in sets keep the recency order of `item_set`.

    Args:
        sequences: One chronological array of ids `>= FIRST_ITEM_ID` per user.
        holdout_fraction: Share of each user's distinct items to hold out, in `(0, 1)`.
        seed: Seed of the held-out choice; the same arguments give the same split.

    Returns:
        `ItemSetSplit`.

    Example:
    >>> split = split_item_sets([np.array([2, 3, 4, 5, 6]), np.array([7])], 0.4, seed=0)
    >>> [len(s) for s in split.fold_in], [len(s) for s in split.held_out]
    ([3, 1], [2, 0])
    """
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError("holdout_fraction must be in (0, 1). "
                         f"Received: holdout_fraction={holdout_fraction}")
    check_id_sequences(sequences, "sequences", allow_empty=True)
    rng = np.random.default_rng(seed)
    fold_in, held_out = [], []
    for seq in sequences:
        items = item_set(seq)
        count = 0 if len(items) < 2 else min(len(items) - 1,
                                                max(1, round(holdout_fraction * len(items))))
        out = np.zeros(len(items), dtype=bool)
        out[rng.choice(len(items), size=count, replace=False)] = True
        fold_in.append(items[~out])
        held_out.append(items[out])
    return ItemSetSplit(fold_in, held_out)


def multi_hot(sets: Sequence[np.ndarray], vocab_size: int) -> np.ndarray:
    """`float32 (len(sets), vocab_size)`: 1 at every id of each set.

    Example:
    >>> multi_hot([np.array([2, 4]), np.array([3])], 5).tolist()
    [[0.0, 0.0, 1.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0, 0.0]]
    """
    sets = check_id_sequences(sets, "sets", vocab_size, allow_empty=True)
    out = np.zeros((len(sets), vocab_size), np.float32)
    rows = np.repeat(np.arange(len(sets)), [len(s) for s in sets])
    out[rows, np.concatenate(sets or [np.zeros(0, np.int64)])] = 1
    return out


def make_item_set_dataset(sets: Sequence[np.ndarray], vocab_size: int, max_len: int,
                          batch_size: int, targets: Sequence[np.ndarray] | None = None,
                          shuffle: bool = True, seed: int = 0,
                          drop_remainder: bool = False) -> tf.data.Dataset:
    """`tf.data` batches of `(items int64 (B, max_len), multi_hot float32 (B, vocab_size))`.

    `items` is each set left-padded with 0 and truncated to its most recent `max_len` ids;
    the target is the multi-hot of the *whole* set (or of `targets`), so a truncated set is
    still reconstructed in full, as in Mult-DAE. Fits `model.fit` of
    `build_attention_autoencoder` directly.

    Args:
        sets: One array of ids `>= FIRST_ITEM_ID` per user (`item_set` / `split_item_sets`).
        vocab_size: Catalogue size, padding and OOV included.
        max_len: Input width.
        batch_size: Users per batch.
        targets: Optional per-user target ids (default: `sets`).
        shuffle: Shuffle users (seeded, reshuffled every epoch).
        seed: Shuffle seed.
        drop_remainder: Drop the last partial batch.

    Returns:
        The dataset (cached, prefetched).

    Example:
    >>> ds = make_item_set_dataset([np.array([2, 3, 4]), np.array([3])], vocab_size=5,
    ...                            max_len=2, batch_size=2, shuffle=False)
    >>> items, target = next(iter(ds))
    >>> items.numpy().tolist(), target.numpy().tolist()
    ([[3, 4], [0, 3]], [[0.0, 0.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0, 0.0]])
    """
    for name, value in (("vocab_size", vocab_size), ("max_len", max_len),
                        ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be a positive int. Received: {name}={value!r}")
    if vocab_size <= FIRST_ITEM_ID:
        raise ValueError(f"vocab_size must exceed {FIRST_ITEM_ID}. Received: {vocab_size}")
    targets = sets if targets is None else targets
    if len(targets) != len(sets):
        raise ValueError(f"targets must have one entry per set: {len(sets)}. "
                         f"Received {len(targets)}")
    sets = check_id_sequences(sets, "sets", vocab_size)
    targets = check_id_sequences(targets, "targets", vocab_size)
    items = pad_left(sets, max_len)
    # Targets padded to the longest set; the multi-hot is built per batch (bincount), so the
    # dataset never holds a (users, vocab_size) dense matrix.
    target_ids = pad_left(targets, max(1, max(len(t) for t in targets)))
    ds = tf.data.Dataset.from_tensor_slices((items, target_ids)).cache()
    if shuffle:
        ds = ds.shuffle(len(items), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)

    def to_multi_hot(batch_items, batch_targets):
        counts = tf.math.bincount(tf.cast(batch_targets, tf.int32), minlength=vocab_size,
                                  maxlength=vocab_size, binary_output=True, axis=-1,
                                  dtype=tf.float32)
        real = tf.cast(tf.range(vocab_size) >= FIRST_ITEM_ID, tf.float32)  # drop padding (0)
        return batch_items, counts * real[None, :]

    return ds.map(to_multi_hot, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
