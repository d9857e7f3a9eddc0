"""Tests for `tfrec_attn.data.parsing` through the readers: the fast (pandas) and line-by-line
paths agree, integers are exact, files must be UTF-8 and uncompressed, lines end at `\\n`."""

import bz2
import gzip
import io
import lzma
import warnings
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from tfrec_attn.data import DataError, DataWarning, read_interactions, read_movielens

ML_100K = Path("/work/shared/data/ml-100k")
BIG = 2 ** 53  # 9007199254740992: the first integer float64 cannot tell from its successor


def _read(tmp_path: Path, fmt: str, name: str, content: str | bytes, **kwargs) -> pd.DataFrame:
    path = tmp_path / name
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return read_interactions(path, fmt, **kwargs)


# (format, file name, content, read kwargs, expected frame values). Each file is clean (pandas'
# fast path); the same file with a trailing blank line takes the line-by-line path.
EXACT = [
    ("movielens", "u.data", f"{BIG + 1}\t10\t5\t300\n{BIG}\t11\t3\t100\n", {},
     [[str(BIG), "11", 100], [str(BIG + 1), "10", 300]]),
    ("movielens", "ratings.dat", "1::10::5::1700000000000000001\n1::11::3::1700000000000000000\n",
     {}, [["1", "11", 1700000000000000000], ["1", "10", 1700000000000000001]]),
    ("movielens", "ratings.csv", f"userId,movieId,rating,timestamp\n1,{BIG + 1},5,2\n1,{BIG},3,1\n",
     {}, [["1", str(BIG), 1], ["1", str(BIG + 1), 2]]),
    ("movielens", "u.data", "-9223372036854775808\t1\t5\t9223372036854775807\n", {},
     [["-9223372036854775808", "1", 9223372036854775807]]),
    ("csv", "log.csv", "user,item,timestamp\nu1, a,3\nu1,a,1700000000000000001\nu1,b ,2\n", {},
     [["u1", "b ", 2], ["u1", " a", 3], ["u1", "a", 1700000000000000001]]),
    ("csv", "log.tsv", "user\titem\ttimestamp\n u\ta\t1\nu\ta\t2\n", {},
     [[" u", "a", 1], ["u", "a", 2]]),
    ("csv", "log.csv", 'user,item,timestamp\nu,"a b",1\nu,"a,b",2\n', {},
     [["u", "a b", 1], ["u", "a,b", 2]]),
    ("sasrec", "seq.txt", "1 a\x0cb\n1 a\xa0b\n1 a\u2028b\n1 a\x85b\n", {},
     [["1", "a\x0cb", 1], ["1", "a\xa0b", 2], ["1", "a\u2028b", 3], ["1", "a\x85b", 4]]),
    ("sequences", "users.txt", "u a\x0bb c\u2029d\n", {},
     [["u", "a\x0bb", 1], ["u", "c\u2029d", 2]]),
]


@pytest.mark.parametrize("fmt,name,content,kwargs,expected", EXACT)
def test_fast_and_line_paths_give_the_same_exact_frame(tmp_path, fmt, name, content, kwargs,
                                                       expected):
    clean = _read(tmp_path, fmt, name, content, **kwargs)
    assert clean.values.tolist() == expected
    for odd in (content + "\n", content.replace("\n", "\r\n") + "\r\n"):  # trailing blank line
        pd.testing.assert_frame_equal(_read(tmp_path, fmt, "odd_" + name, odd, **kwargs), clean)


# (format, file name, content, bad line, message fragment)
OUT_OF_RANGE = [
    ("movielens", "u.data", "99999999999999999999\t10\t5\t300\n1\t11\t3\t100\n", 1,
     "user id '99999999999999999999' is outside the int64 range"),
    ("movielens", "ratings.dat", "1::10::5::3\n1::18446744073709551616::5::3\n", 2,
     "item id '18446744073709551616' is outside the int64 range"),
    ("movielens", "u.data", "1\t10\t5\t1\n-9223372036854775809\t10\t5\t2\n", 2,
     "user id '-9223372036854775809' is outside the int64 range"),
    ("csv", "log.csv", "user,item,timestamp\na,b,1\na,c,9223372036854775808\n", 3,
     "timestamp '9223372036854775808' is outside the int64 range"),
    ("csv", "log.csv", "user,item,timestamp\na,b,1\na,c,1e20\n", 3,
     "timestamp '1e20' is outside the int64 range"),
    ("movielens", "u.data", f"1\t10\t5\t1\n{BIG + 1}.0\t10\t5\t2\n", 2,
     f"user id '{BIG + 1}.0' is not an exact integer"),
]


