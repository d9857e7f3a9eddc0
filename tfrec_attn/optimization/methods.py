"""The methods `optimize_run` offers, their fine-tuning settings and the measurements every
report shares (file sizes, latency percentiles), for SASRec runs (`optimization/report.py`) and
DIN runs (`optimization/ranker_report.py`).

Fine-tuning (`prune`, `qat`) runs on the run's own training data and batch size, so the run's
learning rate (the one tuned for that batch size) is the base: `fine_tune_learning_rate` scales
it by `LR_SCALE` (pruning restarts at the run's rate, which kept 80% sparsity within 0.3% of
float32 on Games after 3 epochs; QAT uses a tenth, so the fake-quant ranges settle instead of
chasing large steps). Epochs default to `FINE_TUNE_EPOCHS` (pruning 3: one epoch lost 2.7%
NDCG@10 on Games).
"""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path

import numpy as np

from tfrec_attn.export.serving import write_models_config
from tfrec_attn.optimization.pruning import check_target_sparsity
from tfrec_attn.validation import (
    check_directory_path,
    check_optional_positive_int,
    check_positive_int,
)

METHODS = ("prune", "qat", "ptq-int8", "ptq-float16", "ptq-dynamic")
PTQ = {"ptq-int8": "int8", "ptq-float16": "float16", "ptq-dynamic": "dynamic"}
QAT_QUANTIZATION = "int8"  # full integer: QAT weights plus calibrated float activations
FINE_TUNE_EPOCHS = {"prune": 3, "qat": 1}
LR_SCALE = {"prune": 1.0, "qat": 0.1}  # fine-tuning lr = LR_SCALE * the run's learning rate
WARMUP = 3  # untimed calls before each latency figure
OPTIMIZED = "optimized"  # the exports' folder in the output directory
EXPORT_FOLDERS = ("tflite", "saved_models")
REPORT_FILES = ("optimize.json", "optimize.png")  # in the output directory
MODELS_CONFIG = "models.config"  # TF Serving's --model_config_file, in saved_models/


def check_methods(methods, name: str = "methods") -> tuple[str, ...]:
    """`methods` without duplicates: a sequence of names, or one comma-separated string (as
    `--methods` takes it; items are stripped, and an empty item is an error).

    `name` is what messages call the argument (`"--methods"` for the command).

    Raises:
        ValueError: unknown methods (named), or a string with no or an empty item.
        TypeError: `methods` is not a string or an iterable of strings.

    >>> check_methods(["qat", "prune", "qat"])
    ('qat', 'prune')
    >>> check_methods("ptq-int8, qat")
    ('ptq-int8', 'qat')
    >>> check_methods("prune,,qat")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: methods must be comma-separated method names without empty items. Received: ...
    """
    received = methods
    if isinstance(methods, str):
        if not methods.strip():
            raise ValueError(f"{name} must name at least one method of {METHODS} (float32 is "
                             f"always included). Received: {name}={received!r}")
        methods = tuple(m.strip() for m in methods.split(","))
        if "" in methods:
            raise ValueError(f"{name} must be comma-separated method names without empty "
                             f"items. Received: {name}={received!r}")
    else:
        try:
            methods = tuple(methods)
        except TypeError:
            methods = None
        if methods is None or not all(isinstance(m, str) for m in methods):
            raise TypeError(f"{name} must be a comma-separated string or a sequence of method "
                            f"names from {METHODS}. Received: {name}={received!r}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"{name}: unknown optimization method(s) {unknown}; choose from "
                         f"{METHODS}.")
    return tuple(dict.fromkeys(methods))


def check_output(path: str | os.PathLike, name: str = "output") -> None:
    """`ValueError` if the reports and exports cannot go under `path`: it, or the first of its
    parents that exists, is not a directory (`validation.check_directory_path`), or a folder
    the report writes there is a file.

    >>> check_output(__file__)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: output must be a directory, but ...methods.py exists and is not a directory...
    """
    path = Path(path)
    check_directory_path(name, path)
    for folder in (path / OPTIMIZED, *(path / OPTIMIZED / sub for sub in EXPORT_FOLDERS)):
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"{name}: {str(folder)!r} is a file, where the optimized "
                             "exports go; move it away or choose another directory.")


def remove_stale_exports(root: str | os.PathLike, variants: dict) -> list[Path]:
    """Removes from `root` (a report's `optimized/`) the exports an earlier `optimize_run`
    wrote for variants missing from `variants` (this run's records), so that `optimized/`
    holds exactly what `optimize.json` lists. Only the files the report writes are touched:
    `tflite/<variant>.tflite` and `saved_models/<variant>/` for the known variant names
    (`"float32"` and `METHODS`); returns the removed paths.
    """
    root, removed = Path(root), []
    for name in ("float32", *METHODS):
        record = variants.get(name)
        stale = [] if record else [root / "tflite" / f"{name}.tflite"]
        if not (record and record.get("saved_model")):
            stale.append(root / "saved_models" / name)
        for path in stale:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
            else:
                continue
            removed.append(path)
    return removed


