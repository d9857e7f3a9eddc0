"""Synthetic interaction logs with planted structure, for tests and learning sanity checks.

Planted structure:
- **Popularity**: Zipf-like item weights `1 / rank**zipf_exponent` over a random item ranking.
- **Genres**: every item has one genre; item features are a genre centroid plus noise.
- **Groups**: every user belongs to a group that prefers `genres_per_group` genres (weight 1 vs
  `off_genre_weight`); "fresh" items are drawn from popularity x genre preference.
- **Sequences**: every item has 1-2 successors; with probability `successor_prob` the next event
  is a (uniformly chosen) successor of the previous item, otherwise a fresh item.
- **Lengths**: lognormal around `mean_length`, at least `min_length`, at most
  `max_length` (default `10 * mean_length`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tfrec_attn.data.parsing import build_frame

_START_TIME = 1_600_000_000  # 2020-09-13, epoch seconds
_TIME_SPAN = 365 * 24 * 3600


def _check(name: str, value: float, low: float, high: float = np.inf,
           integer: bool = False) -> None:
    number = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if not isinstance(value, number) or isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be {'an int' if integer else 'a number'}. "
                         f"Received: {name}={value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}]. Received: {name}={value}")


def _item_tables(rng: np.random.Generator, num_items: int, num_genres: int, num_features: int,
                 zipf_exponent: float) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Returns (popularity, successors (num_items, 2), item feature frame)."""
    rank = rng.permutation(num_items)
    popularity = 1.0 / (rank + 1.0) ** zipf_exponent
    popularity /= popularity.sum()
    genre = rng.integers(num_genres, size=num_items)
    successors = rng.integers(num_items - 1, size=(num_items, 2))
    successors += successors >= np.arange(num_items)[:, None]  # no self-successor
    single = rng.random(num_items) < 0.5
    successors[single, 1] = successors[single, 0]  # one distinct successor
    centroids = rng.normal(size=(num_genres, num_features))
    features = centroids[genre] + 0.5 * rng.normal(size=(num_items, num_features))
    frame = pd.DataFrame({"item": np.arange(1, num_items + 1).astype(str), "genre": genre,
                          "popularity": popularity})
    for k in range(num_features):
        frame[f"feature_{k}"] = features[:, k].astype(np.float32)
    return popularity, successors, frame


def _liked_genres(rng: np.random.Generator, num_groups: int, num_genres: int,
                  genres_per_group: int) -> np.ndarray:
    """Boolean `(num_groups, num_genres)`: the genres each group prefers."""
    liked = np.zeros((num_groups, num_genres), dtype=bool)
    for g in range(num_groups):
        liked[g, rng.choice(num_genres, size=min(genres_per_group, num_genres), replace=False)] = 1
    return liked


def group_item_distribution(popularity: np.ndarray, genre: np.ndarray, liked: np.ndarray,
                            off_genre_weight: float) -> np.ndarray:
    """`(num_groups, num_items)`: each group's distribution of "fresh" (non-successor) items.

    >>> group_item_distribution(np.array([0.5, 0.5]), np.array([0, 1]),
    ...                         np.array([[True, False]]), 0.25).tolist()
    [[0.8, 0.2]]
    """
    weights = popularity[None, :] * np.where(liked[:, genre], 1.0, off_genre_weight)
    return weights / weights.sum(axis=1, keepdims=True)


def _walk(rng: np.random.Generator, cdfs: np.ndarray, groups: np.ndarray,
          successors: np.ndarray, width: int, successor_prob: float) -> np.ndarray:
    """Item matrix `(num_users, width)`: successor steps mixed with fresh group-biased draws."""
    num_users, num_items = len(groups), cdfs.shape[1]
    matrix = np.empty((num_users, width), dtype=np.int64)
    uniform = rng.random((num_users, width))
    for g in range(len(cdfs)):
        rows = groups == g
        matrix[rows] = np.searchsorted(cdfs[g], uniform[rows], side="right")
    np.minimum(matrix, num_items - 1, out=matrix)
    follow = rng.random((num_users, width)) < successor_prob
    pick = rng.integers(2, size=(num_users, width))
    for t in range(1, width):  # vectorized over users, sequential over steps
        nxt = successors[matrix[:, t - 1], pick[:, t]]
        matrix[:, t] = np.where(follow[:, t], nxt, matrix[:, t])
    return matrix


