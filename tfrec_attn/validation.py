"""Argument checks shared by the model configs: one message format, written once.

Every check raises `ValueError` naming the argument and the received value.

Example:
>>> check_positive_ints({"dim": 0}, ("dim",))
Traceback (most recent call last):
...
ValueError: dim must be a positive int. Received: dim=0
>>> check_choice("pooling", "max", ("attention", "mean"))
Traceback (most recent call last):
...
ValueError: pooling must be one of ('attention', 'mean'). Received: pooling='max'
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np


class DataOptionError(ValueError):
    """An option that does not fit the data it is applied to, found once the data are read
    (e.g. a batch larger than the training set). The message names the option; the train
    command reports it as a usage error."""


def _is_int(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def check_int(name: str, value) -> None:
    """`value` is an int (a bool is not)."""
    if not _is_int(value):
        raise ValueError(f"{name} must be an int. Received: {name}={value!r}")


def check_non_negative_int(name: str, value) -> None:
    """`value` is an int >= 0."""
    if not _is_int(value) or value < 0:
        raise ValueError(f"{name} must be an int >= 0. Received: {name}={value!r}")


def check_positive_int(name: str, value) -> None:
    """`value` is an int > 0."""
    if not _is_int(value) or value <= 0:
        raise ValueError(f"{name} must be a positive int. Received: {name}={value!r}")


def check_positive_ints(values: Mapping[str, Any] | Any, names: Iterable[str]) -> None:
    """Each of `names` (keys of a mapping, or attributes of e.g. a dataclass) is an int > 0."""
    for name in names:
        check_positive_int(name, values[name] if isinstance(values, Mapping)
                           else getattr(values, name))


def check_optional_positive_int(name: str, value) -> None:
    """`value` is `None` or an int > 0."""
    if value is not None and (not _is_int(value) or value <= 0):
        raise ValueError(f"{name} must be a positive int or None. Received: {name}={value!r}")


def check_positive_int_tuple(name: str, values) -> tuple:
    """`values` is a list or tuple of ints > 0 (layer widths); returns it as a tuple."""
    if not isinstance(values, list | tuple) or not all(_is_int(v) and v > 0 for v in values):
        raise ValueError(f"{name} must be a tuple of positive ints. Received: {name}={values!r}")
    return tuple(values)


def check_bool(name: str, value) -> None:
    """`value` is a bool (a string such as `"no"` would otherwise read as true)."""
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be a bool. Received: {name}={value!r}")


def _is_real(value) -> bool:
    return (isinstance(value, int | float | np.integer | np.floating)
            and not isinstance(value, bool | np.bool_) and bool(np.isfinite(value)))


def check_float(name: str, value) -> None:
    """`value` is a finite number (a bool is not)."""
    if not _is_real(value):
        raise ValueError(f"{name} must be a finite number. Received: {name}={value!r}")


def check_positive_float(name: str, value) -> None:
    """`value` is a finite number > 0 (an epsilon, a base)."""
    if not _is_real(value) or value <= 0:
        raise ValueError(f"{name} must be a number > 0. Received: {name}={value!r}")


def check_non_negative_float(name: str, value) -> None:
    """`value` is a finite number >= 0 (a penalty)."""
    if not _is_real(value) or value < 0:
        raise ValueError(f"{name} must be a number >= 0. Received: {name}={value!r}")


def check_int_up_to(name: str, value, high: int, what: str) -> None:
    """`value` is an int in `[1, high]`, `high` being `what` (e.g. "the number of real
    items"): how many items an export or converter returns.

    >>> check_int_up_to("k", 0, 5, "the number of actions")
    Traceback (most recent call last):
    ...
    ValueError: k must be an int in [1, 5] (the number of actions). Received: k=0
    """
    if not _is_int(value) or not 1 <= value <= high:
        raise ValueError(f"{name} must be an int in [1, {high}] ({what}). "
                         f"Received: {name}={value!r}")


def check_choice(name: str, value, choices: tuple) -> None:
    """`value` is one of `choices`."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}. Received: {name}={value!r}")


def check_rate(name: str, value) -> None:
    """`value` is a number in `[0, 1)` (dropout, corruption)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1). Received: {name}={value!r}")


def check_decay(name: str, value) -> None:
    """`value` is in `(0, 1]` (a weight ratio between consecutive steps; 1: no decay)."""
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must be in (0, 1]. Received: {value!r}")


def check_heads_divide(dim: int, num_heads: int) -> None:
    """`dim` splits evenly over `num_heads` attention heads."""
    if dim % num_heads:
        raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")


_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_model_name(name) -> None:
    """A model name is one directory under the export root (TF Serving's `<base>/<name>/<v>`):
    letters, digits, `.`, `_`, `-`, starting with a letter or digit; no path separators, so
    an export cannot land outside its root.

    Example:
    >>> check_model_name("sasrec_ml100k")
    >>> check_model_name("../escaped")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: name must be one directory name (...). Received: name='../escaped'
    """
    if not isinstance(name, str) or not _MODEL_NAME.fullmatch(name):
        raise ValueError("name must be one directory name (letters, digits, '.', '_', '-', "
                         f"starting with a letter or digit). Received: name={name!r}")


def check_directory_path(name: str, path) -> None:
    """`path` is a directory, or does not exist yet and could be created (no regular file at
    it or at any of its parents).

    Example:
    >>> check_directory_path("export_root", "/dev/null/models")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: export_root must be a directory, but /dev/null exists and is not a directory. ...
    """
    path = Path(path)
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                raise ValueError(f"{name} must be a directory, but {part} exists and is not a "
                                 "directory. "
                                 f"Received: {name}={str(path)!r}")
            return
