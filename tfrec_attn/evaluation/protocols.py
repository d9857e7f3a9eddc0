"""Leave-one-out evaluation protocols: rank each user's held-out target given the history.

- `"full"`: the target competes with every real item (ids `2 .. vocab_size - 1`). With
  `exclude_history`, items already in the user's history are removed from the candidates, as
  the exported recommender removes them from its top-k. A target that is itself in the history
  (a repeat) is then removed too and counts as a miss in every metric (its rank is
  `metrics.MISS_RANK`: no hit at any cut-off, reciprocal rank 0): keeping it (the earlier
  rule) leaked the answer, since a scorer that ranks all history items first would find the
  target alone among them at rank 1. On data without repeats (MovieLens ratings) both rules
  agree.
- `"sampled"` / `"sampled-N"`: the target competes with `N` (default `num_negatives`) distinct
  real items drawn uniformly among those neither in the history nor equal to the target, as in
  SASRec (Kang & McAuley, 2018). Negatives come from one `np.random.default_rng(seed)` consumed
  user by user in input order, so results do not depend on `batch_size`.

Ties count against the target (see `metrics`). Coverage is reported for `"full"` only.

Example:
>>> def oracle(batch):  # knows each user's next item is last item + 1
...     scores = np.zeros((len(batch), 10))
...     scores[np.arange(len(batch)), [h[-1] + 1 for h in batch]] = 1.0
...     return scores
>>> histories = [np.array([2, 3]), np.array([5])]
>>> evaluate(oracle, histories, np.array([4, 6]), vocab_size=10, ks=(1,))["hr@1"]
1.0
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence

import numpy as np

from tfrec_attn.evaluation._ids import FIRST_ITEM_ID, PAD_ID
from tfrec_attn.evaluation.metrics import (
    MISS_RANK,
    check_cutoffs,
    ranks_from_scores,
    summarize,
)

ScoreFn = Callable[[list[np.ndarray]], np.ndarray]


def topk_from_scores(
    scores: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None = None
) -> np.ndarray:
    """Top-`k` real item ids per row, best first; ties go to the lower id.

    Args:
        scores: float `(B, vocab_size)` scores over all ids. Padding and OOV ids are never returned.
        k: list length, at most `vocab_size - 2`.
        exclude: optional per-row arrays of ids to leave out (e.g. the history).

    Returns:
        int64 `(B, k)`. If a row has fewer than `k` candidates left, its tail is `PAD_ID` (0).

    Example:
    >>> topk_from_scores(np.array([[9.0, 9.0, 0.1, 0.7, 0.7, 0.3]]), k=3).tolist()
    [[3, 4, 5]]
    >>> topk_from_scores(np.array([[0.0, 0.0, 0.1, 0.7, 0.2]]), 2, [np.array([3])]).tolist()
    [[4, 2]]
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D (B, vocab_size). Received: shape={scores.shape}")
    num_real = scores.shape[1] - FIRST_ITEM_ID
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= num_real:
        raise ValueError(f"k must be in [1, {num_real}]. Received: k={k!r}")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN; the top-k would be undefined.")
    excluded = _exclusion_mask(scores.shape, exclude)
    return _topk(scores, excluded, int(k))


def _exclusion_mask(
    shape: tuple[int, ...], exclude: Sequence[np.ndarray] | None, keep: np.ndarray | None = None
) -> np.ndarray:
    """Boolean `(B, V)`: True for padding/OOV and for `exclude[b]` ids, except `keep[b]`."""
    excluded = np.zeros(shape, dtype=bool)
    excluded[:, :FIRST_ITEM_ID] = True
    if exclude is not None:
        if len(exclude) != shape[0]:
            raise ValueError(
                f"exclude must hold one array per row ({shape[0]}). Received: {len(exclude)}"
            )
        ids = [np.asarray(x, dtype=np.int64).ravel() for x in exclude]
        rows = np.repeat(np.arange(shape[0]), [x.size for x in ids])
        cols = np.concatenate(ids) if ids else np.zeros(0, np.int64)
        excluded[rows, cols] = True
    if keep is not None:
        excluded[np.arange(shape[0]), keep] = False
    return excluded


