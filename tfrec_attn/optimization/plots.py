"""`optimize.png`: deployed size against quality, and latencies, of an `optimize_run` report."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

RUNTIMES = ("tflite", "saved_model")


def _shapes(variants: dict) -> list[str]:
    """The latency figures of the report (`single`, `batch_<n>`), in their recorded order."""
    for record in variants.values():
        for runtime in RUNTIMES:
            if record["latency"][runtime]:
                return list(record["latency"][runtime])
    return []


def plot_optimization(report: dict, path: str | os.PathLike, metric: str = "ndcg@10") -> Path:
    """Deployed size vs test `metric` (labelled scatter) beside p50 latencies per variant.

    Args:
        report: an `optimize_run` report (SASRec: `metric="ndcg@10"`; DIN: `"gauc"`).
        path: the PNG to write.
        metric: the quality field of each variant plotted against its `.tflite` size.

    Returns:
        `path`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = report["variants"]
    names = list(variants)
    fig, (ax_size, ax_time) = plt.subplots(1, 2, figsize=(12, 4.5))
    points = {}  # variants at the same point share one label
    for name in names:
        v = variants[name]
        points.setdefault((v["size_bytes"] / 1024, v[metric]), []).append(name)
    for (size, quality), labels in points.items():
        ax_size.scatter(size, quality)
        ax_size.annotate(" = ".join(labels), (size, quality), textcoords="offset points",
                         xytext=(4, 4))
    ax_size.set(xlabel=".tflite size (KiB)",
                ylabel=f"test {metric.upper()} ({report['protocol']})", title="Size vs quality")
    series = [(f"{runtime} {shape}", runtime, shape) for runtime in RUNTIMES
              for shape in _shapes(variants)]
    width = 0.8 / max(len(series), 1)
    for i, (label, runtime, shape) in enumerate(series):
        values = [(variants[n]["latency"][runtime] or {}).get(shape, {}).get("p50_ms", 0.0)
                  for n in names]
        ax_time.bar(np.arange(len(names)) + i * width, values, width, label=label)
    ax_time.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=20)
    ax_time.set(ylabel="p50 latency (ms)", title="Latency (missing bar: no such artifact)")
    ax_time.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
