"""Non-neural baselines that any attention model should beat, usable as `evaluate` score functions.

- `PopularityRecommender`: the same list for everyone, most interacted-with items first.
- `CooccurrenceRecommender`: item-to-item transitions. Item `b` appearing `d <= window` steps
  after `a` adds `1 / d` to cell `(a, b)`; rows are normalized into transition probabilities.
  A history is scored by the decayed sum of the rows of its last `num_recent` items (most recent
  weighted most), plus a tiny popularity term that only breaks ties. Strong on sequential data.

The transition matrix is kept in compressed sparse rows built with numpy (no scipy needed):
memory grows with the number of distinct transitions, not `vocab_size ** 2`.

Example:
>>> train = [np.array([2, 3, 4]), np.array([2, 3, 5]), np.array([3])]
>>> PopularityRecommender(6).fit(train).score([np.array([2])]).argmax(axis=1).tolist()
[3]
>>> CooccurrenceRecommender(6).fit(train).score([np.array([2])])[0, 2:].round(2).tolist()
[0.0, 0.67, 0.17, 0.17]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from tfrec_attn.evaluation._ids import FIRST_ITEM_ID
from tfrec_attn.evaluation.protocols import evaluate
from tfrec_attn.validation import check_decay, check_positive_int


def _flatten(sequences: Iterable[np.ndarray], vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate real item ids of all sequences, with the sequence index of each id."""
    arrays = [np.asarray(s, dtype=np.int64).ravel() for s in sequences]
    if not arrays:
        raise ValueError("train_sequences is empty.")
    ids = np.concatenate(arrays)
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(
            f"train_sequences must hold ids in [0, {vocab_size}). "
            f"Received: min={ids.min()}, max={ids.max()}"
        )
    seq = np.repeat(np.arange(len(arrays)), [a.size for a in arrays])
    real = ids >= FIRST_ITEM_ID
    return ids[real], seq[real]


def _check_vocab_size(vocab_size: int) -> int:
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int | np.integer):
        raise ValueError(f"vocab_size must be an integer. Received: vocab_size={vocab_size!r}")
    if vocab_size <= FIRST_ITEM_ID:
        raise ValueError(f"vocab_size must exceed {FIRST_ITEM_ID}. Received: {vocab_size}")
    return int(vocab_size)


class PopularityRecommender:
    """Scores every item by its interaction count in the training sequences.

    Args:
        vocab_size: id-space size, padding and OOV included.

    Example:
    >>> model = PopularityRecommender(5).fit([np.array([4, 4, 2]), np.array([0, 4, 3])])
    >>> model.score([np.array([2]), np.array([], dtype=np.int64)])[:, 2:].tolist()
    [[1.0, 1.0, 3.0], [1.0, 1.0, 3.0]]
    """

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = _check_vocab_size(vocab_size)
        self.counts: np.ndarray | None = None

    def fit(self, train_sequences: Iterable[np.ndarray]) -> PopularityRecommender:
        """Count interactions per item; padding and OOV are not counted. Returns `self`."""
        ids, _ = _flatten(train_sequences, self.vocab_size)
        self.counts = np.bincount(ids, minlength=self.vocab_size).astype(np.float64)
        return self

    def score(self, histories_batch: Sequence[np.ndarray]) -> np.ndarray:
        """Float64 `(B, vocab_size)` counts, `-inf` for padding and OOV; histories are unused."""
        if self.counts is None:
            raise RuntimeError("PopularityRecommender.score called before fit().")
        scores = np.tile(self.counts, (len(histories_batch), 1))
        scores[:, :FIRST_ITEM_ID] = -np.inf
        return scores