def _topk(scores: np.ndarray, excluded: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k in O(B * V): threshold by partition, then break ties by lower id."""
    masked = scores.astype(np.float64)  # a copy; a model's own -inf still beats excluded ids
    np.maximum(masked, np.finfo(np.float64).min, out=masked)
    masked[excluded] = -np.inf
    cut = masked.shape[1] - k
    threshold = np.partition(masked, cut, axis=1)[:, cut, None]  # k-th largest per row
    chosen = masked >= threshold
    tied = chosen.sum(axis=1) > k
    if tied.any():  # keep only the lowest ids among those tied at the threshold
        rows, row_threshold = masked[tied], threshold[tied]
        above, ties = rows > row_threshold, rows == row_threshold
        need = k - above.sum(axis=1, keepdims=True)
        chosen[tied] = above | (ties & (np.cumsum(ties, axis=1) <= need))
    ids = np.nonzero(chosen)[1].reshape(scores.shape[0], k)  # ascending id within each row
    order = np.argsort(-np.take_along_axis(masked, ids, axis=1), axis=1, kind="stable")
    ids = np.take_along_axis(ids, order, axis=1)
    ids[np.take_along_axis(excluded, ids, axis=1)] = PAD_ID
    return ids.astype(np.int64)


_SAMPLED = re.compile(r"sampled(?:-(\d+))?")  # "sampled" or "sampled-N"


def is_protocol_name(protocol) -> bool:
    """Whether `protocol` is spelt as one (`full`, `sampled`, `sampled-N`); `parse_protocol`
    also checks that N is at least 1.

    >>> is_protocol_name("sampled-0"), is_protocol_name("Full")
    (True, False)
    """
    return protocol == "full" or _SAMPLED.fullmatch(str(protocol)) is not None


def parse_protocol(protocol: str, num_negatives: int) -> int | None:
    """Number of sampled negatives for `protocol`, or `None` for the full protocol.

    Example:
    >>> parse_protocol("sampled-50", 100), parse_protocol("sampled", 100), parse_protocol("full", 1)
    (50, 100, None)
    """
    if protocol == "full":
        return None
    match = _SAMPLED.fullmatch(str(protocol))
    if match is None:
        raise ValueError(
            f"protocol must be 'full', 'sampled' or 'sampled-N'. Received: protocol={protocol!r}"
        )
    count = int(match.group(1)) if match.group(1) else num_negatives
    if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 1:
        raise ValueError(f"protocol {protocol!r} must sample at least 1 negative "
                         f"(num_negatives={count!r})")
    return int(count)


def _forbidden(history: np.ndarray, target: int) -> np.ndarray:
    """The real ids a user's negatives may not be: its history's and its target."""
    history = np.asarray(history)
    return np.unique(np.append(history[history >= FIRST_ITEM_ID], target))


def fewest_negatives(histories, targets, vocab_size: int) -> int | None:
    """The fewest real items outside a user's history and target over these users: the most
    negatives `sample_negatives` can draw for every one of them; `None` without users.

    >>> fewest_negatives([np.array([0, 2, 3])], [4], 8)
    3
    """
    return min((vocab_size - FIRST_ITEM_ID - _forbidden(history, target).size
                for history, target in zip(histories, targets)), default=None)


def sample_negatives(
    rng: np.random.Generator, history: np.ndarray, target: int, vocab_size: int, count: int
) -> np.ndarray:
    """`count` distinct real ids, uniform among those not in `history` and not `target`.

    Example:
    >>> neg = sample_negatives(np.random.default_rng(0), np.array([2, 3]), 4, 8, 3)
    >>> sorted(neg.tolist())
    [5, 6, 7]
    """
    forbidden = _forbidden(history, target)
    pool = vocab_size - FIRST_ITEM_ID - forbidden.size
    if pool < count:
        raise ValueError(
            f"num_negatives={count} exceeds the {pool} real items outside a user's history "
            f"(vocab_size={vocab_size})."
        )
    if pool < 4 * count:  # dense case: sample from the explicit allowed set
        allowed = np.setdiff1d(np.arange(FIRST_ITEM_ID, vocab_size), forbidden)
        return rng.choice(allowed, size=count, replace=False)
    chosen = np.zeros(0, dtype=np.int64)
    while chosen.size < count:  # rejection sampling; first distinct draws are a uniform subset
        draws = rng.integers(FIRST_ITEM_ID, vocab_size, size=2 * count)
        draws = np.concatenate([chosen, draws[~np.isin(draws, forbidden)]])
        _, first = np.unique(draws, return_index=True)
        chosen = draws[np.sort(first)][:count]
    return chosen


def _validate_inputs(
    histories: Sequence[np.ndarray], targets: np.ndarray, vocab_size: int, batch_size: int
) -> tuple[list[np.ndarray], np.ndarray]:
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int | np.integer):
        raise ValueError(f"vocab_size must be an integer. Received: vocab_size={vocab_size!r}")
    if vocab_size <= FIRST_ITEM_ID:
        raise ValueError(f"vocab_size must exceed {FIRST_ITEM_ID}. Received: {vocab_size}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer. Received: {batch_size!r}")
    targets = np.asarray(targets)
    if targets.ndim != 1 or not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(
            f"targets must be a 1-D integer array. Received: shape={targets.shape}, "
            f"dtype={targets.dtype}"
        )
    if len(histories) != targets.shape[0]:
        raise ValueError(
            f"histories and targets must have the same length. Received: "
            f"len(histories)={len(histories)}, len(targets)={targets.shape[0]}"
        )
    if targets.size == 0:
        raise ValueError("histories and targets are empty; nothing to evaluate.")
    if targets.min() < FIRST_ITEM_ID or targets.max() >= vocab_size:
        raise ValueError(
            f"targets must be real item ids in [{FIRST_ITEM_ID}, {vocab_size}). "
            f"Received: min={targets.min()}, max={targets.max()}"
        )
    histories = [np.asarray(h, dtype=np.int64).ravel() for h in histories]
    lengths = [h.size for h in histories]
    flat = np.concatenate(histories) if sum(lengths) else np.zeros(0, np.int64)
    if flat.size and (flat.min() < 0 or flat.max() >= vocab_size):
        raise ValueError(
            f"histories must hold ids in [0, {vocab_size}). "
            f"Received: min={flat.min()}, max={flat.max()}"
        )
    return histories, targets.astype(np.int64)


def _score_batch(score_fn: ScoreFn, batch: list[np.ndarray], vocab_size: int) -> np.ndarray:
    scores = np.asarray(score_fn(batch))
    expected = (len(batch), vocab_size)
    if scores.shape != expected:
        raise ValueError(
            f"score_fn must return scores of shape (batch, vocab_size) = {expected}. "
            f"Received: {scores.shape}"
        )
    if np.isnan(scores).any():
        raise ValueError("score_fn returned NaN scores.")
    return scores


def evaluate(
    score_fn: ScoreFn,
    histories: Sequence[np.ndarray],
    targets: np.ndarray,
    vocab_size: int,
    protocol: str = "full",
    ks: Sequence[int] = (1, 5, 10, 20),
    exclude_history: bool = True,
    num_negatives: int = 100,
    seed: int = 0,
    batch_size: int = 512,
    progress: bool = False,
    return_ranks: bool = False,
) -> dict[str, float] | tuple[dict[str, float], np.ndarray]:
    """Rank each user's held-out target and summarize the ranks.

    Args:
        score_fn: maps a list of `B` histories to float scores `(B, vocab_size)` over all ids.
        histories: one chronological 1-D id array per user.
        targets: int `(n,)` held-out next items, real ids in `[2, vocab_size)`.
        vocab_size: id-space size, padding and OOV included.
        protocol: `"full"`, `"sampled"` (uses `num_negatives`) or `"sampled-N"` (N wins).
        ks: metric cut-offs.
        exclude_history: full protocol only: drop history items from the candidates; a
            target in the history is then a miss (see the module docstring). Sampled
            negatives are always drawn outside the history (the SASRec paper's protocol, which
            assumes no repeats: the returned `repeat_targets` says how many there were).
        num_negatives: negatives per user for `"sampled"`.
        seed: seeds the negative sampler.
        batch_size: users per `score_fn` call; does not change the results.
        progress: print users done to stderr after each batch.
        return_ranks: also return each user's 0-based target rank (input order), e.g. for
            per-user metrics (`metrics.ndcg_gains`) and paired comparisons. Negatives depend
            only on the histories, targets and `seed`, never on the scores, so two scorers
            evaluated with the same `seed` are ranked against the same candidates.

    Returns:
        `metrics.summarize` output: `hr@k`, `ndcg@k`, `recall@k`, `precision@k`, `f1@k`,
        `coverage@k` (full protocol only), `mrr`, `users`, `repeat_targets` (the fraction of
        targets already in their history); all Python floats. With `return_ranks`,
        `(summary, ranks)` with int64 `ranks` of shape `(n,)`; a removed repeat target has
        rank `metrics.MISS_RANK` (a miss at every cut-off, reciprocal rank 0).

    Example:
    >>> const = lambda batch: np.ones((len(batch), 6))
    >>> evaluate(const, [np.array([2])], np.array([3]), 6, ks=(1,))["mrr"]  # 3 candidates
    0.3333333333333333
    >>> evaluate(const, [np.array([2])], np.array([3]), 6, ks=(1,), return_ranks=True)[1]
    array([2])
    >>> evaluate(const, [np.array([2])], np.array([2]), 6, ks=(1,))["mrr"]  # a repeat: a miss
    0.0
    """
    histories, targets = _validate_inputs(histories, targets, vocab_size, batch_size)
    count = parse_protocol(protocol, num_negatives)
    ks = check_cutoffs(ks)
    kmax = max(ks)
    if count is None and kmax > vocab_size - FIRST_ITEM_ID:
        raise ValueError(f"max(ks)={kmax} exceeds the {vocab_size - FIRST_ITEM_ID} real items.")
    rng = np.random.default_rng(seed)
    ranks, topks = [], []
    for start in range(0, len(histories), batch_size):
        batch = histories[start : start + batch_size]
        batch_targets = targets[start : start + batch_size]
        scores = _score_batch(score_fn, batch, vocab_size)
        if count is None:
            rank, topk = _rank_full(scores, batch, batch_targets, exclude_history, kmax)
            topks.append(topk)
        else:
            rank = _rank_sampled(scores, batch, batch_targets, rng, count)
        ranks.append(rank)
        if progress:
            print(f"evaluate: {start + len(batch)}/{len(histories)} users", file=sys.stderr)
    topk = np.concatenate(topks) if topks else None
    ranks = np.concatenate(ranks)
    summary = summarize(ranks, ks, topk=topk, num_items=vocab_size)
    repeats = sum(int(t in set(h.tolist())) for h, t in zip(histories, targets, strict=True))
    summary["repeat_targets"] = float(repeats / len(targets))
    return (summary, ranks) if return_ranks else summary


def _rank_full(
    scores: np.ndarray,
    batch: list[np.ndarray],
    targets: np.ndarray,
    exclude_history: bool,
    kmax: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Ranks among all non-excluded real items, and the top-`kmax` lists."""
    excluded = _exclusion_mask(scores.shape, batch if exclude_history else None)
    rows = np.arange(len(batch))
    target_scores = scores[rows, targets]
    ranks = ((scores >= target_scores[:, None]) & ~excluded).sum(axis=1) - 1
    ranks[excluded[rows, targets]] = MISS_RANK  # a removed repeat target: never ranked
    return ranks.astype(np.int64), _topk(scores, excluded, kmax)


def _rank_sampled(
    scores: np.ndarray,
    batch: list[np.ndarray],
    targets: np.ndarray,
    rng: np.random.Generator,
    count: int,
) -> np.ndarray:
    """Ranks of each target among itself and `count` sampled negatives (target in column 0)."""
    vocab_size = scores.shape[1]
    negatives = [sample_negatives(rng, h, t, vocab_size, count) for h, t in zip(batch, targets)]
    candidates = np.concatenate([targets[:, None], np.stack(negatives)], axis=1)
    return ranks_from_scores(
        np.take_along_axis(scores, candidates, axis=1), np.zeros(len(batch), np.int64)
    )
