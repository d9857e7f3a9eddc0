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
import time
from pathlib import Path

import numpy as np

from tfrec_attn.optimization.pruning import check_target_sparsity
from tfrec_attn.validation import check_optional_positive_int, check_positive_int

METHODS = ("prune", "qat", "ptq-int8", "ptq-float16", "ptq-dynamic")
PTQ = {"ptq-int8": "int8", "ptq-float16": "float16", "ptq-dynamic": "dynamic"}
QAT_QUANTIZATION = "int8"  # full integer: QAT weights plus calibrated float activations
FINE_TUNE_EPOCHS = {"prune": 3, "qat": 1}
LR_SCALE = {"prune": 1.0, "qat": 0.1}  # fine-tuning lr = LR_SCALE * the run's learning rate
WARMUP = 3  # untimed calls before each latency figure


def check_methods(methods) -> tuple[str, ...]:
    """`methods` without duplicates, or `ValueError` naming the unknown ones.

    >>> check_methods(["qat", "prune", "qat"])
    ('qat', 'prune')
    """
    methods = tuple(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown optimization method(s) {unknown}; choose from {METHODS}.")
    return tuple(dict.fromkeys(methods))


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
