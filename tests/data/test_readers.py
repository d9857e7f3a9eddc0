"""Tests for `tfrec_attn.data.readers`: every format, clean and malformed files."""

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tfrec_attn.data import (
    DataError,
    DataWarning,
    ReadReport,
    read_interactions,
    read_movielens,
    read_sasrec,
    read_sequences,
    read_table,
)

ML_100K = Path("/work/shared/data/ml-100k")

# (format, file name, content, read kwargs). Every file holds the same 4 interactions.
CLEAN = [
    ("sasrec", "seq.txt", "1 10\n1 11\n2 12\n10 13\n", {}),
    ("movielens", "u.data", "1\t11\t5\t200\n2\t12\t1\t50\n1\t10\t3\t100\n10\t13\t2\t1\n", {}),
    ("movielens", "ratings.dat", "1::11::5::200\n2::12::1::50\n1::10::3::100\n10::13::2::1\n", {}),
    ("movielens", "ratings.csv",
     "userId,movieId,rating,timestamp\n1,11,5,200\n2,12,1,50\n1,10,3,100\n10,13,2,1\n", {}),
    ("csv", "log.csv", "uid,sku,ts\n1,11,200\n2,12,50\n1,10,100\n10,13,1\n",
     {"user_col": "uid", "item_col": "sku", "time_col": "ts"}),
    ("sequences", "users.txt", "10 13\n1 10 11\n2 12\n", {}),
]


