"""Line-accurate parsing of delimited interaction files, shared by the readers in `readers.py`.

Clean files take a fast path (pandas' C parser); any irregularity sends the file through a
line-by-line parser that names the first bad line (`on_error="raise"`) or skips and counts bad
lines (`on_error="skip"`). Both paths give the same frame: ids are kept as written (no
whitespace stripping; an id of only whitespace is empty) and integer ids and timestamps are
parsed exactly (never through float64; beyond int64 is an error). Line numbers are 1-based and
assume one record per physical line: lines end with `\n` or `\r\n`, nothing else.

Files are UTF-8 (a leading byte order mark is ignored). Other bytes, a lone `\r` and compressed
files (gzip, bzip2, xz, zstd, zip) always raise `DataError`, whatever `on_error` says.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

ON_ERROR = ("raise", "skip")
_MAX_PROBLEMS = 20
_BOM = b"\xef\xbb\xbf"
_COMPRESSED = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz",
               b"\x28\xb5\x2f\xfd": "zstd", b"PK\x03\x04": "zip"}
_INTEGER = re.compile(r"[ \t\n\r\f\v]*[+-]?[0-9]+[ \t\n\r\f\v]*")  # what pandas reads as int64
_INT64_MIN, _INT64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)
_ODD_SPACES = "\x0b\x0c\x1c\x1d\x1e\x1f"  # ASCII whitespace to str.split(), not to pandas
_OK, _NOT_A_NUMBER, _OUT_OF_RANGE, _NOT_AN_INTEGER, _FRACTION_BESIDE_BIG, _BIG_BESIDE_FRACTIONS = (
    range(6))


class DataError(ValueError):
    """A data file is missing, empty or malformed.

    Args:
        path: The offending file.
        problem: What is wrong.
        line: 1-based line (or row, see `unit`) number, when known.
        unit: `"line"` for text files, `"row"` for Parquet.

    Example:
    >>> str(DataError("ratings.csv", "expected 4 fields, got 3", line=7))
    'ratings.csv, line 7: expected 4 fields, got 3'
    """

    def __init__(self, path: str | os.PathLike, problem: str, line: int | None = None,
                 unit: str = "line") -> None:
        self.path = str(path)
        self.line = line
        self.problem = problem
        where = self.path if line is None else f"{self.path}, {unit} {line}"
        super().__init__(f"{where}: {problem}")


class DataWarning(UserWarning):
    """Summary of malformed lines skipped with `on_error="skip"`."""


class ReadReport(dict):
    """What a reader did: rows kept, lines skipped and the first (up to 20) problems found.

    A plain `dict` (`path`, `rows`, `skipped`, `problems`) read by key or attribute: readers put
    it in `frame.attrs["report"]`, and pandas writes a frame's `attrs` as JSON into Parquet
    files, so `frame.to_parquet(...)` works on a frame a reader returned.

    Example:
    >>> import json
    >>> report = ReadReport(path="x.txt", rows=3)
    >>> report.skipped, report["rows"], json.dumps(report)
    (0, 3, '{"path": "x.txt", "rows": 3, "skipped": 0, "problems": []}')
    """

    def __init__(self, path, rows: int, skipped: int = 0, problems=()):
        super().__init__(path=os.fspath(path), rows=int(rows), skipped=int(skipped),
                         problems=list(problems))

    path = property(lambda self: self["path"])
    rows = property(lambda self: self["rows"])
    skipped = property(lambda self: self["skipped"])
    problems = property(lambda self: self["problems"])


class ProblemLog:
    """Raises on the first problem (`on_error="raise"`) or records problems (`"skip"`).

    Args:
        path: File being read (for messages).
        on_error: `"raise"` or `"skip"`.
        unit: `"line"` or `"row"`.

    Example:
    >>> log = ProblemLog("f.txt", "skip")
    >>> log.flag(np.array([False, True]), np.array([1, 2]), lambda i: "bad")
    >>> log.skipped, log.messages
    (1, ['line 2: bad'])
    """

    def __init__(self, path: str | os.PathLike, on_error: str, unit: str = "line") -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}. Received: on_error={on_error!r}")
        self.path, self.on_error, self.unit = str(path), on_error, unit
        self.skipped = 0
        self.messages: list[str] = []

    def flag(self, bad: np.ndarray, lines: np.ndarray, describe: Callable[[int], str]) -> None:
        """Handles rows where `bad` is True; `describe(i)` explains row `i`."""
        positions = np.flatnonzero(bad)
        if not len(positions):
            return
        if self.on_error == "raise":
            first = positions[0]
            raise DataError(self.path, describe(first), int(lines[first]), self.unit)
        self.skipped += len(positions)
        for i in positions[: max(0, _MAX_PROBLEMS - len(self.messages))]:
            self.messages.append(f"{self.unit} {int(lines[i])}: {describe(i)}")


@dataclasses.dataclass(frozen=True)
class Layout:
    """How to parse a delimited file.

    Attributes:
        sep: Field separator; `" "` means any run of whitespace.
        n_fields: Fields every record must have.
        fields: Output column (`user`, `item`, `timestamp`) -> field position; a `None`
            timestamp position uses the line number (file order is time). Any other key is a
            numeric value column (e.g. `rating`), read as float64 after the timestamp.
        header: The first line is a header.
        numeric_ids: User and item ids must be integers (they are written canonically, `"7"`).
    """

    sep: str
    n_fields: int
    fields: dict[str, int | None]
    header: bool = False
    numeric_ids: bool = False


def check_file(path: str | os.PathLike) -> Path:
    """Returns `path` as a `Path`; raises `DataError` if it is missing or a directory."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file not found")
    if path.is_dir():
        raise DataError(path, "is a directory, expected a file")
    return path


