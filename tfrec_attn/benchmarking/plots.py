"""Log-log PNG of attention cost against sequence length (matplotlib, headless)."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_attention_cost(result: dict, path: str | Path) -> Path:
    """Train-step (solid) and forward (dashed) time beside peak memory, per variant, log-log.

    Args:
        result: the `attention.json` payload (`records` and `slopes`).
        path: PNG to write.

    Returns:
        `path`.
    """
    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(12, 4.5))
    groups = {}
    for record in result["records"]:
        if not record.get("skipped"):
            heads = record.get("num_heads", 1)
            key = record["variant"] if heads == 1 else f"{record['variant']}/h{heads}"
            groups.setdefault(key, []).append(record)
    for key, rows in groups.items():
        rows = sorted(rows, key=lambda r: r["length"])
        lengths = [r["length"] for r in rows]
        slope = (result.get("slopes", {}).get(key) or {}).get("train_step_ms")
        label = key if slope is None else f"{key} (slope {slope:.2f})"
        (line,) = ax_time.plot(lengths, [r["train_step_ms"] for r in rows], marker="o",
                               label=label)
        ax_time.plot(lengths, [r["forward_ms"] for r in rows], linestyle="--",
                     color=line.get_color())
        peaks = [(n, r["peak_bytes"] / 2**20) for n, r in zip(lengths, rows) if r["peak_bytes"]]
        if peaks:
            ax_mem.plot(*zip(*peaks), marker="o", color=line.get_color(), label=key)
    for ax in (ax_time, ax_mem):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_xlabel("sequence length L")
    ax_time.set(ylabel="ms", title="Time: train step (solid), forward (dashed)")
    ax_mem.set(ylabel="MiB", title="Peak memory of a train step")
    ax_time.legend(fontsize=8)
    if ax_mem.lines:
        ax_mem.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
