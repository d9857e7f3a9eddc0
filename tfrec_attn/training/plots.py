"""Training-curve PNGs (matplotlib, headless)."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_training_curves(history: dict, records: list[dict], path: str | Path,
                         baselines: dict | None = None, metric: str = "ndcg@10") -> Path:
    """Loss per epoch beside validation `metric` per epoch (baselines as dashed lines)."""
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 4))
    losses = history.get("loss", [])
    ax_loss.plot(range(1, len(losses) + 1), losses, marker="o")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="Loss")
    epochs = [r["epoch"] for r in records]
    ax_metric.plot(epochs, [r.get(metric) for r in records], marker="o", label="model")
    for name, metrics in (baselines or {}).items():
        if metric in metrics:
            ax_metric.axhline(metrics[metric], linestyle="--", label=name, color="gray"
                              if name == "popularity" else "tab:orange")
    ax_metric.set(xlabel="epoch", ylabel=f"validation {metric}", title=f"Validation {metric}")
    ax_metric.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
