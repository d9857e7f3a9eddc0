"""Item vocabulary: raw item ids (any hashable printed as str) <-> contiguous model ids.

Model ids are laid out as `[PAD_ID, OOV_ID, item_0, item_1, ...]`, so an embedding table of
`Vocabulary.size` rows covers padding, unknown items and every known item.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

PAD_ID = 0
OOV_ID = 1
FIRST_ITEM_ID = 2
PAD_TOKEN = "<pad>"
OOV_TOKEN = "<oov>"
_FORMAT = "tfrec_attn.Vocabulary"


def _factorize_str(raw_ids: Iterable) -> tuple[np.ndarray, list[str], tuple[int, ...]]:
    """Returns (codes, distinct ids as str, shape): `raw[i] == uniques[codes[i]]` as strings.

    Factorizing first keeps `str()` conversions and hash lookups to the distinct values.
    """
    if isinstance(raw_ids, pd.Series | pd.Index):
        values = raw_ids.to_numpy()
    elif isinstance(raw_ids, np.ndarray):
        values = raw_ids
    else:
        values = np.asarray(list(raw_ids))
    shape = values.shape
    codes, uniques = pd.factorize(values.ravel(), use_na_sentinel=False)
    return codes, [str(u) for u in uniques], shape


def _natural_sorted(tokens: list[str]) -> list[str]:
    """Sorts unique tokens numerically when they are all integers, else lexicographically."""
    unique = np.asarray(list(dict.fromkeys(tokens)), dtype=object)
    numbers = pd.to_numeric(pd.Series(unique, dtype=object), errors="coerce")
    if len(unique) and numbers.notna().all() and (numbers == numbers.round()).all():
        order = np.lexsort((unique.astype(str), numbers.to_numpy(dtype=float)))
    else:
        order = np.argsort(unique.astype(str), kind="stable")
    return [str(t) for t in unique[order]]


class Vocabulary:
    """Maps raw item ids to model ids `>= FIRST_ITEM_ID`; unknown ids map to `OOV_ID`.

    Raw ids are stored as strings, so `42` and `"42"` are the same item.

    Args:
        tokens: Sequence of distinct raw ids; `tokens[i]` gets model id `FIRST_ITEM_ID + i`.

    Example:
    >>> vocab = Vocabulary.fit([30, 10, 20, 10])
    >>> vocab.size
    5
    >>> vocab.lookup([10, 30, 99]).tolist()
    [2, 4, 1]
    >>> vocab.inverse([2, 1, 0]).tolist()
    ['10', '<oov>', '<pad>']
    """

    def __init__(self, tokens: Sequence) -> None:
        tokens = [str(t) for t in tokens]
        index = pd.Index(tokens, dtype=object)
        if not index.is_unique:
            duplicates = index[index.duplicated()].unique().tolist()[:5]
            raise ValueError(f"Vocabulary tokens must be distinct. Duplicates: {duplicates}")
        reserved = sorted({PAD_TOKEN, OOV_TOKEN} & set(tokens))
        if reserved:  # `inverse` could not tell them from the reserved ids 0 and 1
            raise ValueError(f"Item ids {reserved} are the names `inverse` gives the padding "
                             "and unknown ids; rename those items (e.g. strip the brackets).")
        self._tokens = tokens
        self._index = index

    @classmethod
    def fit(cls, raw_ids: Iterable) -> Vocabulary:
        """Builds a vocabulary of the distinct raw ids, sorted (numerically if all are integers).

        Args:
            raw_ids: Iterable of raw item ids (ints or strs, numpy array or pandas Series).

        Returns:
            A deterministic `Vocabulary` (independent of the order of `raw_ids`).

        Example:
        >>> Vocabulary.fit(["b", "a", "b"]).tokens
        ['a', 'b']
        """
        return cls(_natural_sorted(_factorize_str(raw_ids)[1]))

    @property
    def size(self) -> int:
        """Number of model ids: known items + 2 (padding and OOV); valid ids are `[0, size)`."""
        return len(self._tokens) + FIRST_ITEM_ID

    @property
    def tokens(self) -> list[str]:
        """Known raw ids (as str) in model-id order, starting at `FIRST_ITEM_ID`."""
        return list(self._tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self._tokens == other._tokens

    def __repr__(self) -> str:
        return f"Vocabulary(items={len(self._tokens)}, size={self.size})"

    def lookup(self, raw_ids: Iterable) -> np.ndarray:
        """Maps raw ids to model ids.

        Args:
            raw_ids: Raw ids, any shape (compared as strings).

        Returns:
            `int64` array of the same shape; unknown ids map to `OOV_ID`.

        Example:
        >>> Vocabulary(["x", "y"]).lookup([["y", "z"]]).tolist()
        [[3, 1]]
        """
        codes, uniques, shape = _factorize_str(raw_ids)
        positions = self._index.get_indexer(pd.Index(uniques, dtype=object))
        ids = np.where(positions < 0, OOV_ID, positions + FIRST_ITEM_ID).astype(np.int64)
        return ids[codes].reshape(shape)

    def inverse(self, ids: Iterable[int]) -> np.ndarray:
        """Maps model ids back to raw ids (`PAD_TOKEN` / `OOV_TOKEN` for the reserved ids).

        Args:
            ids: Integer model ids in `[0, size)`, any shape.

        Returns:
            Object array of `str` with the shape of `ids`.

        Example:
        >>> Vocabulary(["x"]).inverse([2, 0]).tolist()
        ['x', '<pad>']
        """
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.size):
            raise ValueError(
                f"Model ids must be in [0, {self.size}). Received min={ids.min()}, max={ids.max()}"
            )
        table = np.asarray([PAD_TOKEN, OOV_TOKEN, *self._tokens], dtype=object)
        return table[ids]

    def to_json(self, path: str | os.PathLike) -> None:
        """Writes the vocabulary to a JSON file.

        Args:
            path: Destination file.

        Returns:
            None.

        Example:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "vocab.json"
        >>> Vocabulary(["a", "b"]).to_json(path)
        >>> Vocabulary.from_json(path).tokens
        ['a', 'b']
        """
        payload = {
            "format": _FORMAT,
            "version": 1,
            "pad_id": PAD_ID,
            "oov_id": OOV_ID,
            "first_item_id": FIRST_ITEM_ID,
            "items": self._tokens,
        }
        with open(path, "w", encoding="utf-8") as f:
            json.dump(payload, f)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> Vocabulary:
        """Reads a vocabulary written by `to_json`.

        Args:
            path: Source file.

        Returns:
            The `Vocabulary`.

        Example:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "vocab.json"
        >>> Vocabulary([7]).to_json(path)
        >>> Vocabulary.from_json(path).lookup([7]).tolist()
        [2]
        """
        with open(path, encoding="utf-8") as f:
            payload = json.load(f)
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
            raise ValueError(f"{path} is not a tfrec_attn vocabulary file.")
        if payload.get("first_item_id", FIRST_ITEM_ID) != FIRST_ITEM_ID:
            raise ValueError(
                f"{path} uses first_item_id={payload['first_item_id']}, expected {FIRST_ITEM_ID}."
            )
        return cls(payload["items"])