class CooccurrenceRecommender:
    """Item-to-item transition baseline (see the module docstring).

    Args:
        vocab_size: id-space size, padding and OOV included.
        window: how many steps ahead a transition is counted. Defaults to `3`.
        num_recent: how many of the latest history items are used. Defaults to `5`.
        recency_decay: weight ratio between consecutive history items, in `(0, 1]`; the most
            recent item weighs 1. Defaults to `0.5`.
        directed: count only forward transitions `a -> b`; if False also `b -> a`.
            Defaults to `True`.
        normalize: turn rows into transition probabilities. Defaults to `True`.

    Example:
    >>> model = CooccurrenceRecommender(6, window=1).fit([np.array([2, 5]), np.array([3, 4])])
    >>> int(model.score([np.array([3, 2])]).argmax())
    5
    """

    def __init__(
        self,
        vocab_size: int,
        window: int = 3,
        num_recent: int = 5,
        recency_decay: float = 0.5,
        directed: bool = True,
        normalize: bool = True,
    ) -> None:
        check_positive_int("window", window)
        check_positive_int("num_recent", num_recent)
        check_decay("recency_decay", recency_decay)
        self.vocab_size = _check_vocab_size(vocab_size)
        self.window = int(window)
        self.num_recent = int(num_recent)
        self.recency_decay = float(recency_decay)
        self.directed = directed
        self.normalize = normalize
        self.indptr: np.ndarray | None = None
        self.indices = np.zeros(0, np.int64)
        self.data = np.zeros(0, np.float64)
        self._tiebreak = np.zeros(self.vocab_size)

    def fit(self, train_sequences: Iterable[np.ndarray]) -> CooccurrenceRecommender:
        """Build the sparse transition matrix and popularity tie-breaker. Returns `self`."""
        ids, seq = _flatten(train_sequences, self.vocab_size)
        src, dst, weight = [], [], []
        for d in range(1, self.window + 1):
            same = seq[:-d] == seq[d:]
            src.append(ids[:-d][same])
            dst.append(ids[d:][same])
            weight.append(np.full(int(same.sum()), 1.0 / d))
        src, dst, weight = np.concatenate(src), np.concatenate(dst), np.concatenate(weight)
        if not self.directed:
            src, dst = np.concatenate([src, dst]), np.concatenate([dst, src])
            weight = np.concatenate([weight, weight])
        keys, inverse = np.unique(src * self.vocab_size + dst, return_inverse=True)
        # float64 even with no transition at all (bincount of no ids returns int64)
        self.data = np.bincount(inverse, weights=weight, minlength=keys.size).astype(np.float64)
        rows, self.indices = np.divmod(keys, self.vocab_size)
        self.indptr = np.searchsorted(rows, np.arange(self.vocab_size + 1))
        if self.normalize:
            row_sums = np.bincount(rows, weights=self.data, minlength=self.vocab_size)
            self.data = self.data / row_sums[rows]
        self._tiebreak = self._popularity_tiebreak(ids)
        return self

    def neighbor_table(self, num_neighbors: int) -> tuple[np.ndarray, np.ndarray]:
        """Each item's `num_neighbors` strongest successors: the fitted transition rows cut to a
        fixed width (the table of `layers.TransitionPrior`).

        Args:
            num_neighbors: successors kept per item (the strongest; ties by smaller id).

        Returns:
            `(ids, weights)`: int32 and float32 `(vocab_size, num_neighbors)`; row `i` holds
            item `i`'s successors and their transition weights (probabilities when
            `normalize`), 0 in the slots a row does not fill.

        Example:
        >>> model = CooccurrenceRecommender(6, window=1).fit([np.array([2, 5, 2, 4, 2, 5])])
        >>> ids, weights = model.neighbor_table(1)
        >>> ids[2].tolist(), [round(float(w), 2) for w in weights[2]], ids[3].tolist()
        ([5], [0.67], [0])
        """
        if self.indptr is None:
            raise RuntimeError("CooccurrenceRecommender.neighbor_table called before fit().")
        check_positive_int("num_neighbors", num_neighbors)
        rows = np.repeat(np.arange(self.vocab_size), np.diff(self.indptr))
        order = np.lexsort((self.indices, -self.data, rows))  # by row, strongest first
        rank = np.arange(order.size) - self.indptr[rows[order]]
        keep = order[rank < num_neighbors]
        ids = np.zeros((self.vocab_size, num_neighbors), np.int32)
        weights = np.zeros((self.vocab_size, num_neighbors), np.float32)
        ids[rows[keep], rank[rank < num_neighbors]] = self.indices[keep]
        weights[rows[keep], rank[rank < num_neighbors]] = self.data[keep]
        return ids, weights

    def _popularity_tiebreak(self, ids: np.ndarray) -> np.ndarray:
        """Popularity in [0, 1] scaled far below the smallest transition contribution."""
        counts = np.bincount(ids, minlength=self.vocab_size).astype(np.float64)
        smallest = self.data.min() if self.data.size else 1.0
        epsilon = 1e-3 * smallest * self.recency_decay ** (self.num_recent - 1)
        return epsilon * counts / max(counts.max(), 1.0)

    def score(self, histories_batch: Sequence[np.ndarray]) -> np.ndarray:
        """Float64 `(B, vocab_size)` scores, `-inf` for padding and OOV.

        Args:
            histories_batch: chronological 1-D id arrays; padding and OOV ids are skipped.

        Returns:
            Decayed sum of the transition rows of each history's last `num_recent` items, plus
            the popularity tie-breaker. A history with no known successor (empty, only padding
            or OOV, or items never followed by another in training) gets the tie-breaker alone,
            i.e. popularity order.
        """
        if self.indptr is None:
            raise RuntimeError("CooccurrenceRecommender.score called before fit().")
        if len(histories_batch) == 0:
            return np.zeros((0, self.vocab_size))
        rows, items, weights = [], [], []
        for b, history in enumerate(histories_batch):
            history = np.asarray(history, dtype=np.int64).ravel()
            recent = history[(history >= FIRST_ITEM_ID) & (history < self.vocab_size)]
            recent = recent[-self.num_recent :][::-1]  # most recent first
            rows.append(np.full(recent.size, b))
            items.append(recent)
            weights.append(self.recency_decay ** np.arange(recent.size))
        rows, items = np.concatenate(rows).astype(np.int64), np.concatenate(items).astype(np.int64)
        weights = np.concatenate(weights)
        starts, lengths = self.indptr[items], self.indptr[items + 1] - self.indptr[items]
        offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        positions = np.repeat(starts, lengths) + offsets
        flat = np.repeat(rows, lengths) * self.vocab_size + self.indices[positions]
        values = self.data[positions] * np.repeat(weights, lengths)
        size = len(histories_batch) * self.vocab_size
        scores = np.bincount(flat, weights=values, minlength=size).reshape(-1, self.vocab_size)
        # float64 also when no history item has a successor: bincount of no ids returns int64
        scores = scores.astype(np.float64) + self._tiebreak
        scores[:, :FIRST_ITEM_ID] = -np.inf
        return scores


