"""Ranking metrics for one held-out target per user, computed from the target's 0-based rank.

A rank is the number of candidates that beat the target. Ties are counted *against* the target
(pessimistic ranking): a candidate scored equal to the target counts as scored higher. So a model
that gives every item the same score ranks each target last and earns no credit, and a model
cannot gain from emitting constant or saturated scores.

A target that was never ranked (the full protocol removes a target that repeats a history item
from the candidates) has rank `MISS_RANK`: beyond every cut-off, and no reciprocal-rank credit,
so it earns 0 in every metric and in every per-user value (`hits`, `ndcg_gains`,
`reciprocal_ranks`).

Example:
>>> ranks = ranks_from_scores(np.array([[0.1, 0.9, 0.5], [0.3, 0.3, 0.3]]), np.array([2, 0]))
>>> ranks.tolist()
[1, 2]
>>> summarize(ranks, ks=(1, 2))["hr@2"]
0.5
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tfrec_attn.evaluation._ids import FIRST_ITEM_ID

# Rank of a target that was not ranked at all: a miss at every cut-off with reciprocal rank 0.
# Above any real rank (a catalogue of 2**31 items cannot be scored as dense rows), yet far enough
# below the int64 limit that `rank + 1` cannot overflow.
MISS_RANK = 2**31 - 1


def ranks_from_scores(scores: np.ndarray, target_index: np.ndarray) -> np.ndarray:
    """Pessimistic 0-based rank of each row's target among that row's candidates.

    Args:
        scores: float `(n, C)`, one row of candidate scores per user.
        target_index: int `(n,)`, column of each row's target in `scores`.

    Returns:
        int64 `(n,)`: number of *other* candidates scored greater than or equal to the target.

    Example:
    >>> ranks_from_scores(np.array([[3.0, 1.0, 2.0, 2.0]]), np.array([2])).tolist()
    [2]
    """
    scores = np.asarray(scores)
    target_index = np.asarray(target_index)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D (n, C). Received: scores.shape={scores.shape}")
    if target_index.shape != (scores.shape[0],):
        raise ValueError(
            f"target_index must have shape ({scores.shape[0]},) to match scores. "
            f"Received: target_index.shape={target_index.shape}"
        )
    if target_index.size and (target_index.min() < 0 or target_index.max() >= scores.shape[1]):
        raise ValueError(
            f"target_index must lie in [0, {scores.shape[1]}). "
            f"Received: min={target_index.min()}, max={target_index.max()}"
        )
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN; ranks would be undefined.")
    target_scores = scores[np.arange(scores.shape[0]), target_index]
    return (scores >= target_scores[:, None]).sum(axis=1).astype(np.int64) - 1


def _check_ranks(ranks: np.ndarray) -> np.ndarray:
    ranks = np.asarray(ranks)
    if ranks.ndim != 1 or ranks.size == 0:
        raise ValueError(f"ranks must be a non-empty 1-D array. Received: shape={ranks.shape}")
    if not np.issubdtype(ranks.dtype, np.integer) or ranks.min() < 0:
        raise ValueError("ranks must be non-negative integers.")
    return ranks


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer. Received: k={k!r}")
    return int(k)


def check_cutoffs(ks: Sequence[int]) -> tuple[int, ...]:
    """Validate metric cut-offs: a non-empty sequence of positive integers.

    Example:
    >>> check_cutoffs([10, 1])
    (10, 1)
    """
    ks = tuple(ks)
    if not ks:
        raise ValueError("ks must name at least one cut-off. Received: ks=()")
    return tuple(_check_k(k) for k in ks)


def hits(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-user HR@k: float64 `(n,)`, 1.0 where the target ranks in the top `k`, else 0.0.

    Args:
        ranks: int `(n,)` 0-based target ranks.
        k: cut-off, a positive integer.

    Returns:
        float64 `(n,)`, in the order of `ranks` (the per-user values `hit_rate` averages).

    Example:
    >>> hits(np.array([0, 4, 12]), k=5).tolist()
    [1.0, 1.0, 0.0]
    """
    ranks, k = _check_ranks(ranks), _check_k(k)
    return (ranks < k).astype(np.float64)


