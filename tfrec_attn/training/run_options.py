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

import contextlib
import dataclasses
import hashlib
import os
import shutil
from pathlib import Path

from tfrec_attn._keras import tf
from tfrec_attn.data import FORMATS
from tfrec_attn.data.readers import _movielens_file  # the reader's own choice of file
from tfrec_attn.training.backup import check_backup_dir
from tfrec_attn.training.distribution import STRATEGIES
from tfrec_attn.validation import (
    DataOptionError,
    check_choice,
    check_directory_path,
    check_model_name,
    check_rate,
)

ON_ERROR = ("raise", "skip")  # `RunOptions.on_error`: the readers' choices


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
        on_error: str. `"raise"` on the data file's first malformed line, or `"skip"`
            malformed lines (the count and the first problem in one `DataWarning`,
            `data.readers`; the count in `metrics.json` `dataset.skipped_lines`, but for the
            policy). Defaults to `"raise"`.
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
            and the files derived from it, which are deleted only once the new run has
            written its `metrics.json` and put back if it fails (`replacing_run`); without it
            such a run is refused (`check_output_dir`). Defaults to `False`.

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
    on_error: str = "raise"  # or "skip" malformed lines of the data file (data/readers.py)
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
        check_choice("on_error", self.on_error, ON_ERROR)
        check_strategy_and_jit(self)
        check_backup_and_ema(self)
        check_output_paths(self)


def check_output_paths(options) -> None:
    """Before any work: `output` and `export_root` are directories (or can be created: no
    file in the way), and the model `name` is one directory under the export root (no file
    there either: the export would fail only after training)."""
    for field in ("output", "export_root"):
        if getattr(options, field, None):
            check_directory_path(field, getattr(options, field))
    if getattr(options, "export_root", None) and hasattr(options, "name"):
        check_model_name(options.name)
        check_directory_path("export_root/name", Path(options.export_root) / options.name)


def check_data_source(options) -> None:
    """`format` is a reader's or `"synthetic"`, a reader has a `data` path, and the
    generator is given neither a path nor `on_error="skip"` (it reads no file)."""
    if options.format not in (*FORMATS, "synthetic"):
        raise ValueError(f"format must be one of {(*FORMATS, 'synthetic')}. "
                         f"Received: format={options.format!r}")
    if options.format != "synthetic" and not options.data:
        raise ValueError(f"--data is required for format {options.format!r}.")
    if options.format == "synthetic" and options.data:
        raise ValueError(f"--data {options.data!r} is not read by format 'synthetic' (the "
                         f"default): name the file's format, one of {FORMATS}.")
    if options.format == "synthetic" and getattr(options, "on_error", None) == "skip":
        raise ValueError(f"--on-error {options.on_error} drops a data file's malformed lines; "
                         "format 'synthetic' (the default) reads no file. Give --data and "
                         f"its format, one of {FORMATS}, or leave --on-error out.")


def data_source(options) -> dict:
    """What identifies the data file(s) a run reads, for its `metrics.json` `"dataset"`:
    `"path"`, `options.data` made absolute (the run can be reloaded from any directory), and
    `"fingerprint"` (`data_fingerprint`); `{}` for synthetic data, which the generator
    settings in the run's options identify.

    Example:
    >>> import pathlib, tempfile, types
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "seq.txt"
    >>> _ = path.write_text("1 5\\n")
    >>> source = data_source(types.SimpleNamespace(format="sasrec", data=str(path)))
    >>> source["path"] == str(path), source["fingerprint"]["seq.txt"]["bytes"]
    (True, 4)
    >>> data_source(types.SimpleNamespace(format="synthetic", data=None))
    {}
    """
    if options.format == "synthetic":
        return {}
    path = os.path.abspath(options.data)
    return {"path": path, "fingerprint": data_fingerprint(path, options.format)}


def data_fingerprint(path: str | os.PathLike, format: str) -> dict:
    """`{name: {"bytes": size, "sha256": hex digest}}` of each file the `format` reader reads
    for `path` (the file itself, or the ratings file a MovieLens directory holds), by its name
    inside `path` (a file: its own name)."""
    path = Path(path)
    files = [_movielens_file(path)] if format == "movielens" and path.is_dir() else [path]
    fingerprint = {}
    for file in files:
        digest = hashlib.sha256()
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        name = file.name if file == path else file.relative_to(path).as_posix()
        fingerprint[name] = {"bytes": file.stat().st_size, "sha256": digest.hexdigest()}
    return fingerprint


# What a finished run directory holds besides the run's own files, derived from that run by
# `tfrec-attn evaluate` / `optimize`, and its TensorBoard logs: stale once the run is replaced.
DERIVED_RUN_FILES = ("evaluation.json", "optimize.json", "optimize.png", "optimized", "tensorboard")
# The files every run type writes before its metrics.json (weights, vocabulary, curves): a run
# that fails after writing them must not leave them beside the metrics.json of the run it was
# to replace. (Not `export/`: a non-chief worker's scratch export lives in a temporary run
# directory, never a finished one, and an `--export-root` the user put inside the run
# directory holds other models too.)
RUN_OWN_FILES = ("checkpoint", "item_vocabulary.json", "training_curves.png")
SET_ASIDE = DERIVED_RUN_FILES + RUN_OWN_FILES  # what `replacing_run` moves and puts back
# Where `replacing_run` keeps the replaced run's own and derived files (and a copy of its
# metrics.json) while the new run trains: a hidden directory inside the run directory.
REPLACED_RUN_DIR = ".replaced-run"