def refuse_compressed(path: Path, head: bytes) -> None:
    """Raises `DataError` if `head` (the file's first bytes) starts a compressed file."""
    for magic, kind in _COMPRESSED.items():
        if head.startswith(magic):
            raise DataError(path, f"file is {kind}-compressed; decompress it and pass the "
                            "uncompressed file")


def read_text(path: Path) -> str:
    """Reads a UTF-8 text file; raises `DataError` if it is blank, compressed or not UTF-8.

    A leading byte order mark is dropped. Lines must end with `\\n` or `\\r\\n`: a lone `\\r`
    (old Mac line ends) is refused, naming its line.

    Example:
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "f.txt"
    >>> _ = path.write_bytes(b"\\xef\\xbb\\xbfu a\\nu caf\\xe9\\n")
    >>> read_text(path)
    Traceback (most recent call last):
    ...
    tfrec_attn.data.parsing.DataError: ...f.txt, line 2: not valid UTF-8 (byte 0xe9 at byte \
offset 12); save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)
    """
    data = path.read_bytes()
    refuse_compressed(path, data[:8])
    skipped = len(_BOM) if data.startswith(_BOM) else 0
    try:
        text = data[skipped:].decode("utf-8")
    except UnicodeDecodeError as err:
        offset = skipped + err.start
        raise DataError(path, f"not valid UTF-8 (byte 0x{data[offset]:02x} at byte offset "
                        f"{offset}); save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)",
                        line=data.count(b"\n", 0, offset) + 1) from None
    if "\r" in text and text.count("\r") != text.count("\r\n"):
        offset = re.search("\r(?!\n)", text).start()
        raise DataError(path, "carriage return (\\r) not followed by \\n; lines must end with "
                        "\\n or \\r\\n", line=text.count("\n", 0, offset) + 1)
    if not text.strip():
        raise DataError(path, "file is empty")
    return text


def first_line(text: str) -> tuple[str, int]:
    """The first non-blank line of `text` and its 1-based number (`""` if `text` is blank)."""
    start, number = 0, 1
    while True:
        end = text.find("\n", start)
        line = text[start:] if end < 0 else text[start:end]
        if line.strip() or end < 0:
            return line.removesuffix("\r") if line.strip() else "", number
        start, number = end + 1, number + 1


