"""The options and checks shared by the train command's run types (`TrainOptions` for SASRec,
`RankingOptions` for `--model din`, `AutoencoderOptions` for `--model autoencoder`,
`PolicyOptions` for `--model policy`): their common base `RunOptions`, and one message format
for each check, written once.

Example:
>>> from tfrec_attn.models import DINConfig
>>> model_config(DINConfig, {"dim": 8}, vocab_size=5).dim
8
>>> model_config(DINConfig, {"blocks": 2}, vocab_size=5)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: model options ['blocks'] are not DINConfig fields; known: ['attention_activation', ...]
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from tfrec_attn._keras import tf
from tfrec_attn.data import FORMATS
from tfrec_attn.training.backup import check_backup_dir
from tfrec_attn.training.distribution import STRATEGIES
from tfrec_attn.validation import (
    DataOptionError,
    check_directory_path,
    check_model_name,
    check_rate,
)


@dataclasses.dataclass
class RunOptions:
    """The options of every `tfrec-attn train` run type that share their name, type, default
    and meaning. Each run type's options subclass it, adding its own fields (including those
    whose defaults differ: `output`, `name`, `epochs`, `batch_size`, ...) and calling
    `super().__post_init__()` for the checks below.

    Args:
        data: str. The data file or directory; not needed for `format="synthetic"`.
            Defaults to `None`.
        format: str. How to read `data` (a reader's format), or `"synthetic"` for the run
            type's generator. Defaults to `"synthetic"`.
        export_root: str. The TF Serving model base path the model is exported under (and
            added to its `models.config`); `None` disables the export. Defaults to
            `"saved_models"`.
        max_train_minutes: float. Stop training cleanly after this wall time; `None`: no
            limit. Defaults to `None`.
        seed: int. Seeds the data split, sampling and initial weights. Defaults to `0`.
        verbose: int. Keras verbosity (1 = progress bars). Defaults to `1`.
        strategy: str. The `tf.distribute` strategy, one of `STRATEGIES`
            (`distribution.make_strategy`). Defaults to `"default"`.
        jit_compile: bool. XLA-compile the train step on fixed-shape batches. Defaults to
            `False`.
        backup_dir: str. Back up the training state here every epoch, and resume an
            interrupted run from it (`training/backup.py`); `None`: no backup. Defaults to
            `None`.
        ema_decay: float in `[0, 1)`. Evaluate, keep and export an exponential moving average
            of the weights with this decay per step (`weight_averaging.py`); `None`: the
            weights as trained. Defaults to `None`.
        overwrite: bool. Replace the finished run already in `output` (its `metrics.json`)
            and the files derived from it; without it such a run is refused
            (`check_output_dir`). Defaults to `False`.

    Example:
    >>> RunOptions(jit_compile=True).export_root
    'saved_models'
    >>> RunOptions(ema_decay=1.0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: ema_decay must be in [0, 1)...
    """

    data: str | None = None
    format: str = "synthetic"
    export_root: str | None = "saved_models"
    max_train_minutes: float | None = None
    seed: int = 0
    verbose: int = 1
    strategy: str = "default"  # tf.distribute: default / mirrored / multi-worker (distribution.py)
    jit_compile: bool = False  # XLA-compile the train step on fixed-shape batches
    backup_dir: str | None = None  # resume an interrupted run from here (training/backup.py)
    ema_decay: float | None = None  # evaluate/keep an EMA of the weights (weight_averaging.py)
    overwrite: bool = False  # replace a finished run in `output` (check_output_dir)

    def __post_init__(self):
        check_strategy_and_jit(self)
        check_backup_and_ema(self)
        check_output_paths(self)


def check_output_paths(options) -> None:
    """Before any work: `output` and `export_root` are directories (or can be created: no
    file in the way), and the model `name` is one directory under the export root."""
    for field in ("output", "export_root"):
        if getattr(options, field, None):
            check_directory_path(field, getattr(options, field))
    if getattr(options, "export_root", None) and hasattr(options, "name"):
        check_model_name(options.name)


def check_data_source(options) -> None:
    """`format` is a reader's or `"synthetic"`, and a reader has a `data` path."""
    if options.format not in (*FORMATS, "synthetic"):
        raise ValueError(f"format must be one of {(*FORMATS, 'synthetic')}. "
                         f"Received: format={options.format!r}")
    if options.format != "synthetic" and not options.data:
        raise ValueError(f"--data is required for format {options.format!r}.")
    if options.format == "synthetic" and options.data:
        raise ValueError(f"--data {options.data!r} is not read by format 'synthetic' (the "
                         f"default): name the file's format, one of {FORMATS}.")


# What a finished run directory holds besides the run's own files, derived from that run by
# `tfrec-attn evaluate` / `optimize`, and its TensorBoard logs: stale once the run is replaced.
DERIVED_RUN_FILES = ("evaluation.json", "optimize.json", "optimize.png", "optimized", "tensorboard")


class OutputExistsError(FileExistsError):
    """`output` already holds a finished run and `overwrite` was not asked for."""


def check_output_dir(output, overwrite: bool) -> None:
    """Refuses to train into a directory holding a finished run (its `metrics.json`), unless
    `overwrite`, which removes the files derived from that run (`DERIVED_RUN_FILES`) so none
    is left describing another model. An interrupted run (no `metrics.json` yet) may be
    resumed into (`backup_dir`).

    Raises:
        OutputExistsError: a finished run is there and `overwrite` is false.

    Example:
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp())
    >>> check_output_dir(out, overwrite=False)  # empty: fine
    >>> _ = (out / "metrics.json").write_text("{}")
    >>> check_output_dir(out, overwrite=False)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tfrec_attn.training.run_options.OutputExistsError: ... holds a finished run ...
    """
    out = Path(output)
    if not (out / "metrics.json").exists():
        return
    if not overwrite:
        raise OutputExistsError(f"{out} holds a finished run (metrics.json); choose another "
                                "--output, or pass --overwrite to replace it")
    for name in DERIVED_RUN_FILES:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def check_backup_and_ema(options) -> None:
    """`options.backup_dir`, when set, is a directory or does not exist yet (`check_backup_dir`);
    `options.ema_decay`, when set, is in `[0, 1)`."""
    if options.backup_dir is not None:
        check_backup_dir(options.backup_dir)
    if options.ema_decay is not None:
        check_rate("ema_decay", options.ema_decay)


def check_strategy_and_jit(options) -> None:
    """`options.strategy` is one of `STRATEGIES` (`distribution.make_strategy`) and
    `options.jit_compile` is a bool.

    Example:
    >>> import types
    >>> check_strategy_and_jit(types.SimpleNamespace(strategy="tpu", jit_compile=False))
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: strategy must be one of ('default', 'mirrored', 'multi-worker'). Received: ...
    """
    if options.strategy not in STRATEGIES:
        raise ValueError(
            f"strategy must be one of {STRATEGIES}. Received: strategy={options.strategy!r}")
    if not isinstance(options.jit_compile, bool):
        raise ValueError(
            f"jit_compile must be a bool. Received: jit_compile={options.jit_compile!r}")


def require_full_batch(dataset: tf.data.Dataset, rows: str, batch_size: int) -> tf.data.Dataset:
    """`dataset` (batched with `drop_remainder`, as `jit_compile` runs train on) when it has at
    least one batch; otherwise a `DataOptionError` saying the training `rows` (e.g. "the 40
    training sequences") make less than one full batch of `batch_size`.

    Example:
    >>> require_full_batch(tf.data.Dataset.range(3).batch(4, drop_remainder=True),
    ...                    "the 3 training rows", 4)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tfrec_attn.validation.DataOptionError: jit_compile drops ... Received: batch_size=4
    """
    if int(dataset.cardinality()) == 0:
        raise DataOptionError(f"jit_compile drops the last partial batch, and {rows} make less "
                              "than one full batch: lower batch_size. Received: "
                              f"batch_size={batch_size}")
    return dataset


def check_int_at_least(options, name: str, low: int, why: str = "") -> None:
    """`options.<name>` is an int (not a bool) `>= low`; `why` is added to the message."""
    value = getattr(options, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}{why}. Received: {name}={value!r}")


def check_synthetic_sizes(options) -> None:
    """The synthetic generator's sizes (`data.generate_synthetic`: at least one user, two
    items, a mean history length of at least one event), checked up front under the option
    names; they are fields of every run type, and checked whatever the format.

    Example:
    >>> import types
    >>> check_synthetic_sizes(types.SimpleNamespace(synthetic_users=5, synthetic_items=1,
    ...                                             synthetic_length=4.0))
    Traceback (most recent call last):
    ...
    ValueError: synthetic_items must be an int >= 2. Received: synthetic_items=1
    """
    check_int_at_least(options, "synthetic_users", 1)
    check_int_at_least(options, "synthetic_items", 2)
    value = options.synthetic_length
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 1:
        raise ValueError("synthetic_length (the mean events a synthetic user) must be a number "
                         f">= 1. Received: synthetic_length={value!r}")


def check_non_negative_number(options, name: str) -> None:
    """`options.<name>` is an int or float (not a bool) `>= 0` (e.g. an L2 penalty)."""
    value = getattr(options, name) if not isinstance(options, dict) else options.get(name, 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0. Received: {name}={value!r}")


def check_positive_numbers(options, names) -> None:
    """Each `options.<name>` is `None` or a positive int or float (not a bool)."""
    for name in names:
        value = getattr(options, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                  or not value > 0):
            raise ValueError(f"{name} must be a positive number. Received: {name}={value!r}")


def model_config(config_cls, model: dict, vocab_size: int):
    """`config_cls(vocab_size=vocab_size, **model)`, refusing `model` keys that are not its
    fields (and `vocab_size`, which comes from the data) with a message naming them."""
    if "vocab_size" in model:
        raise ValueError("model.vocab_size comes from the data; remove it from the options.")
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(model) - fields)
    if unknown:
        raise ValueError(f"model options {unknown} are not {config_cls.__name__} fields; "
                         f"known: {sorted(fields - {'vocab_size'})}")
    return config_cls(vocab_size=vocab_size, **model)