class OutputExistsError(FileExistsError):
    """`output` already holds a finished run and `overwrite` was not asked for."""


def check_output_dir(output, overwrite: bool) -> None:
    """Refuses to train into a directory holding a finished run (its `metrics.json`), unless
    `overwrite`. Only checks: `replacing_run` sets the replaced run's files aside. An
    interrupted run (no `metrics.json` yet) may be resumed into (`backup_dir`).

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
    >>> check_output_dir(out, overwrite=True)  # allowed, and nothing is removed
    >>> sorted(p.name for p in out.iterdir())
    ['metrics.json']
    """
    out = Path(output)
    if (out / "metrics.json").exists() and not overwrite:
        raise OutputExistsError(f"{out} holds a finished run (metrics.json); choose another "
                                "--output, or pass --overwrite to replace it")


@contextlib.contextmanager
def replacing_run(output):
    """Around a run training into `output`: the finished run already there keeps its
    `metrics.json` in place, and its other files (`RUN_OWN_FILES`: weights, vocabulary, curves;
    `DERIVED_RUN_FILES`: evaluate / optimize reports and TensorBoard logs, which would describe
    another model) are moved aside into `output/REPLACED_RUN_DIR` (with a copy of its
    `metrics.json`) when the run starts, and deleted once the new run has returned (it wrote its
    `metrics.json`). If the run fails, whatever it wrote under those names is removed and the
    old files are put back, so a failed `--overwrite` (even one that failed after saving its
    weights, e.g. while exporting) leaves the old run as it was. Nothing happens without a
    finished run in `output`. A set-aside left by a process that was killed first is settled
    when the next run starts (`settle_replaced_run`).

    Example:
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (out / "metrics.json").write_text("old")
    >>> _ = (out / "evaluation.json").write_text("of the old run")
    >>> try:
    ...     with replacing_run(out):
    ...         sorted(p.name for p in out.iterdir())
    ...         raise RuntimeError("the new run failed")
    ... except RuntimeError:
    ...     pass
    ['.replaced-run', 'metrics.json']
    >>> sorted(p.name for p in out.iterdir())  # put back
    ['evaluation.json', 'metrics.json']
    >>> with replacing_run(out):
    ...     _ = (out / "metrics.json").write_text("new")
    >>> sorted(p.name for p in out.iterdir())  # deleted: it described the replaced run
    ['metrics.json']
    """
    out = Path(output)
    settle_replaced_run(out)
    aside = out / REPLACED_RUN_DIR
    names = [name for name in SET_ASIDE if (out / name).exists()]
    if not (out / "metrics.json").exists():
        yield
        return
    aside.mkdir()
    shutil.copy2(out / "metrics.json", aside / "metrics.json")  # which run they belong to
    for name in names:
        os.replace(out / name, aside / name)
    try:
        yield
    except BaseException:
        _restore_replaced_run(out)
        raise
    shutil.rmtree(aside)


def check_not_being_replaced(run_dir) -> None:
    """Refuses to read a run whose files `replacing_run` has set aside: a `train --overwrite`
    is writing new ones there (or was killed doing so), so the checkpoint, vocabulary and
    `metrics.json` may belong to different runs.

    Raises:
        ValueError: `run_dir/REPLACED_RUN_DIR` exists; the message says how to settle it.
    """
    if (Path(run_dir) / REPLACED_RUN_DIR).is_dir():
        raise ValueError(
            f"{run_dir} is being replaced by `tfrec-attn train --overwrite` (the replaced run's "
            f"files are in {REPLACED_RUN_DIR}/), so its files may belong to two runs. Wait for "
            "that run to finish; if it was killed, the next train into this --output settles "
            "it, or settle it now: python -c \"from tfrec_attn.training.run_options import "
            f"settle_replaced_run; settle_replaced_run('{run_dir}')\"")


def settle_replaced_run(output) -> None:
    """Settles `output/REPLACED_RUN_DIR` left by a run killed before `replacing_run` finished:
    deleted if a newer run has written `output/metrics.json` since (the files described the
    replaced run), else put back (the replaced run is still the one in `output`)."""
    out = Path(output)
    aside = out / REPLACED_RUN_DIR
    if not aside.is_dir():
        return
    current, replaced = out / "metrics.json", aside / "metrics.json"
    if current.exists() and replaced.exists() and current.read_bytes() != replaced.read_bytes():
        shutil.rmtree(aside)
    else:
        _restore_replaced_run(out)


def _restore_replaced_run(out: Path) -> None:
    aside = out / REPLACED_RUN_DIR
    for name in SET_ASIDE:
        _remove(out / name)  # what the failed run wrote under that name
        if (aside / name).exists() or (aside / name).is_symlink():
            os.replace(aside / name, out / name)
    shutil.rmtree(aside)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
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