@pytest.mark.parametrize("fmt,name,content,line,message", OUT_OF_RANGE)
@pytest.mark.parametrize("tail", ["", "\n"])  # clean file (fast path) and irregular file
def test_integers_beyond_int64_name_file_line_and_value(tmp_path, fmt, name, content, line,
                                                        message, tail):
    with pytest.raises(DataError, match=message) as info:
        _read(tmp_path, fmt, name, content + tail)
    assert str(info.value).startswith(f"{tmp_path / name}, line {line}: ")
    with pytest.warns(DataWarning, match="skipped 1"):
        frame = _read(tmp_path, fmt, name, content + tail, on_error="skip")
    assert len(frame) == 1


def test_integral_decimals_are_still_integers(tmp_path):
    frame = _read(tmp_path, "movielens", "u.data", "1.0\t10\t5\t3.0\n1\t1e1\t5\t2\n")
    assert frame.values.tolist() == [["1", "10", 2], ["1", "10", 3]]
    assert _read(tmp_path, "csv", "log.csv", "user,item,timestamp\nu,a,1.5\n")[
        "timestamp"].tolist() == [1.5]


@pytest.mark.parametrize("tail", ["", "\n"])  # fast path and line-by-line path
def test_a_fraction_beside_integers_beyond_2_53_is_refused_not_rounded(tmp_path, tail):
    """float64 would make BIG + 1 and BIG equal (and order them wrongly): with such integers in
    the column a fractional timestamp is the bad line, named; skipped, the integers stay exact."""
    content = f"user,item,timestamp\nu1,a,{BIG + 1}\nu1,b,{BIG}\nu1,c,1.5\n" + tail
    with pytest.raises(DataError, match=r"log\.csv, line 4: fractional timestamp '1\.5' in a "
                                        r"column holding integers beyond 2\*\*53"):
        _read(tmp_path, "csv", "log.csv", content)
    with pytest.warns(DataWarning, match="skipped 1"):
        frame = _read(tmp_path, "csv", "log.csv", content, on_error="skip")
    assert frame.values.tolist() == [["u1", "b", BIG], ["u1", "a", BIG + 1]]
    assert frame["timestamp"].dtype == "int64"


@pytest.mark.parametrize("tail", ["", "\n"])
def test_one_integer_beyond_2_53_among_fractions_is_the_bad_line(tmp_path, tail):
    """The fewer kind is refused: one nanosecond timestamp in a file of fractional seconds is
    the line named (and skipped), not every other line."""
    lines = [f"u{i},a,{1700000000 + i}.5" for i in range(6)]
    lines.insert(3, f"u9,b,{BIG + 1}")
    content = "user,item,timestamp\n" + "\n".join(lines) + "\n" + tail
    with pytest.raises(DataError, match=rf"line 5: timestamp '{BIG + 1}' is an integer beyond "
                                        r"2\*\*53 in a column of fractional timestamps"):
        _read(tmp_path, "csv", "log.csv", content)
    with pytest.warns(DataWarning, match="skipped 1"):
        frame = _read(tmp_path, "csv", "log.csv", content, on_error="skip")
    assert len(frame) == 6 and frame["timestamp"].tolist()[0] == 1700000000.5


# (format, file name, content, read kwargs): each read with and without a UTF-8 byte order mark
BOM_FILES = [
    ("sasrec", "seq.txt", "1 5\n1 6\n1 7\n", {}),
    ("sasrec", "seq.txt", "1 5\n1 6\n\n1 7\n", {}),  # line-by-line path
    ("sequences", "users.txt", "u1 a b\nu2 c\n", {}),
    ("movielens", "u.data", "1\t10\t5\t300\n1\t11\t3\t100\n", {}),
    ("movielens", "ratings.dat", "1::10::5::300\n", {}),
    ("movielens", "ratings.csv", "userId,movieId,rating,timestamp\n1,10,5,3\n", {}),
    ("csv", "log.csv", "user,item,timestamp\nu,a,1\n", {}),  # Excel's "CSV UTF-8"
    ("csv", "log.csv", "user,item,timestamp\nu,a,1\n\n", {}),
    ("csv", "log.tsv", "uid\titem\ttimestamp\nu\ta\t1\n", {"user_col": "uid"}),
]


@pytest.mark.parametrize("fmt,name,content,kwargs", BOM_FILES)
def test_byte_order_mark_is_ignored(tmp_path, fmt, name, content, kwargs):
    plain = _read(tmp_path, fmt, name, content, **kwargs)
    marked = _read(tmp_path, fmt, "bom_" + name, b"\xef\xbb\xbf" + content.encode(), **kwargs)
    pd.testing.assert_frame_equal(marked, plain)
    assert not any(str(u).startswith("\ufeff") for u in marked["user"])


# (format, file name, Latin-1 content whose first non-ASCII byte is on line 2, read kwargs)
NOT_UTF8 = [
    ("sasrec", "seq.txt", "1 x\n1 caf\xe9\n1 caf\xe8\n", {}),
    ("sasrec", "seq.txt", "1 x\n1 caf\xe9\n\n", {}),
    ("sequences", "users.txt", "u x\nu caf\xe9\n", {}),
    ("movielens", "u.data", "1\t10\t5\t3\n2\t11\t5\t3 \xa7\n", {}),
    ("csv", "log.csv", "user,item,timestamp\nu,caf\xe9,1\n", {}),
]