def invalidate_report(out: str | os.PathLike) -> list[Path]:
    """Removes what describes an earlier `optimize_run`'s exports in `out` (`REPORT_FILES` and
    `optimized/saved_models/models.config`) before a run replaces any export; returns the
    removed paths.

    This is how the outputs stay consistent whatever happens to a run: from here on nothing
    describes the exports until the run ends, removes stale exports, writes a `models.config`
    listing exactly its SavedModels (`write_serving_config`) and finally `optimize.json`
    (atomically). An interrupted or failed run thus leaves no report and no `models.config`
    (the exports it left are not described by anything; re-run to regenerate them), never a
    report of files that were since replaced or deleted.
    """
    out = Path(out)
    paths = [out / name for name in REPORT_FILES]
    paths.append(out / OPTIMIZED / "saved_models" / MODELS_CONFIG)
    removed = [path for path in paths if path.is_file() or path.is_symlink()]
    for path in removed:
        path.unlink()
    return removed


def write_serving_config(root: str | os.PathLike, variants: dict) -> Path:
    """Writes `root/saved_models/models.config` (TF Serving's `--model_config_file`) listing
    exactly the variants of `variants` with a SavedModel (base path `/models/<name>`, as the
    folder is mounted in the TF Serving container), replacing the whole file; returns its path.
    """
    path = Path(root) / "saved_models" / MODELS_CONFIG
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_models_config(path, {name: f"/models/{name}" for name, record in
                                      variants.items() if record.get("saved_model")},
                               merge=False)


def check_common_settings(epochs: int | None, target_sparsity: float, latency_runs: int,
                          learning_rate: float | None) -> None:
    """`ValueError` naming the first bad setting shared by every run type's report."""
    check_optional_positive_int("epochs", epochs)
    check_positive_int("latency_runs", latency_runs)
    if learning_rate is not None and not 0 < learning_rate < math.inf:
        raise ValueError(f"learning_rate must be positive and finite. "
                         f"Received: learning_rate={learning_rate}")
    check_target_sparsity(target_sparsity)


def fine_tune_learning_rate(method: str, run_learning_rate: float) -> float:
    """The fine-tuning learning rate of `method` for a run trained at `run_learning_rate`.

    >>> fine_tune_learning_rate("qat", 1e-3)
    0.0001
    """
    if method not in LR_SCALE:
        raise ValueError(f"method must be one of {tuple(LR_SCALE)}. Received: {method!r}")
    if not run_learning_rate > 0:
        raise ValueError(f"run_learning_rate must be positive. Received: {run_learning_rate}")
    return LR_SCALE[method] * run_learning_rate


def fine_tune_settings(run, methods, epochs: int | None, learning_rate: float | None) -> dict:
    """`{method: {"epochs", "learning_rate", "batch_size"}}` for the fine-tuned methods of a
    reloaded `run` (its `options` hold the run's `learning_rate` and `batch_size`)."""
    return {method: {"epochs": FINE_TUNE_EPOCHS[method] if epochs is None else epochs,
                     "learning_rate": (fine_tune_learning_rate(method, run.options.learning_rate)
                                       if learning_rate is None else learning_rate),
                     "batch_size": run.options.batch_size}
            for method in methods if method in FINE_TUNE_EPOCHS}


def file_size(path: str | os.PathLike) -> int:
    """Bytes of a file, or of every file under a directory."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def latency_ms(call, inputs, runs: int, warmup: int = WARMUP) -> dict:
    """`{"p50_ms", "p99_ms"}` of `runs` calls of `call(inputs)` after `warmup` untimed calls.

    >>> sorted(latency_ms(len, [1, 2], runs=3))
    ['p50_ms', 'p99_ms']
    """
    for _ in range(warmup):
        call(inputs)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call(inputs)
        times.append((time.perf_counter() - start) * 1e3)
    return {"p50_ms": round(float(np.percentile(times, 50)), 3),
            "p99_ms": round(float(np.percentile(times, 99)), 3)}


def variant_record(name: str, tflite: dict, protocol: str, sparsity: float, keras_quality,
                   saved: dict | None, note: str | None = None) -> dict:
    """One variant's `optimize.json` record, shared by the SASRec and DIN reports: the
    `.tflite` part (its `"latency"` moved under `"latency"`, beside the SavedModel's), the
    evaluation protocol, sparsity, Keras quality, the SavedModel part and an optional note.

    >>> sorted(variant_record("float32", {"latency": 1.0}, "full", 0.0, None, None))
    ['keras', 'latency', 'method', 'protocol', 'saved_model', 'sparsity']
    """
    latency = {"tflite": tflite.pop("latency"),
               "saved_model": saved.pop("latency") if saved else None}
    record = {"method": name, **tflite, "protocol": protocol, "sparsity": sparsity,
              "keras": keras_quality, "latency": latency, "saved_model": saved}
    if note:
        record["note"] = note
    return record


def quantization_notes(variants: dict) -> list[str]:
    """One line per `dynamic` / `int8` variant whose `.tflite` holds no int8 tensor (its
    `int8_tensors` is 0: TFLite quantized nothing, so the file is a float32 file), for the
    tables under `optimize`'s report; reports without `int8_tensors` get none.

    Example:
    >>> quantization_notes({"ptq-dynamic": {"tflite_quantization": "dynamic", "int8_tensors": 0},
    ...                     "ptq-int8": {"tflite_quantization": "int8", "int8_tensors": 40},
    ...                     "float32": {"tflite_quantization": None, "int8_tensors": 0}})
    ... # doctest: +ELLIPSIS
    ["note: ptq-dynamic's file holds no int8 tensor: TFLite quantized nothing ..."]
    """
    return [f"note: {name}'s file holds no int8 tensor: TFLite quantized nothing (it keeps "
            "weights under 1,024 elements in float32), so it is a float32 file"
            for name, v in variants.items()
            if v.get("tflite_quantization") in ("dynamic", "int8")
            and v.get("int8_tensors", 1) == 0]