def _write(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / name
    path.write_text(content)
    return path


@pytest.mark.parametrize("fmt,name,content,kwargs", CLEAN)
def test_clean_files_give_sorted_frame(tmp_path, fmt, name, content, kwargs):
    frame = read_interactions(_write(tmp_path, name, content), fmt, **kwargs)
    assert list(frame.columns) == ["user", "item", "timestamp"]
    assert frame["user"].tolist() == ["1", "1", "2", "10"]  # numeric user order, stable
    assert frame["item"].tolist() == ["10", "11", "12", "13"]
    assert frame["timestamp"].dtype == np.int64
    report = frame.attrs["report"]
    assert isinstance(report, ReadReport)
    assert (report.rows, report.skipped, report.problems) == (4, 0, [])


def test_sasrec_uses_line_order_as_time(tmp_path):
    path = _write(tmp_path, "seq.txt", "5 a\n\n4 b\n5 c\n")
    frame = read_sasrec(path)
    assert frame.values.tolist() == [["4", "b", 3], ["5", "a", 1], ["5", "c", 4]]


def test_sequences_match_the_sasrec_lines_they_stand_for(tmp_path):
    users = _write(tmp_path, "users.txt", "5 a c\n\n4 b\n")
    frame = read_sequences(users)
    assert frame.values.tolist() == [["4", "b", 3], ["5", "a", 1], ["5", "c", 2]]
    pairs = read_sasrec(_write(tmp_path, "seq.txt", "5 a\n5 c\n4 b\n"))
    pd.testing.assert_frame_equal(frame[["user", "item"]], pairs[["user", "item"]])


def test_sequences_refuse_a_users_second_line(tmp_path):
    """One line per user: a second line of the same user was silently appended to the first.
    It is a malformed line now (named), or skipped with the first line kept."""
    users = _write(tmp_path, "users.txt", "1 5 6\n2 7\n1 8\n")
    with pytest.raises(DataError, match=r"users\.txt, line 3: user '1' already has line 1 "
                                        r"\(one line per user\)"):
        read_sequences(users)
    with pytest.warns(DataWarning, match="skipped 1 malformed line"):
        frame = read_sequences(users, on_error="skip")
    assert frame[["user", "item"]].values.tolist() == [["1", "5"], ["1", "6"], ["2", "7"]]
    assert frame.attrs["report"]["skipped"] == 1


def test_movielens_directory_detection(tmp_path):
    _write(tmp_path, "ratings.dat", "3::7::5::1\n")
    assert read_movielens(tmp_path)["item"].tolist() == ["7"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no MovieLens ratings file"):
        read_movielens(empty)


def test_parquet_round_trip_and_datetimes(tmp_path):
    path = tmp_path / "log.parquet"
    pd.DataFrame({
        "u": [2, 1, 1],
        "i": ["x", "y", "z"],
        "t": pd.to_datetime(["2020-01-01", "2020-01-03", "2020-01-02"]),
    }).to_parquet(path)
    frame = read_interactions(path, "parquet", user_col="u", item_col="i", time_col="t")
    assert frame["item"].tolist() == ["z", "y", "x"]
    assert frame["user"].tolist() == ["1", "1", "2"]
    assert frame["timestamp"].iloc[-1] == 1577836800  # 2020-01-01 in epoch seconds


def test_table_without_time_column_uses_row_order(tmp_path):
    path = _write(tmp_path, "log.csv", "user,item\nb,1\na,2\nb,3\n")
    frame = read_table(path, time_col=None)
    assert frame.values.tolist() == [["a", "2", 3], ["b", "1", 2], ["b", "3", 4]]


# (format, file name, content, kwargs, bad line, message fragment)
MALFORMED = [
    ("sasrec", "seq.txt", "1 10\n1 11 12\n1 13\n", {}, 2, "expected 2 fields, got 3"),
    ("sequences", "users.txt", "1 10\n2\n3 13\n", {}, 2, "user '2' has no items"),
    ("movielens", "u.data", "1\t10\t5\t1\n1\t10\t5\n1\t10\t5\t3\n", {}, 2, "expected 4 fields"),
    ("movielens", "u.data", "1\t10\t5\t1\n1\tabc\t5\t2\n1\t10\t5\t3\n", {}, 2,
     "non-numeric item id 'abc'"),
    ("movielens", "ratings.dat", "1::10::5::1\n1::10::5::x\n1::10::5::3\n", {}, 2,
     "non-numeric timestamp 'x'"),
    ("movielens", "ratings.csv", "userId,movieId,rating,timestamp\n1,2,3,4\nu7,2,3,5\n1,2,3,6\n",
     {}, 3, "non-numeric user id 'u7'"),
    ("csv", "log.csv", "user,item,timestamp\na,b,1\na,,2\na,c,3\n", {}, 3, "empty item id"),
    ("csv", "log.csv", "user,item,timestamp\na,b,1\na,c,2,9\na,c,3\n", {}, 3, "expected 3 fields"),
    ("csv", "log.csv", "user,item,timestamp\na,b,1\na,c,later\na,c,3\n", {}, 3,
     "non-numeric timestamp 'later'"),
]


@pytest.mark.parametrize("fmt,name,content,kwargs,line,message", MALFORMED)
def test_malformed_line_raises_with_file_and_line(tmp_path, fmt, name, content, kwargs, line,
                                                  message):
    path = _write(tmp_path, name, content)
    with pytest.raises(DataError, match=message) as info:
        read_interactions(path, fmt, **kwargs)
    assert name in str(info.value)
    assert f"line {line}:" in str(info.value)
    assert info.value.line == line


@pytest.mark.parametrize("fmt,name,content,kwargs,line,message", MALFORMED)
def test_skip_mode_counts_and_warns_once(tmp_path, fmt, name, content, kwargs, line, message):
    path = _write(tmp_path, name, content)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = read_interactions(path, fmt, on_error="skip", **kwargs)
    data_warnings = [w for w in caught if issubclass(w.category, DataWarning)]
    assert len(data_warnings) == 1
    assert "skipped 1" in str(data_warnings[0].message)
    report = frame.attrs["report"]
    assert (report.rows, report.skipped) == (2, 1)
    assert report.problems[0].startswith(f"line {line}:") and message in report.problems[0]


def test_skip_mode_keeps_at_most_20_messages(tmp_path):
    path = _write(tmp_path, "seq.txt", "1 2\n" + "1 2 3\n" * 30)
    with pytest.warns(DataWarning, match="skipped 30"):
        report = read_sasrec(path, on_error="skip").attrs["report"]
    assert report.skipped == 30 and len(report.problems) == 20


def test_skip_mode_with_no_valid_line_raises(tmp_path):
    path = _write(tmp_path, "seq.txt", "1 2 3\n4\n")
    with pytest.raises(DataError, match="no valid rows"):
        read_sasrec(path, on_error="skip")


@pytest.mark.parametrize("name,content,kwargs,missing", [
    ("ratings.csv", "userId,itemId,rating,timestamp\n1,2,3,4\n", {}, "movieId"),
    ("log.csv", "user,item,time\n1,2,3\n", {}, "timestamp"),
    ("log.csv", "a,b,c\n1,2,3\n", {"user_col": "a", "item_col": "b", "time_col": "when"}, "when"),
])
def test_missing_column_names_it_and_present_columns(tmp_path, name, content, kwargs, missing):
    path = _write(tmp_path, name, content)
    fmt = "movielens" if name == "ratings.csv" else "csv"
    for on_error in ("raise", "skip"):
        with pytest.raises(DataError, match=f"missing column '{missing}'") as info:
            read_interactions(path, fmt, on_error=on_error, **kwargs)
        assert "present columns" in str(info.value) and name in str(info.value)


# (file name, content, read kwargs, duplicated column, header line). The header is resolved
# before either parser runs: the clean file and the one with a trailing blank line both raise.
DUPLICATED = [
    ("log.csv", "user,item,timestamp,item\nu,a,1,z\nu,b,2,y\n", {}, "item", 1),
    ("log.tsv", "user\titem\ttimestamp\tuser\nu\ta\t1\tv\n", {}, "user", 1),
    ("log.csv", "\nuser,item, timestamp,timestamp\nu,a,1,2\n", {}, "timestamp", 2),
    ("log.csv", "user,item,timestamp,r,r\nu,a,1,0,1\n", {"reward_col": "r"}, "r", 1),
    ("ratings.csv", "userId,movieId,rating,timestamp,movieId\n1,2,3,4,5\n", {}, "movieId", 1),
]


@pytest.mark.parametrize("name,content,kwargs,column,line", DUPLICATED)
@pytest.mark.parametrize("tail", ["", "\n"])
def test_duplicated_column_names_file_line_and_column(tmp_path, name, content, kwargs, column,
                                                      line, tail):
    path = _write(tmp_path, name, content + tail)
    fmt = "movielens" if name == "ratings.csv" else "csv"
    for on_error in ("raise", "skip"):
        with pytest.raises(DataError, match=f"duplicated column '{column}'") as info:
            read_interactions(path, fmt, on_error=on_error, **kwargs)
        assert str(info.value).startswith(f"{path}, line {line}: ")


def test_duplicated_column_that_is_not_read_is_allowed(tmp_path):
    path = _write(tmp_path, "log.csv", "user,item,timestamp,note,note,,\nu,a,1,x,y,,\n")
    assert read_table(path).values.tolist() == [["u", "a", 1]]


def test_parquet_missing_column(tmp_path):
    path = tmp_path / "log.parquet"
    pd.DataFrame({"user": ["a"], "item": ["b"]}).to_parquet(path)
    with pytest.raises(DataError, match=r"missing column 'timestamp'; present columns: \['user'"):
        read_table(path)


@pytest.mark.parametrize("fmt,name,content", [
    ("sasrec", "seq.txt", ""),
    ("sasrec", "seq.txt", "\n  \n"),
    ("sequences", "users.txt", "\n"),
    ("movielens", "u.data", ""),
    ("csv", "log.csv", ""),
    ("csv", "log.csv", "user,item,timestamp\n"),
])
def test_empty_file_always_raises(tmp_path, fmt, name, content):
    path = _write(tmp_path, name, content)
    with pytest.raises(DataError, match="empty") as info:
        read_interactions(path, fmt, on_error="skip")
    assert name in str(info.value)


@pytest.mark.parametrize("fmt,name", [
    ("sasrec", "seq.txt"), ("sequences", "users.txt"), ("movielens", "u.data"),
    ("csv", "log.csv"), ("parquet", "log.parquet"),
])
def test_missing_file_always_raises(tmp_path, fmt, name):
    with pytest.raises(DataError, match="file not found") as info:
        read_interactions(tmp_path / name, fmt, on_error="skip")
    assert name in str(info.value)


def test_invalid_arguments(tmp_path):
    path = _write(tmp_path, "seq.txt", "1 2\n")
    with pytest.raises(ValueError, match="on_error must be one of"):
        read_sasrec(path, on_error="ignore")
    with pytest.raises(ValueError, match="format must be one of"):
        read_interactions(path, "json")
    with pytest.raises(DataError, match="expects a"):
        read_interactions(path, "parquet")
    assert not issubclass(DataWarning, DataError) and issubclass(DataError, ValueError)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@pytest.mark.parametrize("columns, message", [
    (("uid", "uid", "ts", None), "user_col and item_col name the same column 'uid'"),
    (("uid", "sku", "uid", None), "user_col and time_col name the same column 'uid'"),
    (("uid", "sku", "ts", "sku"), "item_col and reward_col name the same column 'sku'"),
])
def test_read_table_refuses_one_column_for_two_roles(tmp_path, suffix, columns, message):
    """`read_table(path, "uid", "uid", "ts")` read the user ids as items too."""
    frame = pd.DataFrame({"uid": ["u", "v"], "sku": ["a", "b"], "ts": [1, 2]})
    path = tmp_path / f"log{suffix}"
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path)
    user, item, time, reward = columns
    with pytest.raises(ValueError, match=message):
        read_table(path, user, item, time, reward_col=reward)


def test_fast_and_line_parsers_agree(tmp_path):
    rows = "".join(f"{u}\t{i}\t3\t{t}\n" for u, i, t in [(3, 5, 9), (1, 7, 2), (3, 1, 4)])
    clean = read_movielens(_write(tmp_path, "u.data", rows))
    odd = read_movielens(_write(tmp_path, "u1.base", "\n" + rows + "\n"))  # blank lines
    pd.testing.assert_frame_equal(clean, odd)


def test_movielens_100k():
    if not (ML_100K / "u.data").exists():
        pytest.skip(f"{ML_100K} not available")
    frame = read_movielens(ML_100K)
    assert len(frame) == 100_000
    assert frame["user"].nunique() == 943 and frame["item"].nunique() == 1682
    assert frame.attrs["report"].skipped == 0
    ordered = frame.groupby("user", sort=False)["timestamp"].apply(
        lambda t: t.is_monotonic_increasing)
    assert ordered.all()


# Ratings / rewards: (format, file name, content, kwargs, column). Every file holds the CLEAN
# interactions with values 5, 1, 3, 2 on lines (user 1 @200, user 2, user 1 @100, user 10).
WITH_VALUES = [
    ("movielens", "u.data", CLEAN[1][2], {"with_rating": True}, "rating"),
    ("movielens", "ratings.dat", CLEAN[2][2], {"with_rating": True}, "rating"),
    ("movielens", "ratings.csv", CLEAN[3][2], {"with_rating": True}, "rating"),
    ("csv", "log.csv", "uid,sku,ts,clicked\n1,11,200,5\n2,12,50,1\n1,10,100,3\n10,13,1,2\n",
     {"user_col": "uid", "item_col": "sku", "time_col": "ts", "reward_col": "clicked"}, "reward"),
    ("csv", "log.tsv", "user\titem\ttimestamp\tr\n1\t11\t200\t5.0\n2\t12\t50\t1\n1\t10\t100\t3\n"
     "10\t13\t1\t2\n", {"reward_col": "r"}, "reward"),
]


@pytest.mark.parametrize("fmt,name,content,kwargs,column", WITH_VALUES)
def test_ratings_and_rewards_follow_their_rows(tmp_path, fmt, name, content, kwargs, column):
    path = _write(tmp_path, name, content)
    frame = read_interactions(path, fmt, **kwargs)
    assert list(frame.columns) == ["user", "item", "timestamp", column]
    assert frame["item"].tolist() == ["10", "11", "12", "13"]
    assert frame[column].dtype == np.float64
    assert frame[column].tolist() == [3.0, 5.0, 1.0, 2.0]
    slow = read_interactions(_write(tmp_path, "odd_" + name, "\n" + content), fmt, **kwargs)
    pd.testing.assert_frame_equal(frame, slow)  # the line parser agrees with the fast path
    default = {k: v for k, v in kwargs.items() if k not in ("with_rating", "reward_col")}
    assert list(read_interactions(path, fmt, **default).columns) == ["user", "item", "timestamp"]


def test_parquet_reward_column(tmp_path):
    path = tmp_path / "log.parquet"
    pd.DataFrame({"u": ["b", "a", "a"], "i": ["x", "y", "z"], "t": [1, 3, 2],
                  "clicked": [True, False, True]}).to_parquet(path)
    frame = read_table(path, "u", "i", "t", reward_col="clicked")
    assert frame.values.tolist() == [["a", "z", 2, 1.0], ["a", "y", 3, 0.0], ["b", "x", 1, 1.0]]


# (format, file name, content, kwargs, bad line, message fragment)
MALFORMED_VALUES = [
    ("movielens", "u.data", "1\t10\t5\t1\n1\t11\tfive\t2\n1\t12\t4\t3\n", {"with_rating": True},
     2, "non-numeric rating 'five'"),
    ("movielens", "ratings.csv", "userId,movieId,rating,timestamp\n1,2,3,4\n1,3,,5\n1,4,2,6\n",
     {"with_rating": True}, 3, "missing rating"),
    ("csv", "log.csv", "user,item,timestamp,r\na,b,1,1\na,c,2,yes\na,d,3,0\n",
     {"reward_col": "r"}, 3, "non-numeric reward 'yes'"),
    ("csv", "log.csv", "user,item,timestamp,r\na,b,1,1\na,c,2,inf\na,d,3,0\n",
     {"reward_col": "r"}, 3, "non-numeric reward 'inf'"),
]


@pytest.mark.parametrize("fmt,name,content,kwargs,line,message", MALFORMED_VALUES)
def test_malformed_reward_names_file_line_and_column(tmp_path, fmt, name, content, kwargs, line,
                                                     message):
    path = _write(tmp_path, name, content)
    with pytest.raises(DataError, match=message) as info:
        read_interactions(path, fmt, **kwargs)
    assert str(info.value).startswith(f"{path}, line {line}: ")
    with pytest.warns(DataWarning, match="skipped 1"):
        frame = read_interactions(path, fmt, on_error="skip", **kwargs)
    assert len(frame) == 2 and frame.attrs["report"].problems[0].startswith(f"line {line}:")
    flag = "with_rating" if fmt == "movielens" else "reward_col"
    unread = read_interactions(path, fmt, **{k: v for k, v in kwargs.items() if k != flag})
    assert len(unread) == 3  # the column is only checked when it is read


def test_malformed_parquet_reward_names_the_row(tmp_path):
    path = tmp_path / "log.parquet"
    pd.DataFrame({"user": ["a"] * 3, "item": ["x", "y", "z"], "timestamp": [1, 2, 3],
                  "r": ["1", "maybe", "0"]}).to_parquet(path)
    with pytest.raises(DataError, match=r"log.parquet, row 2: non-numeric reward 'maybe'"):
        read_table(path, reward_col="r")


@pytest.mark.parametrize("name", ["log.csv", "log.parquet"])
def test_missing_reward_column_is_named(tmp_path, name):
    path = tmp_path / name
    frame = pd.DataFrame({"user": ["a"], "item": ["b"], "timestamp": [1]})
    if name.endswith(".csv"):
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path)
    with pytest.raises(DataError, match=r"missing column 'clicked'; present columns: \['user'"):
        read_table(path, reward_col="clicked")


