"""Settings a run chooses from its training data: max_len and dropout from history lengths,
exclude_seen from repeat consumption; anything the user set wins."""

import numpy as np
import pytest

from tfrec_attn.training.data_defaults import (
    choose_data_defaults,
    mean_length,
    repeat_rate,
)

LONG = [np.arange(2, 2 + 60)] * 4            # mean 60 events, no repeats
SHORT = [np.array([2, 3, 4, 5])] * 4          # mean 4 events, no repeats
REPEATING = [np.array([2, 3, 2, 3, 2])] * 4   # 3 of 4 later positions repeat


@pytest.mark.parametrize("train, max_len, dropout, exclude_seen", [
    (LONG, 200, 0.2, True), (SHORT, 50, 0.5, True), (REPEATING, 50, 0.5, False),
    ([np.arange(2, 52)] * 2, 50, 0.2, True),  # mean exactly 50: not long
    ([np.arange(2, 22)] * 2, 50, 0.5, True),  # mean exactly 20: sparse
    ([np.arange(2, 23)] * 2, 50, 0.2, True),  # mean 21: not sparse
])
def test_choices_follow_the_data(train, max_len, dropout, exclude_seen):
    fields, report = choose_data_defaults({}, train)
    assert fields == {"max_len": max_len, "dropout": dropout, "exclude_seen": exclude_seen}
    assert report["max_len"]["value"] == max_len and report["dropout"]["value"] == dropout
    assert report["exclude_seen"]["value"] is exclude_seen
    assert str(round(mean_length(train), 1)) in report["max_len"]["reason"]
    assert str(round(mean_length(train), 1)) in report["dropout"]["reason"]


def test_fields_the_user_set_are_kept_and_not_reported():
    fields, report = choose_data_defaults(
        {"max_len": 30, "dropout": 0.1, "exclude_seen": False}, LONG)
    assert fields == {"max_len": 30, "dropout": 0.1, "exclude_seen": False} and report == {}
    fields, report = choose_data_defaults({"max_len": 30}, SHORT)  # dropout still from data
    assert fields["dropout"] == 0.5 and set(report) == {"dropout", "exclude_seen"}


def test_bce_never_gets_exclude_seen():
    fields, report = choose_data_defaults({"loss": "bce"}, LONG)
    assert "exclude_seen" not in fields and set(report) == {"max_len", "dropout"}


def test_repeat_rate_counts_positions_after_the_first():
    assert repeat_rate(REPEATING) == pytest.approx(0.75)
    assert repeat_rate([np.array([2])]) == 0.0 and repeat_rate([]) == 0.0
    # 1 repeat in 100 later positions is not below the 1% threshold
    one_in_hundred = [np.concatenate([np.arange(2, 102), [2]])]
    assert repeat_rate(one_in_hundred) == pytest.approx(0.01)
    assert choose_data_defaults({}, one_in_hundred)[0]["exclude_seen"] is False
