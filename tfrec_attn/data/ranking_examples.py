"""Click-through-rate (CTR) examples from chronological sequences, for ranking models (DIN).

Every target position of a user's sequence gives one positive (the true next item, label 1) and
`num_negatives` negatives (items the user never interacted with, label 0), all sharing the
history before the target. Negatives are drawn uniformly from the catalogue, seeded, with
replacement (as the SASRec paper's code draws its 100 evaluation negatives).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tfrec_attn._keras import tf
from tfrec_attn.data.checks import check_id_sequences
from tfrec_attn.data.sequences import pad_left
from tfrec_attn.data.vocabulary import FIRST_ITEM_ID


def _check_positive_int(name: str, value, minimum: int = 1) -> None:
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}. Received: {name}={value!r}")


def _check_sequences(sequences, vocab_size: int) -> list[np.ndarray]:
    checked = check_id_sequences(sequences, "sequences", vocab_size)
    for i, seq in enumerate(checked):
        if len(np.unique(seq)) >= vocab_size - FIRST_ITEM_ID:
            raise ValueError(f"sequences[{i}] covers the whole catalogue: no item is left to "
                             "sample as a negative.")
    return checked


def _sample_negatives(rng: np.random.Generator, seen: np.ndarray, count: int,
                      vocab_size: int) -> np.ndarray:
    """`count` ids drawn uniformly from `[FIRST_ITEM_ID, vocab_size)` minus `seen` (rejection
    sampling: cheap while a user has seen a small part of the catalogue)."""
    out = np.empty(0, np.int64)
    while len(out) < count:
        draw = rng.integers(FIRST_ITEM_ID, vocab_size, size=2 * (count - len(out)) + 8)
        out = np.concatenate([out, draw[~np.isin(draw, seen)]])
    return out[:count]


def ranking_examples(sequences: Sequence[np.ndarray], max_len: int, vocab_size: int,
                     num_negatives: int = 1, seed: int = 0, last_only: bool = False
                     ) -> dict[str, np.ndarray]:
    """CTR examples: `(history, candidate, label)` rows from per-user item sequences.

    For each target position `t >= 1` of a sequence `s` (only the last one with `last_only`),
    the history `s[:t]` (its most recent `max_len` items, left-padded with 0) gets the true next
    item `s[t]` with label 1, then `num_negatives` items outside `s` with label 0. Rows are in
    sequence order (shuffle in `make_ranking_dataset`); the same arguments give the same rows.

    Args:
        sequences: one 1-D int array of item ids (`>= 2`, `< vocab_size`) per user, oldest
            first, as `tfrec_attn.data` builds them. Sequences shorter than 2 give no rows.
        max_len: history width.
        vocab_size: ids are `< vocab_size`; negatives are drawn from `[2, vocab_size)`.
        num_negatives: negatives per positive, at most the catalogue size less one.
        seed: seed of the negative sampling.
        last_only: one positive per sequence, its last item (e.g. the test target of full
            sequences after `leave_one_out`).

    Returns:
        `{"history": int64 (n, max_len), "candidate": int64 (n,), "label": float32 (n,)}`.

    Example:
    >>> ex = ranking_examples([np.array([2, 3, 4])], max_len=3, vocab_size=8, num_negatives=1)
    >>> ex["history"].tolist(), ex["candidate"][::2].tolist(), ex["label"].tolist()
    ([[0, 0, 2], [0, 0, 2], [0, 2, 3], [0, 2, 3]], [3, 4], [1.0, 0.0, 1.0, 0.0])
    >>> bool(set(ex["candidate"][1::2]) & {2, 3, 4})
    False
    """
    _check_positive_int("max_len", max_len)
    _check_positive_int("num_negatives", num_negatives)
    _check_positive_int("vocab_size", vocab_size, FIRST_ITEM_ID + 1)
    if num_negatives > vocab_size - FIRST_ITEM_ID - 1:
        raise ValueError(f"num_negatives must be at most the {vocab_size - FIRST_ITEM_ID - 1} "
                         "catalogue items other than the positive (negatives are drawn with "
                         f"replacement, so most would repeat). Received: num_negatives="
                         f"{num_negatives}")
    if not isinstance(seed, int | np.integer):
        raise ValueError(f"seed must be an int. Received: seed={seed!r}")
    sequences = _check_sequences(sequences, vocab_size)
    rng = np.random.default_rng(seed)
    histories, candidates, labels = [], [], []
    group = 1 + num_negatives
    for seq in sequences:
        if len(seq) < 2:
            continue
        targets = [len(seq) - 1] if last_only else range(1, len(seq))
        negatives = _sample_negatives(rng, seq, len(targets) * num_negatives, vocab_size)
        for j, t in enumerate(targets):
            histories.extend([seq[max(0, t - max_len):t]] * group)
            candidates.append(seq[t])
            candidates.extend(negatives[j * num_negatives:(j + 1) * num_negatives])
            labels.extend([1.0] + [0.0] * num_negatives)
    return {"history": pad_left(histories, max_len),
            "candidate": np.asarray(candidates, np.int64).reshape(-1),
            "label": np.asarray(labels, np.float32)}


def make_ranking_dataset(sequences: Sequence[np.ndarray], max_len: int, vocab_size: int,
                         batch_size: int, num_negatives: int = 1, seed: int = 0,
                         shuffle: bool = True, last_only: bool = False,
                         drop_remainder: bool = False) -> tf.data.Dataset:
    """`tf.data` pipeline of `ranking_examples` batches, cached, shuffled (seeded), prefetched.

    Args:
        sequences, max_len, vocab_size, num_negatives, seed, last_only: see `ranking_examples`
            (`seed` also seeds the shuffle).
        batch_size: rows per batch.
        shuffle: shuffle the rows (reshuffled every epoch).
        drop_remainder: drop the last partial batch (every batch has `batch_size` rows).

    Returns:
        Dataset of dicts `history` int64 `(batch, max_len)`, `candidate` int64 `(batch,)` and
        `label` float32 `(batch,)`, the input `DIN.fit` takes.

    Example:
    >>> ds = make_ranking_dataset([np.array([2, 3, 4])], max_len=3, vocab_size=8, batch_size=3)
    >>> [batch["history"].shape.as_list() for batch in ds]
    [[3, 3], [1, 3]]
    """
    _check_positive_int("batch_size", batch_size)
    examples = ranking_examples(sequences, max_len, vocab_size, num_negatives, seed, last_only)
    if not len(examples["label"]):
        raise ValueError("sequences gave no examples: every sequence has fewer than 2 items.")
    ds = tf.data.Dataset.from_tensor_slices(examples).cache()
    if shuffle:
        ds = ds.shuffle(len(examples["label"]), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