def test_movielens_100k_ratings():
    if not (ML_100K / "u.data").exists():
        pytest.skip(f"{ML_100K} not available")
    frame = read_movielens(ML_100K, with_rating=True)
    assert len(frame) == 100_000 and set(frame["rating"].unique()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert frame["rating"].mean() == pytest.approx(3.52986)  # the ML-100K README's ratings
    pd.testing.assert_frame_equal(frame.drop(columns="rating"), read_movielens(ML_100K))


@pytest.mark.parametrize("suffix", [".parquet", ".json"])
def test_a_frame_a_reader_returned_can_be_written(tmp_path, suffix):
    """pandas writes `attrs` as JSON into Parquet: the dataclass report made
    `read_sasrec(...).to_parquet(...)` fail with 'not JSON serializable'."""
    path = tmp_path / "log.txt"
    path.write_text("u1 a\nu1 b\nu2 a\n")
    frame = read_sasrec(path)
    assert frame.attrs["report"].rows == 3 and frame.attrs["report"]["skipped"] == 0
    if suffix == ".parquet":
        frame.to_parquet(tmp_path / "log.parquet")
        again = pd.read_parquet(tmp_path / "log.parquet")
        pd.testing.assert_frame_equal(again.reset_index(drop=True),
                                      frame.reset_index(drop=True), check_dtype=False)
    else:
        assert json.loads(json.dumps(frame.attrs))["report"]["rows"] == 3