def split_lines(text: str) -> list[str]:
    """Physical lines: split on `\\n` only (not on U+2028, form feed, ...), `\\r\\n` ends dropped.

    Example:
    >>> split_lines("u a\\u2028b\\r\\nu c\\x0c\\n\\n")
    ['u a\\u2028b', 'u c\\x0c', '']
    """
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    if "\r" in text:
        lines = [line.removesuffix("\r") for line in lines]
    return lines


def _plain_spaces(text: str) -> bool:
    """`text` has no whitespace but spaces, tabs and line ends (`isascii` is O(1))."""
    return text.isascii() and not any(c in text for c in _ODD_SPACES)


def _csv_rows(lines: list[str], sep: str) -> list[list[str]]:
    """`csv` rows, one per line: a quoted field never runs on into the next line."""
    rows: list[list[str]] = []
    reader = csv.reader(lines, delimiter=sep)
    for row in reader:
        if reader.line_num == len(rows) + 1:
            rows.append(row)
            continue
        for line in lines[len(rows):reader.line_num]:  # an unclosed quote: each line alone
            rows.append(next(csv.reader([line], delimiter=sep), []))
    return rows


def split_rows(text: str, sep: str) -> list[list[str]]:
    """One list of fields per physical line (see `split_lines`); blank lines give `[]`.

    `" "` splits on runs of spaces and tabs (as pandas' `sep=r"\\s+"` does); `","` and `"\\t"`
    honour double quotes. Fields are not stripped.

    Example:
    >>> split_rows(" u\\ta  b\\n\\n", " ")
    [['u', 'a', 'b'], []]
    >>> split_rows('u, a,"b,c"\\n', ",")
    [['u', ' a', 'b,c']]
    """
    lines = split_lines(text)
    if sep in (",", "\t") and "\"" in text:
        return [row if any(v.strip() for v in row) else [] for row in _csv_rows(lines, sep)]
    if sep == " " and _plain_spaces(text):  # str.split() splits on spaces and tabs only
        return [line.split() for line in lines]
    if sep == " ":
        return [[f for f in line.replace("\t", " ").split(" ") if f] for line in lines]
    return [line.split(sep) if line.strip() else [] for line in lines]


def _to_numeric(values: np.ndarray) -> np.ndarray:
    return pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(float)


def _shown(value) -> str:
    return repr(value.item() if isinstance(value, np.generic) else value)


def _bad_value(name: str, value) -> str:
    """Why a value-column entry is refused: missing, or not a finite number."""
    if (value is None or (isinstance(value, str) and not value.strip())
            or (isinstance(value, float | np.floating) and np.isnan(value))):
        return f"missing {name}"
    return f"non-numeric {name} {_shown(value)}"


def _value_names(columns) -> list[str]:
    """The numeric value columns (e.g. `rating`, `reward`): every key but the three ids/time."""
    return [name for name in columns if name not in ("user", "item", "timestamp")]


def _blank(values: np.ndarray) -> np.ndarray:
    """Which ids are missing (None, NaN) or only whitespace; each distinct value checked once."""
    codes, uniques = pd.factorize(values)  # missing values get code -1
    blank = np.fromiter((not str(u).strip() for u in uniques), dtype=bool, count=len(uniques))
    return np.append(blank, True)[codes]