def fit_baselines(
    train_sequences: Sequence[np.ndarray],
    vocab_size: int,
    cooccurrence_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, PopularityRecommender | CooccurrenceRecommender]:
    """Both baselines fitted on `train_sequences`: `{"popularity": ..., "cooccurrence": ...}`.

    Args:
        train_sequences: one chronological id array per training user.
        vocab_size: id-space size, padding and OOV included.
        cooccurrence_kwargs: extra `CooccurrenceRecommender` arguments.

    Returns:
        `{"popularity": PopularityRecommender, "cooccurrence": CooccurrenceRecommender}`,
        both fitted; their `score` methods are `evaluate` score functions.

    Example:
    >>> sorted(fit_baselines([np.array([2, 3, 4])], 6))
    ['cooccurrence', 'popularity']
    """
    models = {
        "popularity": PopularityRecommender(vocab_size),
        "cooccurrence": CooccurrenceRecommender(vocab_size, **dict(cooccurrence_kwargs or {})),
    }
    return {name: model.fit(train_sequences) for name, model in models.items()}


def evaluate_baselines(
    train_sequences: Sequence[np.ndarray],
    histories: Sequence[np.ndarray],
    targets: np.ndarray,
    vocab_size: int,
    protocol: str = "full",
    cooccurrence_kwargs: Mapping[str, Any] | None = None,
    **evaluate_kwargs: Any,
) -> dict[str, dict[str, float]]:
    """Fit both baselines on `train_sequences` and evaluate them with `evaluate`.

    Args:
        train_sequences: training id sequences (never the held-out targets).
        histories: evaluation histories, one per user.
        targets: held-out next items `(n,)`.
        vocab_size: id-space size, padding and OOV included.
        protocol: forwarded to `evaluate`.
        cooccurrence_kwargs: extra `CooccurrenceRecommender` arguments.
        **evaluate_kwargs: `ks`, `exclude_history`, `num_negatives`, `seed`, `batch_size`, ...

    Returns:
        `{"popularity": metrics, "cooccurrence": metrics}`.

    Example:
    >>> train = [np.array([2, 3, 4, 5])] * 3
    >>> out = evaluate_baselines(train, [np.array([2, 3])], np.array([4]), 6, ks=(1,))
    >>> out["popularity"]["hr@1"], out["cooccurrence"]["hr@1"]
    (0.0, 1.0)
    """
    models = fit_baselines(train_sequences, vocab_size, cooccurrence_kwargs)
    return {
        name: evaluate(
            model.score,
            histories,
            targets,
            vocab_size,
            protocol,
            **evaluate_kwargs,
        )
        for name, model in models.items()
    }
