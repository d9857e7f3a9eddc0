"""Tests for `tfrec_attn.data.synthetic`: determinism, schema and planted structure."""

import numpy as np
import pandas as pd
import pytest

from tfrec_attn.data import build_sequences, generate_synthetic, leave_one_out


@pytest.fixture(scope="module")
def log():
    return generate_synthetic(num_users=600, num_items=300, mean_length=20, seed=3)


def test_deterministic_per_seed(log):
    again = generate_synthetic(num_users=600, num_items=300, mean_length=20, seed=3)
    pd.testing.assert_frame_equal(log, again)
    pd.testing.assert_frame_equal(log.attrs["item_features"], again.attrs["item_features"])
    other = generate_synthetic(num_users=600, num_items=300, mean_length=20, seed=4)
    assert not log["item"].equals(other["item"])


def test_schema_and_lengths(log):
    assert list(log.columns) == ["user", "item", "timestamp"]
    assert log["timestamp"].dtype == np.int64
    assert isinstance(log["user"].iloc[0], str) and isinstance(log["item"].iloc[0], str)
    lengths = log.groupby("user").size()
    assert len(lengths) == 600 and lengths.min() >= 3
    assert 15 < lengths.mean() < 25 and lengths.std() > 3  # varied lengths around the mean
    ordered = log.groupby("user", sort=False)["timestamp"].apply(
        lambda t: t.is_monotonic_increasing)
    assert ordered.all()
    features = log.attrs["item_features"]
    assert len(features) == 300 and {"item", "genre", "popularity"} <= set(features.columns)
    assert features.filter(like="feature_").shape[1] == 4
    assert set(log["item"]) <= set(features["item"])
    groups = log.attrs["user_groups"]
    assert len(groups) == 600 and groups["group"].between(0, 7).all()


def test_feeds_the_sequence_pipeline(log):
    data = build_sequences(log)
    assert data.num_users == 600 and data.num_interactions == len(log)
    assert len(leave_one_out(data).test_targets) == 600


def _transitions(log):
    same_user = log["user"].to_numpy()[1:] == log["user"].to_numpy()[:-1]
    items = log["item"].to_numpy()
    return pd.DataFrame({"item": items[:-1][same_user], "successor": items[1:][same_user]})


def test_successor_links_are_detectable(log):
    links = log.attrs["successors"]
    transitions = _transitions(log)
    followed = transitions.merge(links, how="left", indicator=True)["_merge"] == "both"
    shuffled = transitions.assign(successor=np.random.default_rng(0).permutation(
        transitions["successor"].to_numpy()))
    chance = shuffled.merge(links, how="left", indicator=True)["_merge"] == "both"
    assert followed.mean() > 0.4  # planted: successor_prob=0.5 (+ chance hits)
    assert chance.mean() < 0.05


def test_popularity_and_genre_preferences(log):
    counts = log["item"].value_counts()
    assert counts.iloc[: len(counts) // 10].sum() / len(log) > 0.3  # top 10% of items
    genres = log.attrs["item_features"].set_index("item")["genre"]
    events = log.assign(genre=genres.loc[log["item"]].to_numpy()).merge(log.attrs["user_groups"])
    share = events.groupby("group")["genre"].apply(
        lambda g: g.value_counts(normalize=True).iloc[:3].sum())
    assert (share > 2 * 3 / 16).all()  # 3 preferred genres out of 16, well above uniform


def test_no_planted_sequences_when_successor_prob_is_zero():
    log = generate_synthetic(num_users=200, num_items=200, mean_length=10, successor_prob=0.0)
    followed = _transitions(log).merge(log.attrs["successors"], how="left", indicator=True)
    assert (followed["_merge"] == "both").mean() < 0.05


def test_invalid_arguments():
    with pytest.raises(ValueError, match="successor_prob"):
        generate_synthetic(num_users=2, num_items=5, successor_prob=1.5)
    with pytest.raises(ValueError, match="num_items"):
        generate_synthetic(num_users=2, num_items=1)


@pytest.mark.parametrize("kwargs, message", [
    ({"min_length": 5, "max_length": 3}, r"max_length must be in \[5, inf\]"),
    ({"num_genres": 0}, r"num_genres must be in \[1, inf\]"),
    ({"genres_per_group": -1}, r"genres_per_group must be in \[0, inf\]"),
    ({"zipf_exponent": -1}, r"zipf_exponent must be in \[0, inf\]"),
    ({"off_genre_weight": -0.1}, r"off_genre_weight must be in \[0, inf\]"),
    # a seed of None drew another log on every call; floats gave raw numpy errors
    ({"seed": None}, r"seed must be an int\. Received: seed=None"),
    ({"seed": -1}, r"seed must be in \[0, inf\]"),
    ({"seed": 1.5}, r"seed must be an int"),
    ({"num_items": 5.5}, r"num_items must be an int"),
    ({"num_users": 5.5}, r"num_users must be an int"),
    ({"num_genres": True}, r"num_genres must be an int"),
    ({"mean_length": "4"}, r"mean_length must be a number"),
])
def test_invalid_structure_arguments_are_named(kwargs, message):
    """Once accepted silently (users got fewer events than min_length, a negative skew) or a
    raw numpy error (no genres)."""
    with pytest.raises(ValueError, match=message):
        generate_synthetic(**{"num_users": 2, "num_items": 5, **kwargs})


def test_genres_per_group_beyond_the_genres_likes_them_all():
    frame = generate_synthetic(num_users=4, num_items=10, num_genres=2, genres_per_group=3)
    assert len(frame.attrs["group_genres"]) == 8 * 2  # every group likes both genres
    assert len(generate_synthetic(num_users=4, num_items=10, genres_per_group=0)) > 0
