"""Readers for interaction logs: SASRec text, one-line-per-user sequences, MovieLens, CSV and
Parquet tables.

Every reader returns a `pandas.DataFrame` with columns `user` (str), `item` (str) and `timestamp`
(int64, or float64 for fractional times), plus a float64 `rating` / `reward` column when asked
(`read_movielens(with_rating=True)`, `read_table(reward_col=...)`; logged feedback for
`training.logged_feedback`), sorted stably by (user, timestamp), with a `ReadReport`
in `frame.attrs["report"]`. Problems raise `DataError` naming the file, the 1-based line (or
Parquet row) and the problem. With `on_error="skip"`, malformed lines are dropped, counted in the
report and summarized in one `DataWarning`; a missing file, missing or duplicated column or
empty file always raise, and so does a file whose every line is malformed.

Text files must be UTF-8 (a leading byte order mark, as Excel writes, is ignored); bytes that are
not UTF-8 and compressed files (gzip, ...: decompress them first) always raise. Ids are kept as
written (`" a"` and `"a"` are two items); integer ids and timestamps are read exactly (beyond
int64 is an error). Lines end with `\n` or `\r\n` only (U+2028, form feed ... are data).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from tfrec_attn.data.parsing import (
    DataError,
    DataWarning,
    Layout,
    ProblemLog,
    ReadReport,
    check_file,
    finish,
    first_line,
    parse_delimited,
    read_text,
    refuse_compressed,
    sort_interactions,
    split_rows,
    validated_frame,
)

__all__ = [
    "FORMATS",
    "DataError",
    "DataWarning",
    "ReadReport",
    "read_interactions",
    "read_movielens",
    "read_sasrec",
    "read_sequences",
    "read_table",
    "sort_interactions",
]

FORMATS = ("sasrec", "sequences", "movielens", "csv", "parquet")
_MOVIELENS_FILES = ("u.data", "ratings.dat", "ratings.csv")
_CSV_SUFFIXES = (".csv", ".tsv", ".txt")
_PARQUET_SUFFIXES = (".parquet", ".pq")
_HEAD_BYTES = 8


def _check_on_error(on_error: str) -> None:
    ProblemLog("", on_error)  # validates the value


def read_sasrec(path: str | os.PathLike, on_error: str = "raise") -> pd.DataFrame:
    """Reads the SASRec preprocessed format: `user item` per line, chronological per user.

    Args:
        path: Text file with whitespace-separated `user item` lines.
        on_error: `"raise"` on the first malformed line, or `"skip"` malformed lines.

    Returns:
        Interactions frame; `timestamp` is the 1-based line number (file order is time).

    Example:
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "seq.txt"
    >>> _ = path.write_text("2 7\\n1 5\\n1 6\\n")
    >>> read_sasrec(path).values.tolist()
    [['1', '5', 2], ['1', '6', 3], ['2', '7', 1]]
    """
    _check_on_error(on_error)
    path = check_file(path)
    layout = Layout(" ", 2, {"user": 0, "item": 1, "timestamp": None})
    return parse_delimited(path, read_text(path), layout, on_error)


def read_sequences(path: str | os.PathLike, on_error: str = "raise") -> pd.DataFrame:
    """Reads one user per line: `user item item ...`, the items in chronological order.

    The layout of the preprocessed sets of S3Rec, ICLRec, CL4SRec and their successors.

    Args:
        path: Text file with whitespace-separated lines, a user id then that user's items.
        on_error: `"raise"` on the first malformed line (a user with no item, or a user's
            second line), or `"skip"` such lines (counted in the report; a user keeps its first
            line).

    Returns:
        Interactions frame, one row per (user, item); `timestamp` counts the file's items in
        order (file order is time).

    Example:
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "users.txt"
    >>> _ = path.write_text("2 7\\n1 5 6\\n")
    >>> read_sequences(path).values.tolist()
    [['1', '5', 2], ['1', '6', 3], ['2', '7', 1]]
    """
    _check_on_error(on_error)
    path = check_file(path)
    problems = ProblemLog(path, on_error)
    rows = split_rows(read_text(path), " ")
    lines = np.arange(1, len(rows) + 1)
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    problems.flag(lengths == 1, lines, lambda i: f"user {rows[i][0]!r} has no items")
    first_line: dict[str, int] = {}  # one line per user: a second one is not appended to it
    repeated = np.zeros(len(rows), dtype=bool)
    for i in np.flatnonzero(lengths > 1):
        repeated[i] = first_line.setdefault(rows[i][0], i) != i
    problems.flag(repeated, lines, lambda i: (
        f"user {rows[i][0]!r} already has line {first_line[rows[i][0]] + 1} (one line per "
        "user)"))
    good = np.flatnonzero((lengths > 1) & ~repeated)
    counts = lengths[good] - 1
    columns = {
        "user": np.repeat(np.asarray([rows[i][0] for i in good], dtype=object), counts),
        "item": np.asarray([item for i in good for item in rows[i][1:]], dtype=object),
        "timestamp": np.arange(1, int(counts.sum()) + 1, dtype=np.int64)}
    frame = validated_frame(problems, columns, np.repeat(lines[good], counts), numeric_ids=False)
    return finish(frame, problems)


def _movielens_file(path: Path) -> Path:
    if not path.is_dir():
        return check_file(path)
    for name in _MOVIELENS_FILES:
        if (path / name).is_file():
            return path / name
    raise DataError(path, f"no MovieLens ratings file ({', '.join(_MOVIELENS_FILES)}) in directory")


def _refuse_compressed(path: str | os.PathLike) -> None:
    """Raises `DataError` if `path` is a compressed file, whatever its extension."""
    path = Path(path)
    if path.is_file():
        with open(path, "rb") as file:
            refuse_compressed(path, file.read(_HEAD_BYTES))


def _header(text: str, sep: str) -> tuple[list[str], int]:
    """Column names of the first non-blank line, and its line number."""
    line, number = first_line(text)
    return [name.strip() for name in split_rows(line, sep)[0]], number


def _position(path: Path, header: tuple[list[str], int], name: str) -> int:
    names, line = header
    if name not in names:
        raise DataError(path, f"missing column {name!r}; present columns: {names}", line=line)
    positions = [i + 1 for i, other in enumerate(names) if other == name]
    if len(positions) > 1:
        raise DataError(path, f"duplicated column {name!r} (columns {positions} of the header); "
                        "rename all but one", line=line)
    return positions[0] - 1


def read_movielens(path: str | os.PathLike, on_error: str = "raise",
                   with_rating: bool = False) -> pd.DataFrame:
    """Reads MovieLens ratings: ML-100K `u.data`, ML-1M `ratings.dat` or ML-latest `ratings.csv`.

    The layout is detected from the first line: `::` separated (ML-1M/10M), comma separated with a
    `userId,movieId,rating,timestamp` header (ML-latest / 20M / 25M) or whitespace separated
    (ML-100K, including `u1.base` etc.). Ids and timestamps must be numeric; ratings are ignored
    unless `with_rating` (then they must be numeric too).

    Args:
        path: A ratings file, or a directory holding one of `u.data`, `ratings.dat`, `ratings.csv`.
        on_error: `"raise"` or `"skip"` malformed lines.
        with_rating: keep the ratings as a float64 `rating` column.

    Returns:
        Interactions frame ordered by timestamp per user.

    Example:
    >>> import pathlib, tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "ratings.dat").write_text("1::10::5::300\\n1::11::3::100\\n")
    >>> read_movielens(folder)["item"].tolist()
    ['11', '10']
    >>> read_movielens(folder, with_rating=True)["rating"].tolist()
    [3.0, 5.0]
    """
    _check_on_error(on_error)
    path = _movielens_file(Path(path))
    text = read_text(path)
    first = first_line(text)[0]
    fields: dict[str, int | None] = {"user": 0, "item": 1, "timestamp": 3}
    if with_rating:
        fields["rating"] = 2
    if "::" in first:
        layout = Layout("::", 4, fields, numeric_ids=True)
    elif "," in first:
        header = _header(text, ",")
        wanted = {"user": "userId", "item": "movieId", "timestamp": "timestamp",
                  **({"rating": "rating"} if with_rating else {})}
        fields = {key: _position(path, header, name) for key, name in wanted.items()}
        layout = Layout(",", len(header[0]), fields, header=True, numeric_ids=True)
    else:
        layout = Layout(" ", 4, fields, numeric_ids=True)
    return parse_delimited(path, text, layout, on_error)


def read_table(path: str | os.PathLike, user_col: str = "user", item_col: str = "item",
               time_col: str | None = "timestamp", on_error: str = "raise",
               reward_col: str | None = None) -> pd.DataFrame:
    """Reads a CSV (`.csv`, `.tsv`, `.txt`) or Parquet (`.parquet`, `.pq`) table by column name.

    Args:
        path: Table file with a header row (CSV); the format is chosen by extension.
        user_col: Column holding user ids.
        item_col: Column holding item ids.
        time_col: Column of numeric timestamps (Parquet datetime columns become epoch seconds),
            or `None` to use file order as time.
        on_error: `"raise"` or `"skip"` malformed rows (wrong field count, empty id, bad time,
            non-numeric reward).
        reward_col: Column of numeric rewards, kept as a float64 `reward` column; `None` (the
            default) reads no reward.

    Returns:
        Interactions frame with columns renamed to `user`, `item`, `timestamp` (and `reward`).

    Example:
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "log.csv"
    >>> _ = path.write_text("uid,sku,ts\\nu1,a,20\\nu1,b,10\\n")
    >>> read_table(path, "uid", "sku", "ts")["item"].tolist()
    ['b', 'a']
    >>> _ = path.write_text("uid,sku,ts,clicked\\nu1,a,20,1\\nu1,b,10,0\\n")
    >>> read_table(path, "uid", "sku", "ts", reward_col="clicked")["reward"].tolist()
    [0.0, 1.0]
    """
    _check_on_error(on_error)
    named = {"user_col": user_col, "item_col": item_col, "time_col": time_col,
             "reward_col": reward_col}
    given = [(arg, col) for arg, col in named.items() if col is not None]
    for i, (arg, col) in enumerate(given):
        for other, other_col in given[i + 1:]:
            if col == other_col:
                raise ValueError(f"{arg} and {other} name the same column {col!r}: each must "
                                 "be its own column")
    suffix = Path(path).suffix.lower()
    if suffix in _PARQUET_SUFFIXES:
        return _read_parquet(check_file(path), user_col, item_col, time_col, on_error,
                             reward_col)
    if suffix not in _CSV_SUFFIXES:
        _refuse_compressed(path)
        raise DataError(path, f"unknown table extension {suffix!r}; use .csv, .tsv or .parquet")
    path = check_file(path)
    text = read_text(path)
    sep = "\t" if suffix == ".tsv" else ","
    header = _header(text, sep)
    wanted = {"user": user_col, "item": item_col, "timestamp": time_col}
    fields = {key: None if name is None else _position(path, header, name)
              for key, name in wanted.items()}
    if reward_col is not None:
        fields["reward"] = _position(path, header, reward_col)
    return parse_delimited(path, text, Layout(sep, len(header[0]), fields, header=True),
                           on_error)


def _read_parquet(path: Path, user_col: str, item_col: str, time_col: str | None,
                  on_error: str, reward_col: str | None = None) -> pd.DataFrame:
    _refuse_compressed(path)
    try:
        table = pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several types for corrupt files
        raise DataError(path, f"cannot read Parquet file: {err}") from err
    for name in (user_col, item_col, time_col, reward_col):
        if name is not None and name not in table.columns:
            raise DataError(path, f"missing column {name!r}; present columns: "
                            f"{[str(c) for c in table.columns]}")
    if not len(table):
        raise DataError(path, "file is empty (no rows)")
    rows = np.arange(1, len(table) + 1)
    columns = {"user": _ids(table[user_col]), "item": _ids(table[item_col]), "timestamp": rows}
    if time_col is not None:
        times = table[time_col]
        if isinstance(times.dtype, pd.DatetimeTZDtype):
            times = times.dt.tz_convert(None)
        if pd.api.types.is_datetime64_dtype(times.dtype):
            times = (times - pd.Timestamp(0)) / pd.Timedelta(seconds=1)
        kind = times.dtype.kind
        columns["timestamp"] = times.to_numpy() if kind in "iuf" else times.to_numpy(object)
    if reward_col is not None:
        rewards = table[reward_col]
        numeric = rewards.dtype.kind in "biuf"
        columns["reward"] = (rewards.to_numpy(np.float64, na_value=np.nan) if numeric
                             else rewards.to_numpy(object))
    problems = ProblemLog(path, on_error, unit="row")
    return finish(validated_frame(problems, columns, rows, numeric_ids=False), problems)


def _ids(series: pd.Series) -> np.ndarray:
    """Object array of ids; integral floats (ints with nulls) print without `.0`."""
    if series.dtype.kind == "f":
        finite = series.dropna()
        if (finite == finite.round()).all():
            series = series.astype("Int64")
    values = series.astype(object).to_numpy()
    return np.asarray([None if pd.isna(v) else v for v in values], dtype=object)


def read_interactions(path: str | os.PathLike, format: str, on_error: str = "raise",
                      **kwargs) -> pd.DataFrame:
    """Reads interactions in one of `FORMATS`: `"sasrec"`, `"sequences"`, `"movielens"`, `"csv"`,
    `"parquet"`.

    Args:
        path: File (or MovieLens directory).
        format: Which reader to use.
        on_error: `"raise"` or `"skip"`.
        **kwargs: Column names for `"csv"` / `"parquet"` (see `read_table`, e.g.
            `reward_col`), `with_rating` for `"movielens"`.

    Returns:
        Interactions frame.

    Example:
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "seq.txt"
    >>> _ = path.write_text("1 5\\n1 6\\n")
    >>> len(read_interactions(path, "sasrec"))
    2
    """
    if format == "sasrec":
        return read_sasrec(path, on_error=on_error, **kwargs)
    if format == "sequences":
        return read_sequences(path, on_error=on_error, **kwargs)
    if format == "movielens":
        return read_movielens(path, on_error=on_error, **kwargs)
    if format in ("csv", "parquet"):
        expected = _PARQUET_SUFFIXES if format == "parquet" else _CSV_SUFFIXES
        if Path(path).suffix.lower() not in expected:
            _refuse_compressed(path)
            raise DataError(path, f"format={format!r} expects a {' or '.join(expected)} file")
        return read_table(path, on_error=on_error, **kwargs)
    raise ValueError(f"format must be one of {FORMATS}. Received: format={format!r}")
