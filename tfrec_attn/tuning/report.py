"""What a search leaves behind: trial records, the best config as train YAML, a PNG, a table."""

import dataclasses
import os
from pathlib import Path

import matplotlib
import yaml

from tfrec_attn.training.run import TrainOptions

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

OBJECTIVE_KEY = "val_ndcg@10"
METRICS = ("val_ndcg@10", "val_hr@10", "val_mrr")
# Run options every best config states, even at their defaults (the rest only when changed).
ALWAYS_WRITTEN = ("format", "output", "epochs", "learning_rate", "eval_protocol", "seed")


def trial_records(trials, fields) -> list[dict]:
    """One dict per keras-tuner trial: hyper-parameters (`fields` only), metrics and cost.

    Args:
        trials: `keras_tuner.engine.trial.Trial` objects (e.g. `tuner.oracle.trials.values()`).
        fields: the search-space fields to report as hyper-parameters.
    """
    records = []
    for trial in sorted(trials, key=lambda t: int(t.trial_id)):
        values = trial.hyperparameters.values
        record = {"trial_id": trial.trial_id, "status": str(trial.status),
                  "hyperparameters": {k: values[k] for k in fields if k in values}}
        for name in METRICS:
            best = _metric(trial, name, best=True)
            record[name] = None if best is None else float(best)
        for name in ("epochs", "best_epoch"):
            last = _metric(trial, name)
            record[name] = None if last is None else int(last)
        record["seconds"] = _metric(trial, "seconds")
        record["stopped_by_time_budget"] = bool(_metric(trial, "stopped_by_time_budget"))
        hyperband = {k.split("/", 1)[1]: v for k, v in values.items() if k.startswith("tuner/")}
        if hyperband:
            record["hyperband"] = hyperband
        if trial.message:
            record["error"] = trial.message.strip().splitlines()[-1]
        records.append(record)
    return records


def _metric(trial, name: str, best: bool = False):
    """A metric the trial reported (its best or last value), or `None`."""
    if not trial.metrics.exists(name):
        return None
    return trial.metrics.get_best_value(name) if best else trial.metrics.get_last_value(name)


def best_record(records: list[dict]) -> dict | None:
    """The completed trial with the highest `val_ndcg@10` (first one on ties)."""
    scored = [r for r in records if r[OBJECTIVE_KEY] is not None]
    return max(scored, key=lambda r: r[OBJECTIVE_KEY]) if scored else None


def best_config(train: TrainOptions, hyperparameters: dict, output: str) -> dict:
    """`tfrec-attn train --config` options retraining the best trial: run options + `model:`.

    Args:
        train: the search's run options (data, split, per-trial epochs, base `model:`).
        hyperparameters: the best trial's values (`learning_rate` becomes a run option).
        output: the retrained run's directory.

    Paths (data, export root, backup) are written absolute: the config trains from any
    directory.
    """
    values = dict(hyperparameters)
    defaults = TrainOptions()
    config = {}
    for field in dataclasses.fields(TrainOptions):
        value = getattr(train, field.name)
        if field.name in ALWAYS_WRITTEN or (field.name != "model"
                                            and value != getattr(defaults, field.name)):
            config[field.name] = value
    for path in ("data", "export_root", "backup_dir"):  # as the config trains from anywhere
        if config.get(path):
            config[path] = os.path.abspath(config[path])
    config["output"] = output
    config["learning_rate"] = float(values.pop("learning_rate", train.learning_rate))
    config["model"] = {**train.model, **values}
    return config


def write_best_config(config: dict, path: str | Path, header: str) -> Path:
    """Writes `config` as YAML (run options first, `model:` last) under a comment `header`."""
    path = Path(path)
    lines = "".join(f"# {line}\n" for line in header.splitlines())
    path.write_text(lines + yaml.safe_dump(config, sort_keys=False))
    return path


def plot_trials(records: list[dict], path: str | Path) -> Path:
    """Bar chart of the best `val_ndcg@10` of every scored trial, best first."""
    scored = sorted((r for r in records if r[OBJECTIVE_KEY] is not None),
                    key=lambda r: -r[OBJECTIVE_KEY])
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(scored) + 2), 4))
    values = [r[OBJECTIVE_KEY] for r in scored]
    colors = ["tab:green"] + ["tab:blue"] * (len(scored) - 1) if scored else []
    ax.bar(range(len(scored)), values, color=colors)
    ax.set_xticks(range(len(scored)), [r["trial_id"] for r in scored], rotation=90)
    ax.set(xlabel="trial (sorted)", ylabel="best validation NDCG@10",
           title=f"Tuning: {len(scored)} trials")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def tuning_table(report: dict, top: int = 10) -> str:
    """A plain-text table of the `top` trials by validation NDCG@10, with their settings."""
    records = sorted((r for r in report["trials"] if r[OBJECTIVE_KEY] is not None),
                     key=lambda r: -r[OBJECTIVE_KEY])[:top]
    lines = [f"{report['tuner']} search: {len(report['trials'])} trials "
             f"({report['eval_protocol']} protocol); best first",
             f"{'trial':>6s}{'ndcg@10':>10s}{'hr@10':>9s}{'epochs':>8s}{'seconds':>9s}  settings"]
    for r in records:
        settings = " ".join(f"{k}={_short(v)}" for k, v in r["hyperparameters"].items())
        epochs = f"{r['epochs']}{'*' if r.get('stopped_by_time_budget') else ''}"
        lines.append(f"{r['trial_id']:>6s}{r[OBJECTIVE_KEY]:10.4f}{r['val_hr@10']:9.4f}"
                     f"{epochs:>8s}{r['seconds']:9.1f}  {settings}")
    if any(r.get("stopped_by_time_budget") for r in records):
        lines.append("*: a time budget (--max-train-minutes, or the search's "
                     "--max-tune-minutes) stopped the trial before its epochs ran out")
    if report.get("stopped_by_time_budget"):
        lines.append(f"the --max-tune-minutes budget stopped the search after "
                     f"{len(report['trials'])} of {report['max_trials']} trials")
    return "\n".join(lines)


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