def ndcg_gains(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-user NDCG@k with one relevant item: `1 / log2(rank + 2)` if `rank < k`, else 0.

    Args:
        ranks: int `(n,)` 0-based target ranks.
        k: cut-off, a positive integer.

    Returns:
        float64 `(n,)`, in the order of `ranks` (the per-user values `ndcg` averages).

    Example:
    >>> ndcg_gains(np.array([0, 2, 10]), k=10).tolist()
    [1.0, 0.5, 0.0]
    """
    ranks, k = _check_ranks(ranks), _check_k(k)
    return np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)


def hit_rate(ranks: np.ndarray, k: int) -> float:
    """Fraction of users whose target ranks in the top `k` (the mean of `hits`).

    Example:
    >>> hit_rate(np.array([0, 4, 12]), k=5)
    0.6666666666666666
    """
    return float(np.mean(hits(ranks, k)))


def ndcg(ranks: np.ndarray, k: int) -> float:
    """Mean NDCG@k over users (the mean of `ndcg_gains`).

    Example:
    >>> ndcg(np.array([0, 2, 10]), k=10)
    0.5
    """
    return float(np.mean(ndcg_gains(ranks, k)))


def reciprocal_ranks(ranks: np.ndarray) -> np.ndarray:
    """Per-user reciprocal rank `1 / (rank + 1)`, and 0.0 for a never-ranked target.

    Args:
        ranks: int `(n,)` 0-based target ranks; `MISS_RANK` (or above) marks a target that
            was not ranked (a removed repeat target), which earns no credit.

    Returns:
        float64 `(n,)`, in the order of `ranks` (the per-user values `mrr` averages).

    Example:
    >>> reciprocal_ranks(np.array([0, 3, MISS_RANK])).tolist()
    [1.0, 0.25, 0.0]
    """
    ranks = _check_ranks(ranks)
    return np.where(ranks >= MISS_RANK, 0.0, 1.0 / (ranks + 1.0))


def mrr(ranks: np.ndarray) -> float:
    """Mean reciprocal rank over the full ranking (no cut-off): the mean of `reciprocal_ranks`.

    Example:
    >>> mrr(np.array([0, 1, 3]))
    0.5833333333333334
    >>> mrr(np.array([0, MISS_RANK]))  # a never-ranked target is a miss
    0.5
    """
    return float(np.mean(reciprocal_ranks(ranks)))


def recall(ranks: np.ndarray, k: int) -> float:
    """Recall@k; with a single held-out target it equals `hit_rate`.

    Example:
    >>> recall(np.array([0, 7]), k=5)
    0.5
    """
    return hit_rate(ranks, k)


def precision(ranks: np.ndarray, k: int) -> float:
    """Precision@k: hits among the `k` recommendations, i.e. `hit_rate / k` for one target.

    Example:
    >>> precision(np.array([0, 7]), k=5)
    0.1
    """
    return hit_rate(ranks, k) / _check_k(k)


def f1(ranks: np.ndarray, k: int) -> float:
    """Per-user harmonic mean of precision@k and recall@k, averaged over users.

    A hit has precision `1/k` and recall 1, so F1 is `2 / (k + 1)`; a miss has F1 0.

    Example:
    >>> f1(np.array([0, 7]), k=3)
    0.25
    """
    ranks, k = _check_ranks(ranks), _check_k(k)
    return float(np.mean(np.where(ranks < k, 2.0 / (k + 1.0), 0.0)))


def coverage(topk_lists: np.ndarray | Sequence[np.ndarray], num_items: int) -> float:
    """Fraction of real items (ids `2 .. num_items - 1`) recommended to at least one user.

    Args:
        topk_lists: `(n, k)` array or sequence of 1-D id arrays; ids outside the real range
            (padding, OOV) are ignored.
        num_items: vocabulary size, padding and OOV ids included.

    Returns:
        Catalog coverage in `[0, 1]`.

    Example:
    >>> coverage(np.array([[2, 3], [3, 0]]), num_items=6)
    0.5
    """
    if isinstance(num_items, bool) or num_items <= FIRST_ITEM_ID:
        raise ValueError(f"num_items must exceed {FIRST_ITEM_ID}. Received: num_items={num_items}")
    if isinstance(topk_lists, np.ndarray):
        ids = topk_lists.ravel()
    else:
        arrays = [np.asarray(x).ravel() for x in topk_lists]
        ids = np.concatenate(arrays) if arrays else np.zeros(0, np.int64)
    ids = ids[(ids >= FIRST_ITEM_ID) & (ids < num_items)]
    return float(np.unique(ids).size / (num_items - FIRST_ITEM_ID))


def summarize(
    ranks: np.ndarray,
    ks: Sequence[int] = (1, 5, 10, 20),
    topk: np.ndarray | None = None,
    num_items: int | None = None,
) -> dict[str, float]:
    """All metrics in one flat dict of Python floats.

    Args:
        ranks: int `(n,)` 0-based target ranks; `MISS_RANK` is a miss in every metric.
        ks: cut-offs; each adds `hr@k`, `ndcg@k`, `recall@k`, `precision@k`, `f1@k`.
        topk: optional `(n, K)` recommended ids (best first) with `K >= max(ks)`; adds
            `coverage@k` computed from the first `k` columns.
        num_items: vocabulary size; required with `topk`.

    Returns:
        Dict with the per-`k` metrics, `"mrr"` and `"users"` (the number of users, as float).

    Example:
    >>> out = summarize(np.array([0, 1, 3]), ks=(1,))
    >>> out["hr@1"], out["users"]
    (0.3333333333333333, 3.0)
    """
    ranks = _check_ranks(ranks)
    ks = check_cutoffs(ks)
    if topk is not None:
        topk = np.asarray(topk)
        if num_items is None:
            raise ValueError("num_items is required when topk is given.")
        if topk.ndim != 2 or topk.shape[0] != ranks.shape[0] or topk.shape[1] < max(ks):
            raise ValueError(
                f"topk must have shape ({ranks.shape[0]}, >={max(ks)}). "
                f"Received: topk.shape={topk.shape}"
            )
    out: dict[str, float] = {}
    for k in ks:
        out[f"hr@{k}"] = hit_rate(ranks, k)
        out[f"ndcg@{k}"] = ndcg(ranks, k)
        out[f"recall@{k}"] = recall(ranks, k)
        out[f"precision@{k}"] = precision(ranks, k)
        out[f"f1@{k}"] = f1(ranks, k)
        if topk is not None:
            out[f"coverage@{k}"] = coverage(topk[:, :k], num_items)
    out["mrr"] = mrr(ranks)
    out["users"] = float(ranks.shape[0])
    return out
