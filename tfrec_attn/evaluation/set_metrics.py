"""Ranking metrics for several held-out items per user (set recommenders such as Mult-DAE).

The single-target metrics of `metrics.py` work from one target's rank; an autoencoder evaluated
on a fold-in / held-out split (`data.split_item_sets`) must find a whole held-out set `H` in its
top-`k` list. Following Liang et al. (2018, Mult-VAE):

- Recall@k `= |top-k ∩ H| / min(k, |H|)`: normalized so that a perfect list scores 1 even
  when `|H| > k`.
- NDCG@k `= DCG@k / IDCG@k`, `DCG@k = sum over ranks r < k with top[r] in H of 1 / log2(r + 2)`
  and `IDCG@k` the DCG of `min(k, |H|)` hits at the top.

Both are averaged over the users with at least one held-out item.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tfrec_attn.evaluation._ids import FIRST_ITEM_ID
from tfrec_attn.evaluation.metrics import check_cutoffs


def _check_recommended(recommended, num_users: int, ks: tuple[int, ...]) -> np.ndarray:
    recommended = np.asarray(recommended)
    if recommended.ndim != 2 or not np.issubdtype(recommended.dtype, np.integer):
        raise ValueError("recommended must be a 2-D integer array (users, K) of item ids. "
                         f"Received: shape {recommended.shape}, dtype {recommended.dtype}")
    if recommended.shape[0] != num_users:
        raise ValueError(f"recommended must have one row per held_out set ({num_users}). "
                         f"Received: {recommended.shape[0]} rows")
    if recommended.shape[1] < max(ks):
        raise ValueError(f"recommended must hold at least max(ks)={max(ks)} ids per row. "
                         f"Received: {recommended.shape[1]}")
    ordered = np.sort(recommended, axis=1)
    repeated = (ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= FIRST_ITEM_ID)
    if repeated.any():
        row = int(np.flatnonzero(repeated.any(axis=1))[0])
        raise ValueError(f"recommended[{row}] lists an item more than once; each row must be a "
                         "ranking of distinct ids (padding 0 may repeat).")
    return recommended


def set_ranking_metrics(recommended: np.ndarray, held_out: Sequence[np.ndarray],
                        ks: Sequence[int] = (20,)) -> dict[str, float]:
    """Mult-VAE's Recall@k and NDCG@k of top-k lists against each user's held-out set.

    Args:
        recommended: int `(n, K)` item ids per user, best first, `K >= max(ks)` (e.g.
            `topk_from_scores(scores, K, exclude=fold_in)`); padding (0) never hits.
        held_out: `n` 1-D int arrays of held-out ids; users with an empty one are skipped.
        ks: cut-offs.

    Returns:
        `{"recall@k", "ndcg@k"}` for each `k`, and `"users"`: how many users were averaged
        (as float).

    Example:
    >>> out = set_ranking_metrics(np.array([[5, 2, 7], [3, 4, 6]]),
    ...                           [np.array([2, 9]), np.array([], np.int64)], ks=(2,))
    >>> out["recall@2"], round(out["ndcg@2"], 4), out["users"]  # hit at rank 1 of 2
    (0.5, 0.3869, 1.0)
    """
    ks = check_cutoffs(ks)
    if isinstance(held_out, np.ndarray) and held_out.ndim != 1:
        raise ValueError("held_out must be a sequence of 1-D id arrays, one per user. "
                         f"Received: an array of shape {held_out.shape}")
    sets = [np.asarray(h).ravel() for h in held_out]
    recommended = _check_recommended(recommended, len(sets), ks)
    users = [row for row, h in enumerate(sets) if h.size]
    if not users:
        raise ValueError("held_out has no user with a held-out item; nothing to evaluate.")
    depth = max(ks)
    discounts = 1.0 / np.log2(np.arange(depth) + 2.0)
    hits = np.stack([np.isin(recommended[row, :depth], sets[row]) for row in users])
    sizes = np.array([len(np.unique(sets[row])) for row in users])
    out: dict[str, float] = {}
    for k in ks:
        found = hits[:, :k]
        ideal = np.minimum(sizes, k)
        out[f"recall@{k}"] = float(np.mean(found.sum(axis=1) / ideal))
        idcg = np.cumsum(discounts[:k])[ideal - 1]
        out[f"ndcg@{k}"] = float(np.mean((found * discounts[:k]).sum(axis=1) / idcg))
    out["users"] = float(len(users))
    return out
