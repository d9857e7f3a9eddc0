"""Line-accurate parsing of delimited interaction files, shared by the readers in `readers.py`.

Clean files take a fast path (pandas' C parser); any irregularity sends the file through a
line-by-line parser that names the first bad line (`on_error="raise"`) or skips and counts bad
lines (`on_error="skip"`). Line numbers are 1-based and assume one record per physical line.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

ON_ERROR = ("raise", "skip")
_MAX_PROBLEMS = 20


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


@dataclasses.dataclass
class ReadReport:
    """What a reader did: rows kept, lines skipped and the first (up to 20) problems found.

    Example:
    >>> ReadReport(path="x.txt", rows=3).skipped
    0
    """

    path: str
    rows: int
    skipped: int = 0
    problems: list[str] = dataclasses.field(default_factory=list)


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


def read_text(path: Path) -> str:
    """Reads a text file (undecodable bytes replaced); raises `DataError` if it is blank."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        raise DataError(path, "file is empty")
    return text


def split_rows(text: str, sep: str) -> list[list[str]]:
    """One list of fields per physical line; blank lines give `[]`."""
    if sep in (",", "\t") and "\"" in text:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
        return [row if any(v.strip() for v in row) else [] for row in reader]
    if sep == " ":
        return [line.split() for line in text.splitlines()]
    return [line.strip().split(sep) if line.strip() else [] for line in text.splitlines()]


def _to_numeric(values: np.ndarray) -> np.ndarray:
    return pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(float)


def _bad_value(name: str, value) -> str:
    """Why a value-column entry is refused: missing, or not a finite number."""
    if (value is None or (isinstance(value, str) and not value.strip())
            or (isinstance(value, float | np.floating) and np.isnan(value))):
        return f"missing {name}"
    return f"non-numeric {name} {value.item() if isinstance(value, np.generic) else value!r}"


def _value_names(columns) -> list[str]:
    """The numeric value columns (e.g. `rating`, `reward`): every key but the three ids/time."""
    return [name for name in columns if name not in ("user", "item", "timestamp")]


def validated_frame(problems: ProblemLog, columns: dict[str, np.ndarray], lines: np.ndarray,
                    numeric_ids: bool) -> pd.DataFrame:
    """Flags empty / non-numeric fields, drops flagged rows and returns the sorted frame."""
    keep = np.ones(len(lines), dtype=bool)
    out = {}
    for name in ("user", "item"):
        values = columns[name]
        text = pd.Series(values, dtype=object).astype(str).str.strip()
        bad = keep & (pd.isna(values) | (text == "").to_numpy())
        problems.flag(bad, lines, lambda i, n=name: f"empty {n} id")
        keep &= ~bad
        if numeric_ids:
            numbers = _to_numeric(values)
            bad = keep & ~(np.isfinite(numbers) & (numbers == np.round(numbers)))
            problems.flag(bad, lines, lambda i, n=name, v=values: f"non-numeric {n} id {v[i]!r}")
            keep &= ~bad
            out[name] = np.where(keep, numbers, 0).astype(np.int64)
        else:
            out[name] = text.to_numpy(dtype=object)
    times = columns["timestamp"]
    if times.dtype.kind not in "iu":
        numbers = _to_numeric(times)
        bad = keep & ~np.isfinite(numbers)
        problems.flag(bad, lines, lambda i: f"non-numeric timestamp {times[i]!r}")
        keep &= ~bad
        times = numbers
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


def _fast_parse(text: str, layout: Layout) -> pd.DataFrame | None:
    """Strict C-parser read of a clean file; `None` sends the caller to the line parser."""
    if not text.split("\n", 1)[0].strip():
        return None  # leading blank line: line numbers and header position need the slow path
    sep = {" ": r"\s+", "::": "\t"}.get(layout.sep, layout.sep)
    if layout.sep == "::":
        if "\t" in text:
            return None
        text = text.replace("::", "\t")
    positions = {k: p for k, p in layout.fields.items() if p is not None}
    id_type = "int64" if layout.numeric_ids else str
    dtype = {p: ("int64" if k == "timestamp" else id_type if k in ("user", "item") else "float64")
             for k, p in positions.items()}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = pd.read_csv(io.StringIO(text), sep=sep, header=None, dtype=dtype, engine="c",
                              skiprows=int(layout.header), skip_blank_lines=False,
                              keep_default_na=False, na_values=[""], on_bad_lines="error")
    except Exception:  # any irregularity: the line parser reports it precisely
        return None
    if raw.shape[1] != layout.n_fields or not len(raw) or raw.isna().to_numpy().any():
        return None
    lines = np.arange(len(raw), dtype=np.int64) + 1 + int(layout.header)
    columns = {k: lines if p is None else raw[p].to_numpy() for k, p in layout.fields.items()}
    values = {name: columns[name] for name in _value_names(columns)}
    if any(not np.isfinite(v).all() for v in values.values()):
        return None  # "inf" / "nan" values: the line parser names the line
    return build_frame(columns["user"], columns["item"], columns["timestamp"].astype(np.int64),
                       values)


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
    if numbers.notna().all():
        by_user = np.argsort(numbers.to_numpy(dtype=float), kind="stable")
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
    order = _sort_order(_str_ids(frame["user"].to_numpy()), frame["timestamp"].to_numpy())
    result = frame.iloc[order].reset_index(drop=True)
    result.attrs = dict(frame.attrs)
    return result