@pytest.mark.parametrize("fmt,name,content,kwargs", NOT_UTF8)
@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_bytes_that_are_not_utf8_name_file_line_and_offset(tmp_path, fmt, name, content, kwargs,
                                                            on_error):
    data = content.encode("latin-1")
    offset = next(i for i, byte in enumerate(data) if byte > 127)
    with pytest.raises(DataError, match=f"not valid UTF-8 .*byte offset {offset}") as info:
        _read(tmp_path, fmt, name, data, on_error=on_error, **kwargs)
    assert str(info.value).startswith(f"{tmp_path / name}, line 2: ")
    assert info.value.line == 2


def _zip(data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("data.txt", data)
    return buffer.getvalue()


@pytest.mark.parametrize("kind,compress", [
    ("gzip", gzip.compress), ("bzip2", bz2.compress), ("xz", lzma.compress), ("zip", _zip),
])
@pytest.mark.parametrize("fmt,name", [
    ("sasrec", "seq.txt"), ("sasrec", "seq.txt.gz"), ("sequences", "users.txt"),
    ("movielens", "u.data"), ("csv", "log.csv"), ("csv", "log.csv.gz"),
    ("parquet", "log.parquet"),
])
def test_compressed_file_says_to_decompress_it(tmp_path, kind, compress, fmt, name):
    data = compress(b"user,item,timestamp\n1,5,1\n1,6,2\n")
    with pytest.raises(DataError, match=f"is {kind}-compressed; decompress it") as info:
        _read(tmp_path, fmt, name, data, on_error="skip")
    assert str(tmp_path / name) in str(info.value)


# Only `\n` (and `\r\n`) end a line: (content, bad line) where line 3 lacks its item.
LINE_BREAKS = ["\u2028", "\u2029", "\x85", "\x0c", "\x0b", "\x1c", "\x1d", "\x1e"]


@pytest.mark.parametrize("char", LINE_BREAKS)
def test_only_newline_ends_a_line(tmp_path, char):
    content = f"1 a{char}b\n1 c\n1\n"
    with pytest.raises(DataError, match="expected 2 fields, got 1") as info:
        _read(tmp_path, "sasrec", "seq.txt", content)
    assert info.value.line == 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        frame = _read(tmp_path, "sasrec", "seq.txt", content, on_error="skip")
    assert frame["item"].tolist() == [f"a{char}b", "c"]
    assert frame.attrs["report"].problems == ["line 3: expected 2 fields, got 1"]


@pytest.mark.parametrize("fmt,name,content,line", [
    ("sasrec", "seq.txt", "1 a\r1 b\r", 1),
    ("movielens", "u.data", "1\t10\t5\t3\r\n1\t11\t5\t4\r2\t1\t1\t1\r\n", 2),
    ("csv", "log.csv", 'user,item,timestamp\nu,"a\rb",1\n', 2),
])
def test_lone_carriage_return_is_refused(tmp_path, fmt, name, content, line):
    with pytest.raises(DataError, match=r"carriage return \(\\r\) not followed by \\n") as info:
        _read(tmp_path, fmt, name, content, on_error="skip")
    assert info.value.line == line


def test_unclosed_quote_stays_on_its_line(tmp_path):
    content = 'user,item,timestamp\nu,"a,1\nu,b,2\nu,c,3\n'
    with pytest.raises(DataError, match="expected 3 fields, got 2") as info:
        _read(tmp_path, "csv", "log.csv", content)
    assert info.value.line == 2
    with pytest.warns(DataWarning, match="skipped 1"):
        frame = _read(tmp_path, "csv", "log.csv", content, on_error="skip")
    assert frame["item"].tolist() == ["b", "c"]


@pytest.mark.parametrize("content", ["user,item,timestamp\n , a,1\n",
                                     "user,item,timestamp\nu,\t,1\n",
                                     "user,item,timestamp\nu,\u3000,1\n"])
def test_whitespace_only_id_is_empty_on_both_paths(tmp_path, content):
    for odd in (content, content + "\n"):
        with pytest.raises(DataError, match=r"line 2: empty (user|item) id"):
            _read(tmp_path, "csv", "log.csv", odd)


def test_movielens_100k_directory_with_latin1_item_file(tmp_path):
    (tmp_path / "u.data").write_text("1\t10\t5\t300\n1\t11\t3\t100\n")
    (tmp_path / "u.item").write_bytes("10|Caf\xe9 (1995)|01-Jan-1995||\n".encode("latin-1"))
    assert read_movielens(tmp_path)["item"].tolist() == ["11", "10"]  # u.item is never read
    if (ML_100K / "u.item").exists():
        assert len(read_movielens(ML_100K)) == 100_000