def _integers(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer literals (`" -12"`) and integer objects, converted exactly (never via float64).

    Returns:
        `(numbers, exact, too_big)`: `int64` numbers (0 elsewhere), which values are int64
        integers and which are integers beyond the int64 range.
    """
    if values.dtype.kind in "iu":
        too_big = values > _INT64_MAX
        return np.where(too_big, 0, values).astype(np.int64), ~too_big, too_big
    if values.dtype != object:
        return (np.zeros(len(values), np.int64), np.zeros(len(values), bool),
                np.zeros(len(values), bool))
    codes, uniques = pd.factorize(values, use_na_sentinel=False)  # each distinct value once
    numbers, status = [], []  # status: 0 not an integer, 1 int64, 2 beyond int64
    match = _INTEGER.fullmatch
    for value in uniques:
        if isinstance(value, str):
            value = int(value) if match(value) else None
        elif not isinstance(value, int | np.integer) or isinstance(value, bool):
            value = None
        if value is None:
            numbers.append(0)
            status.append(0)
        elif _INT64_MIN <= value <= _INT64_MAX:
            numbers.append(value)
            status.append(1)
        else:
            numbers.append(0)
            status.append(2)
    status = np.asarray(status, dtype=np.int8)[codes]
    return np.asarray(numbers, dtype=np.int64)[codes], status == 1, status == 2


def exact_numbers(values: np.ndarray, integers_only: bool = False) -> tuple[np.ndarray,
                                                                             np.ndarray]:
    """Parses ids or timestamps, integers exactly: `(numbers, status)`.

    Integers stay exact `int64`; other values go through float64 (`"1.5"`, `"1e3"`). `numbers`
    is `int64` unless some accepted value is fractional (then float64). `status` per value:
    `_OK`, `_NOT_A_NUMBER` (text, NaN, inf), `_OUT_OF_RANGE` (beyond int64), with
    `integers_only`, `_NOT_AN_INTEGER` (fractional, or a float too large to be exact). A column
    mixing fractional values with integers beyond 2**53 (nanosecond epochs), which float64
    cannot hold exactly, refuses the fewer kind: `_FRACTION_BESIDE_BIG` (the integers stay
    exact `int64`) or, when the big integers are fewer, `_BIG_BESIDE_FRACTIONS`.

    Example:
    >>> numbers, status = exact_numbers(np.array(["9007199254740993", "2.0", "1e20", "x"],
    ...                                          dtype=object))
    >>> numbers.tolist(), status.tolist()
    ([9007199254740993, 2, 0, 0], [0, 0, 2, 1])
    >>> numbers, status = exact_numbers(np.array(["9007199254740993", "7", "1.5"], dtype=object))
    >>> numbers.dtype.name, int(numbers[0]), status.tolist()
    ('int64', 9007199254740993, [0, 0, 4])
    >>> numbers, status = exact_numbers(np.array(["9007199254740993", "2.5", "1.5"], dtype=object))
    >>> numbers.tolist(), status.tolist()
    ([0.0, 2.5, 1.5], [5, 0, 0])
    """
    numbers, exact, too_big = _integers(values)
    status = np.where(too_big, _OUT_OF_RANGE, _OK).astype(np.int8)
    others = np.flatnonzero(~exact & ~too_big)
    if not len(others):
        return numbers, status
    floats = _to_numeric(values[others])
    finite = np.isfinite(floats)
    big = finite & (np.abs(floats) >= 2.0 ** 63)
    inexact = finite & ~big & ((floats != np.round(floats)) | (np.abs(floats) >= 2.0 ** 53))
    status[others[~finite]] = _NOT_A_NUMBER
    status[others[big]] = _OUT_OF_RANGE
    if integers_only:
        status[others[inexact]] = _NOT_AN_INTEGER
    accepted = status[others] == _OK
    fractional = accepted & (floats != np.round(floats))
    big = exact & ((numbers >= 2 ** 53) | (numbers <= -(2 ** 53)))
    if fractional.any() and big.any():
        if big.sum() < fractional.sum():
            status[big] = _BIG_BESIDE_FRACTIONS
            numbers[big] = 0
        else:
            status[others[fractional]] = _FRACTION_BESIDE_BIG
            accepted &= ~fractional
    if np.all(floats[accepted] == np.round(floats[accepted])):
        numbers[others[accepted]] = floats[accepted].astype(np.int64)
        return numbers, status
    numbers = numbers.astype(np.float64)
    numbers[others] = floats
    return numbers, status


def _flag_numbers(problems: ProblemLog, status: np.ndarray, keep: np.ndarray, lines: np.ndarray,
                  values: np.ndarray, what: str) -> np.ndarray:
    """Flags the kept values `exact_numbers` refused; returns the new `keep`."""
    reasons = {_NOT_A_NUMBER: "non-numeric {what} {value}",
               _OUT_OF_RANGE: "{what} {value} is outside the int64 range",
               _NOT_AN_INTEGER: "{what} {value} is not an exact integer",
               _FRACTION_BESIDE_BIG: "fractional {what} {value} in a column holding integers "
                                     "beyond 2**53, which float64 would round (write every "
                                     "{what} as an integer)",
               _BIG_BESIDE_FRACTIONS: "{what} {value} is an integer beyond 2**53 in a column of "
                                      "fractional {what}s, which float64 would round (write "
                                      "every {what} in one unit)"}
    bad = keep & (status != _OK)
    problems.flag(bad, lines, lambda i: reasons[int(status[i])].format(
        what=what, value=_shown(values[i])))
    return keep & ~bad


def validated_frame(problems: ProblemLog, columns: dict[str, np.ndarray], lines: np.ndarray,
                    numeric_ids: bool) -> pd.DataFrame:
    """Flags empty / non-numeric fields, drops flagged rows and returns the sorted frame."""
    keep = np.ones(len(lines), dtype=bool)
    out = {}
    for name in ("user", "item"):
        values = columns[name]
        bad = keep & _blank(values)
        problems.flag(bad, lines, lambda i, n=name: f"empty {n} id")
        keep &= ~bad
        out[name] = values
        if numeric_ids:
            out[name], status = exact_numbers(values, integers_only=True)
            keep = _flag_numbers(problems, status, keep, lines, values, f"{name} id")
    times = columns["timestamp"]
    if times.dtype.kind != "i":
        times, status = exact_numbers(times)
        keep = _flag_numbers(problems, status, keep, lines, columns["timestamp"], "timestamp")
    values = {}
    for name in _value_names(columns):
        numbers = _to_numeric(columns[name])
        bad = keep & ~np.isfinite(numbers)
        problems.flag(bad, lines, lambda i, n=name, v=columns[name]: _bad_value(n, v[i]))
        keep &= ~bad
        values[name] = numbers
    times = times[keep]
    if times.dtype.kind == "f" and np.all(times == np.round(times)):
        times = times.astype(np.int64)
    return build_frame(out["user"][keep], out["item"][keep], times,
                       {name: v[keep] for name, v in values.items()})


def _may_have_blank_ids(text: str, sep: str) -> bool:
    """Cheap pre-check: could a field of `text` be only whitespace (which pandas keeps)?"""
    return not _plain_spaces(text) or (sep != " " and (" " in text or "\t" in text))


def _fast_parse(text: str, layout: Layout) -> pd.DataFrame | None:
    """Strict C-parser read of a clean file; `None` sends the caller to the line parser.

    Numeric ids and timestamps are read with inferred types: `int64` means every field was an
    integer literal within range (exact); anything else (`"1.0"`, `"1e3"`, beyond int64) is left
    to the line parser, which reads integers exactly.
    """
    if first_line(text)[1] != 1:
        return None  # leading blank line: line numbers and header position need the slow path
    sep = {" ": r"\s+", "::": "\t"}.get(layout.sep, layout.sep)
    if layout.sep == "::":
        if "\t" in text:
            return None
        text = text.replace("::", "\t")
    positions = {k: p for k, p in layout.fields.items() if p is not None}
    integral = [p for k, p in positions.items()
                if k == "timestamp" or (k in ("user", "item") and layout.numeric_ids)]
    dtype = {p: str if k in ("user", "item") else "float64"
             for k, p in positions.items() if p not in integral}
    quoting = csv.QUOTE_MINIMAL if layout.sep in (",", "\t") else csv.QUOTE_NONE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = pd.read_csv(io.StringIO(text), sep=sep, header=None, dtype=dtype, engine="c",
                              skiprows=int(layout.header), skip_blank_lines=False,
                              keep_default_na=False, na_values=[""], on_bad_lines="error",
                              quoting=quoting)
    except Exception:  # any irregularity: the line parser reports it precisely
        return None
    n_lines = text.count("\n") + (not text.endswith("\n"))
    if (raw.shape[1] != layout.n_fields or not len(raw) or len(raw) + layout.header != n_lines
            or any(raw[p].dtype != np.int64 for p in integral) or raw.isna().to_numpy().any()):
        return None  # a record over several lines, a non-integer, NaN: the line parser decides
    lines = np.arange(len(raw), dtype=np.int64) + 1 + int(layout.header)
    columns = {k: lines if p is None else raw[p].to_numpy() for k, p in layout.fields.items()}
    if not layout.numeric_ids and _may_have_blank_ids(text, layout.sep) and any(
            _blank(columns[name]).any() for name in ("user", "item")):
        return None  # whitespace-only ids: the line parser names the line
    values = {name: columns[name] for name in _value_names(columns)}
    if any(not np.isfinite(v).all() for v in values.values()):
        return None  # "inf" / "nan" values: the line parser names the line
    return build_frame(columns["user"], columns["item"], columns["timestamp"], values)


def _slow_parse(path: Path, text: str, layout: Layout, problems: ProblemLog) -> pd.DataFrame:
    """Line-by-line parse that locates every malformed line."""
    rows = split_rows(text, layout.sep)
    start = next(i for i, row in enumerate(rows) if row) + int(layout.header)
    data = rows[start:]
    if not any(data):
        raise DataError(path, "file is empty (header only)")
    lines = np.arange(start + 1, len(rows) + 1)
    lengths = np.fromiter(map(len, data), dtype=np.int64, count=len(data))
    blank = lengths == 0
    bad = ~blank & (lengths != layout.n_fields)
    problems.flag(bad, lines, lambda i: f"expected {layout.n_fields} fields, got {lengths[i]}")
    good = np.flatnonzero(~blank & ~bad)
    kept = [data[i] for i in good]
    columns = {}
    for name, position in layout.fields.items():
        if position is None:
            columns[name] = lines[good].astype(np.int64)
        else:
            columns[name] = np.asarray([row[position] for row in kept], dtype=object)
    return validated_frame(problems, columns, lines[good], layout.numeric_ids)


def parse_delimited(path: Path, text: str, layout: Layout, on_error: str) -> pd.DataFrame:
    """Parses `text` (the contents of `path`) into a sorted interactions frame with a report.

    Args:
        path: The file (for messages).
        text: Its contents (non-blank, see `read_text`).
        layout: How to parse it.
        on_error: `"raise"` or `"skip"`.

    Returns:
        Frame `user`, `item`, `timestamp` with `attrs["report"]`.

    Example:
    >>> layout = Layout(" ", 2, {"user": 0, "item": 1, "timestamp": None})
    >>> frame = parse_delimited(Path("f.txt"), "u a\\nu b c\\n", layout, "skip")
    >>> frame["item"].tolist(), frame.attrs["report"].skipped
    (['a'], 1)
    """
    problems = ProblemLog(path, on_error)
    frame = _fast_parse(text, layout)
    if frame is None:
        frame = _slow_parse(path, text, layout, problems)
    return finish(frame, problems)


def finish(frame: pd.DataFrame, problems: ProblemLog) -> pd.DataFrame:
    """Attaches the `ReadReport`, warns once about skipped lines, refuses an all-bad file."""
    if not len(frame) and problems.skipped:
        raise DataError(problems.path, f"no valid rows ({problems.skipped} malformed skipped): "
                        + "; ".join(problems.messages[:3]))
    frame.attrs["report"] = ReadReport(problems.path, len(frame), problems.skipped,
                                       list(problems.messages))
    if problems.skipped:
        warnings.warn(
            f"{problems.path}: skipped {problems.skipped} malformed {problems.unit}(s), kept "
            f"{len(frame)}; first: {problems.messages[0]}", DataWarning, stacklevel=4)
    return frame


def _str_ids(values: np.ndarray) -> np.ndarray:
    """Object array of `str` ids, converting each distinct value once."""
    codes, uniques = pd.factorize(np.asarray(values), use_na_sentinel=False)
    return np.asarray([str(u) for u in uniques], dtype=object)[codes]


def _sort_order(users: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Stable (user, time) order; users compare numerically when all are integers."""
    codes, uniques = pd.factorize(users)
    uniques = np.asarray([str(u) for u in uniques], dtype=object)
    numbers = pd.to_numeric(pd.Series(uniques, dtype=object), errors="coerce")
    if numbers.notna().all():  # int64 when every id is an integer: exact beyond 2**53
        by_user = np.argsort(numbers.to_numpy(), kind="stable")
    else:
        by_user = np.argsort(uniques.astype(str), kind="stable")
    rank = np.empty(len(uniques), dtype=np.int64)
    rank[by_user] = np.arange(len(uniques))
    by_time = np.argsort(np.asarray(times), kind="stable")
    return by_time[np.argsort(rank[codes][by_time], kind="stable")]


def build_frame(users: np.ndarray, items: np.ndarray, times: np.ndarray,
                values: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """Sorted interactions frame from raw id arrays (any dtype, written as `str`) and times.

    Args:
        users: User ids.
        items: Item ids.
        times: Numeric timestamps.
        values: Extra float64 columns by name (e.g. `rating`), in the order of `users`.

    Returns:
        Frame `user`, `item`, `timestamp` (then `values`) sorted stably by (user, timestamp).

    Example:
    >>> build_frame(np.array([2, 1]), np.array([5, 6]), np.array([0, 9])).values.tolist()
    [['1', '6', 9], ['2', '5', 0]]
    """
    users, items = _str_ids(users), _str_ids(items)
    order = _sort_order(users, times)
    return pd.DataFrame({"user": users[order], "item": items[order],
                         "timestamp": np.asarray(times)[order],
                         **{name: np.asarray(v, np.float64)[order]
                            for name, v in (values or {}).items()}})


def check_timestamps(times: pd.Series, source: str = "<DataFrame>") -> None:
    """Refuses a `timestamp` column that does not sort as time: text (`"10"` sorts before
    `"9"`, so histories come out of order and a temporal split leaks later events) or bools.
    Numbers and datetimes pass.

    Example:
    >>> check_timestamps(pd.Series(["9", "10"]))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tfrec_attn.data.parsing.DataError: <DataFrame>: column 'timestamp' holds text (dtype ...
    """
    types = pd.api.types
    dtype = times.dtype
    if types.is_bool_dtype(dtype) or not (types.is_numeric_dtype(dtype)
                                          or types.is_datetime64_any_dtype(dtype)):
        example = f", e.g. {times.iloc[0]!r}" if len(times) else ""
        kind = "bools" if types.is_bool_dtype(dtype) else "text"
        raise DataError(source, f"column 'timestamp' holds {kind} (dtype {dtype}{example}), which "
                        "does not sort as time ('10' before '9'); convert it first, e.g. "
                        "df['timestamp'] = pd.to_numeric(df['timestamp']) or "
                        "pd.to_datetime(df['timestamp'])")


def sort_interactions(frame: pd.DataFrame) -> pd.DataFrame:
    """Sorts stably by (user, timestamp); users compare numerically when all are integers.

    Args:
        frame: Frame with `user` and `timestamp` columns.

    Returns:
        A sorted copy with a fresh RangeIndex (and the same `attrs`).

    Example:
    >>> df = pd.DataFrame({"user": ["10", "9", "9"], "item": ["a", "b", "c"],
    ...                    "timestamp": [1, 5, 2]})
    >>> sort_interactions(df)["item"].tolist()
    ['c', 'b', 'a']
    """
    check_timestamps(frame["timestamp"])
    order = _sort_order(_str_ids(frame["user"].to_numpy()), frame["timestamp"].to_numpy())
    result = frame.iloc[order].reset_index(drop=True)
    result.attrs = dict(frame.attrs)
    return result
