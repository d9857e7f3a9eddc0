"""The hyper-parameter search space over `SASRecConfig` fields and the learning rate."""

import itertools
from collections.abc import Mapping

from tfrec_attn._keras import keras
from tfrec_attn.models.sasrec import LOSSES, SASRecConfig

# Tunable field -> its type. `max_len` is not tunable: it changes the training windows, which
# are built once for the whole search (set it under `model:` instead).
TUNABLE = {
    "dim": int, "num_blocks": int, "num_heads": int, "ffn_dim": int, "dropout": float,
    "l2": float, "learning_rate": float, "loss": str, "positional": str, "activation": str,
    "norm_first": bool,
}
DEFAULT_SEARCH_SPACE = {
    "dim": [32, 64, 128],
    "num_blocks": [1, 2, 3],
    "num_heads": [1, 2],
    "dropout": {"min": 0.1, "max": 0.5},
    "learning_rate": {"min": 1e-4, "max": 1e-2, "sampling": "log"},
    "loss": ["sampled", "softmax", "bce"],  # a choice's first value is keras-tuner's default
}
RANGE_KEYS = ("min", "max", "step", "sampling")
SAMPLINGS = ("linear", "log", "reverse_log")


class SearchSpace:
    """Where each tunable field is searched: a list of choices, a range, or one fixed value.

    The YAML form, e.g. `{dim: [32, 64], dropout: {min: 0.1, max: 0.5}, lr: ...}`, overrides
    `DEFAULT_SEARCH_SPACE` field by field: a list is a choice, a mapping
    `{min, max, step?, sampling?}` a range (ints stay ints; `sampling: log` for rates), a scalar
    a fixed value, and `null` removes the field (the model's base value is used).

    Args:
        overrides: fields to change in `DEFAULT_SEARCH_SPACE`.
        base: the fixed `SASRecConfig` fields (from `model:`), used to check that every
            `dim` the search may pick is divisible by every `num_heads`.

    Example:
    >>> import keras_tuner
    >>> space = SearchSpace({"dim": [16, 32], "loss": "softmax"})
    >>> values = space.sample(keras_tuner.HyperParameters())
    >>> values["dim"], values["loss"]
    (16, 'softmax')
    >>> SearchSpace({"dimm": [8]})
    Traceback (most recent call last):
    ...
    ValueError: search_space.dimm: unknown field; tunable fields are ['activation', 'dim', \
'dropout', 'ffn_dim', 'l2', 'learning_rate', 'loss', 'norm_first', 'num_blocks', 'num_heads', \
'positional']
    """

    def __init__(self, overrides: Mapping | None = None, base: Mapping | None = None):
        if overrides is not None and not isinstance(overrides, Mapping):
            raise ValueError(f"search_space must be a mapping of field -> choices/range. "
                             f"Received: {overrides!r}")
        merged = {**DEFAULT_SEARCH_SPACE, **(overrides or {})}
        self.entries = {field: _parse(field, spec) for field, spec in merged.items()
                        if spec is not None}
        _check_heads_divide_dim(self.entries, dict(base or {}))

    def sample(self, hp) -> dict:
        """Declares every entry on `hp` (a `keras_tuner.HyperParameters`) and returns the values."""
        values = {}
        for field, entry in self.entries.items():
            kind = entry["kind"]
            if kind == "fixed":
                values[field] = hp.Fixed(field, entry["value"])
            elif kind == "choice":
                values[field] = hp.Choice(field, entry["values"])
            else:
                number = hp.Int if TUNABLE[field] is int else hp.Float
                values[field] = number(field, entry["min"], entry["max"], step=entry["step"],
                                       sampling=entry["sampling"])
        return values

    def to_dict(self) -> dict:
        """The normalized entries (`{"kind": "choice" | "range" | "fixed", ...}`) per field."""
        return {field: dict(entry) for field, entry in self.entries.items()}


def _error(field: str, problem: str, value) -> ValueError:
    return ValueError(f"search_space.{field}: {problem}. Received: {value!r}")