def generate_synthetic(num_users: int = 2000, num_items: int = 1000, num_groups: int = 8,
                       mean_length: float = 30, seed: int = 0, num_genres: int = 16,
                       genres_per_group: int = 3, successor_prob: float = 0.5,
                       zipf_exponent: float = 1.0, off_genre_weight: float = 0.05,
                       min_length: int = 3, max_length: int | None = None,
                       num_features: int = 4) -> pd.DataFrame:
    """Generates a deterministic interaction log with planted sequential structure.

    Args:
        num_users: Users (ids `"1".."num_users"`).
        num_items: Items (ids `"1".."num_items"`); rare ones may never occur.
        num_groups: User groups with distinct genre preferences.
        mean_length: Typical events per user (lognormal, sigma 0.5).
        seed: Random seed; the same arguments give an identical frame.
        num_genres: Item genres.
        genres_per_group: Preferred genres per group.
        successor_prob: Probability the next item follows a successor link of the previous one.
        zipf_exponent: Popularity skew (0 = uniform).
        off_genre_weight: Relative weight of non-preferred genres.
        min_length: Minimum events per user.
        max_length: Maximum events per user (default `10 * mean_length`).
        num_features: Numeric content feature columns `feature_0..` in `item_features`.

    Returns:
        Frame `user` (str), `item` (str), `timestamp` (int64 epoch seconds) sorted by
        (user, timestamp), with `attrs`: `item_features` (item, genre, popularity, features),
        `user_groups` (user, group), `successors` (item, successor; one row per link),
        `group_genres` (group, genre; the preferred genres) and `params` (enough to rebuild the
        generating process: `evaluation.SyntheticOracle` does). (pandas compares `attrs` in
        `pd.concat`, which fails for DataFrame values: clear `attrs` on slices before
        concatenating them; `to_parquet` writes `attrs` as JSON, which fails for them too:
        clear them, `frame.attrs = {}`, before writing the frame to Parquet.)

    Example:
    >>> df = generate_synthetic(num_users=5, num_items=20, mean_length=4)
    >>> list(df.columns), df["user"].nunique(), bool((df.groupby("user").size() >= 3).all())
    (['user', 'item', 'timestamp'], 5, True)
    """
    _check("seed", seed, 0, integer=True)  # None would draw a new log on every call
    _check("num_users", num_users, 1, integer=True)
    _check("num_items", num_items, 2, integer=True)
    _check("num_groups", num_groups, 1, integer=True)
    _check("successor_prob", successor_prob, 0, 1)
    _check("min_length", min_length, 1, integer=True)
    _check("mean_length", mean_length, 1)
    _check("num_genres", num_genres, 1, integer=True)
    # more than num_genres: all of them; 0: none preferred (every genre weighs alike)
    _check("genres_per_group", genres_per_group, 0, integer=True)
    _check("zipf_exponent", zipf_exponent, 0)
    _check("off_genre_weight", off_genre_weight, 0)
    _check("num_features", num_features, 0, integer=True)
    if max_length:  # 0 / None: the default
        _check("max_length", max_length, min_length, integer=True)
    max_length = int(max_length or max(min_length, 10 * mean_length))
    rng = np.random.default_rng(seed)
    popularity, successors, items = _item_tables(rng, num_items, num_genres, num_features,
                                                 zipf_exponent)
    genre = items["genre"].to_numpy()
    liked = _liked_genres(rng, num_groups, num_genres, genres_per_group)
    cdfs = np.cumsum(popularity[None, :] * np.where(liked[:, genre], 1.0, off_genre_weight),
                     axis=1)
    cdfs /= cdfs[:, -1:]
    groups = rng.integers(num_groups, size=num_users)
    lengths = np.round(mean_length * rng.lognormal(-0.125, 0.5, size=num_users)).astype(int)
    lengths = np.clip(lengths, min_length, max_length)
    width = int(lengths.max())
    matrix = _walk(rng, cdfs, groups, successors, width, successor_prob)
    gaps = rng.exponential(3600.0, size=(num_users, width)).astype(np.int64) + 1
    starts = rng.integers(_START_TIME, _START_TIME + _TIME_SPAN, size=num_users)
    times = starts[:, None] + np.cumsum(gaps, axis=1)
    valid = np.arange(width)[None, :] < lengths[:, None]
    user_index = np.broadcast_to(np.arange(num_users)[:, None], valid.shape)[valid]
    frame = build_frame(user_index + 1, matrix[valid] + 1, times[valid].astype(np.int64))
    frame.attrs["item_features"] = items
    frame.attrs["user_groups"] = pd.DataFrame({"user": np.arange(1, num_users + 1).astype(str),
                                               "group": groups})
    links = pd.DataFrame({"item": np.repeat(items["item"].to_numpy(), 2),
                          "successor": (successors.ravel() + 1).astype(str)})
    frame.attrs["successors"] = links.drop_duplicates(ignore_index=True)
    group_genres = np.argwhere(liked)
    frame.attrs["group_genres"] = pd.DataFrame({"group": group_genres[:, 0],
                                                "genre": group_genres[:, 1]})
    frame.attrs["params"] = {"num_users": num_users, "num_items": num_items, "seed": seed,
                             "num_groups": num_groups, "mean_length": mean_length,
                             "successor_prob": successor_prob,
                             "off_genre_weight": off_genre_weight}
    return frame
