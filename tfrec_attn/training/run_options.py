"""Checks shared by the option sets of the train command's models (`RankingOptions` for
`--model din`, `AutoencoderOptions` for `--model autoencoder`; `TrainOptions` for SASRec shares
`check_backup_and_ema`, `check_strategy_and_jit` and `require_full_batch`): one message format,
written once.

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

from tfrec_attn._keras import tf
from tfrec_attn.data import FORMATS
from tfrec_attn.training.backup import check_backup_dir
from tfrec_attn.training.distribution import STRATEGIES
from tfrec_attn.validation import DataOptionError, check_rate


def check_data_source(options) -> None:
    """`format` is a reader's or `"synthetic"`, and a reader has a `data` path."""
    if options.format not in (*FORMATS, "synthetic"):
        raise ValueError(f"format must be one of {(*FORMATS, 'synthetic')}. "
                         f"Received: format={options.format!r}")
    if options.format != "synthetic" and not options.data:
        raise ValueError(f"--data is required for format {options.format!r}.")


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