def _parse(field: str, spec) -> dict:
    if field not in TUNABLE:
        raise ValueError(f"search_space.{field}: unknown field; tunable fields are "
                         f"{sorted(TUNABLE)}")
    if isinstance(spec, list | tuple):
        if not spec:
            raise _error(field, "an empty list of choices", spec)
        values = [_check_value(field, v) for v in spec]
        if len(set(values)) != len(values):
            raise _error(field, "choices must be distinct", spec)
        return {"kind": "choice", "values": values}
    if isinstance(spec, Mapping):
        return _parse_range(field, spec)
    return {"kind": "fixed", "value": _check_value(field, spec)}


def _parse_range(field: str, spec: Mapping) -> dict:
    kind = TUNABLE[field]
    if kind not in (int, float):
        raise _error(field, f"a {{min, max}} range needs a numeric field; give a list of "
                            f"choices for a {kind.__name__} field", dict(spec))
    unknown = set(spec) - set(RANGE_KEYS)
    if unknown:
        raise _error(field, f"unknown range keys {sorted(unknown)} (allowed: {RANGE_KEYS})",
                     dict(spec))
    if "min" not in spec or "max" not in spec:
        raise _error(field, "a range needs both 'min' and 'max'", dict(spec))
    low, high = _check_value(field, spec["min"]), _check_value(field, spec["max"])
    if not low < high:
        raise _error(field, f"min must be below max (min={low}, max={high})", dict(spec))
    sampling = spec.get("sampling", "linear")
    if sampling not in SAMPLINGS:
        raise _error(field, f"sampling must be one of {SAMPLINGS}", sampling)
    if sampling != "linear" and low <= 0:
        raise _error(field, f"{sampling} sampling needs min > 0", dict(spec))
    step = spec.get("step")
    if step is not None:
        valid = isinstance(step, int) if kind is int else isinstance(step, int | float)
        if isinstance(step, bool) or not valid or step <= 0:
            raise _error(field, f"step must be a positive {kind.__name__}", step)
    if kind is int and step is None and sampling == "linear":
        step = 1
    return {"kind": "range", "min": low, "max": high, "step": step, "sampling": sampling}


def _check_value(field: str, value):
    """`value` converted to the field's type, or a `ValueError` naming the field."""
    kind = TUNABLE[field]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _error(field, f"expected a {kind.__name__}", value)
    if kind is int and value <= 0:
        raise _error(field, "must be a positive int", value)
    if field == "dropout" and not 0.0 <= value < 1.0:
        raise _error(field, "must be in [0, 1)", value)
    if field == "l2" and value < 0:
        raise _error(field, "must be >= 0", value)
    if field == "learning_rate" and value <= 0:
        raise _error(field, "must be positive", value)
    if field == "loss" and value not in LOSSES:
        raise _error(field, f"must be one of {LOSSES}", value)
    if field == "positional" and value not in ("learned", "sinusoidal"):
        raise _error(field, "must be 'learned' or 'sinusoidal'", value)
    if field == "activation":
        try:
            keras.activations.get(value)
        except ValueError as err:
            raise _error(field, "not a Keras activation", value) from err
    return value


def _possible(entry: dict | None, default) -> list:
    """Every value an int entry can take (used for the dim/num_heads divisibility check)."""
    if entry is None:
        return [default]
    if entry["kind"] == "fixed":
        return [entry["value"]]
    if entry["kind"] == "choice":
        return list(entry["values"])
    if entry["sampling"] != "linear" or entry["step"] is None:
        return [entry["min"], entry["max"]]
    return list(range(entry["min"], entry["max"] + 1, entry["step"]))


def _check_heads_divide_dim(entries: dict, base: dict) -> None:
    defaults = SASRecConfig.__dataclass_fields__
    dims = _possible(entries.get("dim"), base.get("dim", defaults["dim"].default))
    heads = _possible(entries.get("num_heads"),
                      base.get("num_heads", defaults["num_heads"].default))
    for dim, num_heads in itertools.product(dims, heads):
        if dim % num_heads:
            raise ValueError(
                f"search_space: dim={dim} is not divisible by num_heads={num_heads}; every dim "
                f"the search can pick must be divisible by every num_heads")
