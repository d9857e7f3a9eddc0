"""The one check of per-user id sequences that the data pipelines take as input.

Every message names the argument and, for a bad row, its index (`sequences[3]`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tfrec_attn.data.vocabulary import FIRST_ITEM_ID


def check_id_sequences(sequences, name: str = "sequences", vocab_size: int | None = None,
                       allow_empty: bool = False) -> list[np.ndarray]:
    """Checks a list of per-user item-id arrays; returns them as `int64` arrays.

    Each row must be 1-D and integer (an empty row may have any dtype: `np.asarray([])` is
    float) with ids in `[FIRST_ITEM_ID, vocab_size)` (below `FIRST_ITEM_ID` are padding and
    OOV). A 2-D array is rejected as a whole: it is a padded batch, not one row per user.

    Args:
        sequences: A list or tuple of 1-D integer arrays (one per user).
        name: The argument's name in the messages.
        vocab_size: Exclusive upper bound of the ids; `None` checks only the lower bound.
        allow_empty: Accept a list with no rows.

    Returns:
        The rows as `int64` arrays (not copied when already `int64`).

    Raises:
        ValueError: naming `name` (and `name[i]` for a bad row) and what was received.

    Example:
    >>> [s.tolist() for s in check_id_sequences([[2, 3], np.array([4])], vocab_size=5)]
    [[2, 3], [4]]
    >>> check_id_sequences([np.array([2]), np.array([0, 3])], "sets")
    Traceback (most recent call last):
    ...
    ValueError: sets[1] has ids outside [FIRST_ITEM_ID=2, ...) (0 is padding, 1 is OOV). \
Received: min 0, max 3
    """
    if isinstance(sequences, np.ndarray) or not isinstance(sequences, Sequence) \
            or isinstance(sequences, str):
        raise ValueError(f"{name} must be a list of 1-D integer arrays (one per user). "
                         f"Received: {name} of type {type(sequences).__name__}")
    if not allow_empty and not len(sequences):
        raise ValueError(f"{name} must not be empty. Received: {name}=[]")
    upper = "..." if vocab_size is None else f"vocab_size={vocab_size}"
    checked = []
    for i, seq in enumerate(sequences):
        seq = np.asarray(seq)
        if seq.ndim != 1 or (seq.size and seq.dtype.kind not in "iu"):
            raise ValueError(f"{name}[{i}] must be a 1-D integer array. Received: shape "
                             f"{seq.shape}, dtype {seq.dtype}")
        if seq.size and (seq.min() < FIRST_ITEM_ID
                         or (vocab_size is not None and seq.max() >= vocab_size)):
            raise ValueError(f"{name}[{i}] has ids outside [FIRST_ITEM_ID={FIRST_ITEM_ID}, "
                             f"{upper}) (0 is padding, 1 is OOV). Received: min {seq.min()}, "
                             f"max {seq.max()}")
        checked.append(seq.astype(np.int64, copy=False))
    return checked
