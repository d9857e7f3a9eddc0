"""Re-evaluating a finished DIN run (`tfrec-attn train --model din`), with paired verdicts.

A DIN run directory (written by `run_ranking_training`) holds `metrics.json` (`"model"`: the
`DINConfig` fields; `"options"`: the `RankingOptions` fields except `model`; `"dataset"`: the
data's sizes), `item_vocabulary.json` and `checkpoint/weights` (the tower's weights).
`load_ranking_run` rebuilds the data and `ranking_split` from the recorded options (the same
seed gives the same test rows and negatives), the tower from `"model"`, and restores its weights.

`evaluate_ranking_run` scores the run's test rows with the tower, training popularity and,
optionally, the tower of another DIN run on the same data and split, and compares the model with
each of them by a bootstrap over users (`evaluation.compare_ctr_scores`: GAUC and AUC).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from tfrec_attn._keras import keras
from tfrec_attn.data import Vocabulary, build_sequences
from tfrec_attn.evaluation import PopularityRecommender
from tfrec_attn.evaluation.ctr_comparison import VERDICT_METRIC, compare_ctr_scores
from tfrec_attn.models import DINConfig, build_din_tower
from tfrec_attn.training.ctr_evaluation import ctr_metrics, tower_logits
from tfrec_attn.training.ranking_run import RankingOptions, RankingSplit, ranking_split
from tfrec_attn.training.run import load_data, read_json, write_json
from tfrec_attn.training.run_dir import (
    CHECKPOINT,
    METRICS,
    VOCABULARY,
    _require,
    options_from_metrics,
    run_data,
)
from tfrec_attn.training.run_evaluation import (
    CONFIDENCE,
    EVALUATION,
    _check_bootstrap,
    unfaithful_reload,
)
from tfrec_attn.training.run_options import check_not_being_replaced

MODEL, POPULARITY, AGAINST = "model", "popularity", "against"
# The options that fix a run's test rows (users, positives, sampled negatives). Not `max_len`
# (only the history width) nor `valid_negatives` (only the validation rows).
TEST_ROW_OPTIONS = ("data", "format", "seed", "min_events", "test_negatives")
SYNTHETIC_OPTIONS = ("synthetic_users", "synthetic_items", "synthetic_length")
DATASET_SIZES = ("users", "items", "interactions", "test_rows", "valid_rows")


@dataclasses.dataclass
class RankingRun:
    """A reloaded DIN run.

    Attributes:
        path: the run directory.
        options: the run's `RankingOptions`.
        tower: the DIN tower with the run's weights restored.
        split: the run's `RankingSplit` (its `test` rows are those of `metrics.json`).
        vocab_size: id-space size (padding and OOV included).
        metrics: the run's `metrics.json`.
    """

    path: Path
    options: RankingOptions
    tower: keras.Model
    split: RankingSplit
    vocab_size: int
    metrics: dict


def read_run_metrics(run_dir: str | os.PathLike) -> dict:
    """The `metrics.json` of `run_dir` (FileNotFoundError naming the path if missing)."""
    path = _require(Path(run_dir) / METRICS, "Run metrics")
    return read_json(path, "Run metrics")


def is_ranking_run(metrics: dict) -> bool:
    """Whether a run's `metrics.json` is a DIN run's: its options hold the sampled negatives.

    Example:
    >>> is_ranking_run({"options": {"negatives": 1, "test_negatives": 100}})
    True
    >>> is_ranking_run({"options": {"eval_protocol": "full"}})
    False
    """
    options = metrics.get("options")
    return isinstance(options, dict) and {"negatives", "test_negatives"} <= set(options)


def run_type(metrics: dict) -> str:
    """The `--model` of the run whose `metrics.json` this is: `"din"`, `"autoencoder"`,
    `"policy"` or `"sasrec"`, told by an option only that run type records.

    Example:
    >>> run_type({"options": {"events_per_user": 5, "k": 5}}), run_type({"options": {}})
    ('policy', 'sasrec')
    """
    options = metrics.get("options")
    options = options if isinstance(options, dict) else {}
    if is_ranking_run(metrics):
        return "din"
    for name, option in (("autoencoder", "holdout_fraction"), ("policy", "events_per_user")):
        if option in options:
            return name
    return "sasrec"


def ranking_options_from_metrics(metrics: dict, source: str | os.PathLike = METRICS
                                 ) -> RankingOptions:
    """The `RankingOptions` recorded in a DIN run's metrics dict (`model` from `"model"`)."""
    return options_from_metrics(metrics, source, RankingOptions, "run_ranking_training",
                                "DIN run", required=("model", "options", "dataset"))


def split_options(options: RankingOptions) -> dict:
    """The options that fix a run's test rows (`TEST_ROW_OPTIONS`, plus the generator's for
    synthetic data); two runs with equal ones are scored on the same rows.

    Example:
    >>> split_options(RankingOptions(format="synthetic", seed=3))["seed"]
    3
    """
    names = TEST_ROW_OPTIONS + (SYNTHETIC_OPTIONS if options.format == "synthetic" else ())
    values = {name: getattr(options, name) for name in names}
    if values["data"]:
        values["data"] = os.path.normpath(os.path.abspath(values["data"]))
    return values


def check_same_test_rows(run_dir: str | os.PathLike, metrics: dict,
                         other_dir: str | os.PathLike, other: dict) -> None:
    """Raises ValueError (naming both runs and the options that differ) unless the two DIN runs'
    metrics dicts record the same test rows."""
    mine = split_options(ranking_options_from_metrics(metrics, Path(run_dir) / METRICS))
    theirs = split_options(ranking_options_from_metrics(other, Path(other_dir) / METRICS))
    differ = [f"{name}: {mine.get(name)!r} vs {theirs.get(name)!r}"
              for name in sorted(set(mine) | set(theirs)) if mine.get(name) != theirs.get(name)]
    if differ:
        raise ValueError(f"against: {other_dir} was not evaluated on the test rows of {run_dir} "
                         f"(its data options or split seed differ: {'; '.join(differ)}); "
                         "a paired comparison needs the same rows.")


def load_ranking_run(run_dir: str | os.PathLike) -> RankingRun:
    """Reloads the DIN run in `run_dir` (see the module docstring for what it must hold).

    Raises:
        FileNotFoundError: `run_dir`, its metrics, checkpoint, vocabulary or the run's data file
            is missing (the message names the path).
        ValueError: not a DIN run, the data file changed since the run trained (`run_data`:
            its recorded size and SHA-256), the rebuilt data no longer match the run's
            `metrics.json` sizes or vocabulary (the message names the run directory), or a
            `train --overwrite` is replacing the run (`check_not_being_replaced`).
    """
    run_dir = Path(run_dir)
    _require(run_dir, "Run directory")
    check_not_being_replaced(run_dir)
    metrics = read_run_metrics(run_dir)
    if not is_ranking_run(metrics):
        raise ValueError(f"{run_dir} is not a `tfrec-attn train --model din` run (its "
                         f"{METRICS} records no negatives).")
    _require(run_dir / "checkpoint" / "checkpoint", "Checkpoint")
    vocab_path = _require(run_dir / VOCABULARY, "Item vocabulary")
    options = run_data(ranking_options_from_metrics(metrics, run_dir / METRICS),
                       metrics["dataset"], run_dir)
    data = build_sequences(load_data(options), min_events=options.min_events)
    config = DINConfig(**metrics["model"])
    split = ranking_split(data, config.max_len, options.valid_negatives, options.test_negatives,
                          options.seed)
    rebuilt = {"users": data.num_users, "items": data.vocab_size - 2,
               "interactions": data.num_interactions, "test_rows": len(split.test["label"]),
               "valid_rows": len(split.valid["label"])}
    recorded = metrics["dataset"]
    differ = [f"{k}: {recorded.get(k)} recorded, {rebuilt[k]} rebuilt"
              for k in DATASET_SIZES if recorded.get(k) != rebuilt[k]]
    if data.vocab != Vocabulary.from_json(vocab_path) or config.vocab_size != data.vocab_size:
        differ.append(f"the item vocabulary differs from {VOCABULARY}")
    if differ:
        raise ValueError(f"The data of {run_dir} no longer match its {METRICS} "
                         f"({'; '.join(differ)}): the test rows cannot be re-created (was the "
                         "data file changed?).")
    tower = build_din_tower(config)
    tower.load_weights(os.fspath(run_dir / CHECKPOINT)).assert_existing_objects_matched()
    return RankingRun(run_dir, options, tower, split, data.vocab_size, metrics)


def _max_gap(reported: dict, measured: dict) -> float | None:
    keys = set(reported) & set(measured)
    return max((abs(reported[k] - measured[k]) for k in keys), default=None)


def _against_scores(run: RankingRun, other: RankingRun) -> np.ndarray:
    """`other`'s tower on `run`'s test rows (its own histories: the two `max_len` may differ)."""
    for key in ("candidate", "label"):
        if not np.array_equal(run.split.test[key], other.split.test[key]):
            raise ValueError(f"against: the test rows of {other.path} differ from those of "
                             f"{run.path} (test {key}s); a paired comparison needs the same rows.")
    return tower_logits(other.tower, other.split.test)


def evaluate_ranking_run(
    run_dir: str | os.PathLike,
    against: str | os.PathLike | None = None,
    bootstrap: int = 1000,
    seed: int | None = None,
    output: str | os.PathLike | None = None,
) -> dict:
    """Re-evaluates a DIN run's test rows and writes `evaluation.json`.

    Args:
        run_dir: a `tfrec-attn train --model din` run directory.
        against: another DIN run directory on the same data and split (the same
            `split_options`), compared with this run's model; `None` compares with
            popularity only.
        bootstrap: bootstrap samples of each comparison; `0` reports metrics only.
        seed: seeds the bootstrap; `None` uses the run's seed. The test rows are always the
            run's own.
        output: directory for `evaluation.json` (default `run_dir`); no other file is written.

    Returns:
        The report written to `evaluation.json`: `metrics` (`{"auc", "gauc"}` of `model`,
        `popularity` and `against`), `comparisons` (model against each, see
        `compare_ctr_scores`), `run_check` (per scorer, the largest difference from the AUC /
        GAUC in the runs' `metrics.json`: 0.0 when the reload is faithful).

    Raises:
        FileNotFoundError: a run directory or one of its files is missing (named).
        ValueError: a bad argument, `against` on other test rows (refused before anything is
            loaded or written), or data that no longer match a run.
    """
    bootstrap = _check_bootstrap(bootstrap)
    metrics = read_run_metrics(_require(Path(run_dir), "Run directory"))
    other_metrics = None
    if against is not None:
        other_metrics = read_run_metrics(_require(Path(against), "against: run directory"))
        if not is_ranking_run(other_metrics):
            raise ValueError(f"against: {against} is not a `tfrec-attn train --model din` run.")
        if is_ranking_run(metrics):
            check_same_test_rows(run_dir, metrics, against, other_metrics)
    run = load_ranking_run(run_dir)
    seed = run.options.seed if seed is None else int(seed)
    test, negatives = run.split.test, run.split.test_negatives
    counts = PopularityRecommender(run.vocab_size).fit(run.split.train).counts
    scores = {MODEL: tower_logits(run.tower, test), POPULARITY: counts[test["candidate"]]}
    reported = {MODEL: run.metrics["test"], POPULARITY: run.metrics["baselines"][POPULARITY]}
    if against is not None:
        other = load_ranking_run(against)
        scores[AGAINST] = _against_scores(run, other)
        reported[AGAINST] = other.metrics["test"]
    values = {name: ctr_metrics(s, test, negatives) for name, s in scores.items()}
    comparisons = {}
    if bootstrap:
        for name in [n for n in scores if n != MODEL]:
            comparisons[name] = compare_ctr_scores(test["label"], scores[MODEL], scores[name],
                                                   1 + negatives, bootstrap, seed, CONFIDENCE)
    report = {
        "run_dir": os.fspath(run_dir), "model_type": "din",
        "against_run_dir": None if against is None else os.fspath(against),
        "test_users": len(test["label"]) // (1 + negatives), "test_rows": len(test["label"]),
        "test_negatives": negatives, "seed": seed,
        "bootstrap": {"num_samples": bootstrap, "confidence": CONFIDENCE, "unit": "user",
                      "metrics": ["gauc", "auc"], "verdict_metric": VERDICT_METRIC},
        "metrics": values,
        "comparisons": comparisons,
        "run_check": {name: {"max_abs_difference": _max_gap(reported[name], values[name])}
                      for name in values},
    }
    write_json(Path(output if output is not None else run_dir) / EVALUATION, report)
    return report


def ranking_run_check_warnings(report: dict) -> list[str]:
    """One line per scorer whose `run_check` found the reloaded run's AUC / GAUC away from its
    `metrics.json` (the model, popularity, or the `against` run): that reload is not faithful.

    Example:
    >>> report = {"run_dir": "runs/din", "against_run_dir": None, "run_check": {
    ...     "model": {"max_abs_difference": 0.24}, "popularity": {"max_abs_difference": 0.0}}}
    >>> print(*ranking_run_check_warnings(report))  # doctest: +ELLIPSIS
    model: the reloaded run runs/din differs from its metrics.json by up to 0.24 ...
    """
    lines = []
    for name, check in report["run_check"].items():
        gap = check.get("max_abs_difference")
        if gap:
            run_dir = report["against_run_dir"] if name == AGAINST else report["run_dir"]
            lines.append(unfaithful_reload(f"{name}: the reloaded run {run_dir}", gap))
    return lines


def _interval(result: dict) -> str:
    return (f"{result['mean_difference']:+.4f} "
            f"[{result['ci_low']:+.4f}, {result['ci_high']:+.4f}]")


def ranking_evaluation_table(report: dict) -> str:
    """A plain-text table: AUC / GAUC of every scorer, then each comparison's differences with
    their intervals and verdict.

    Args:
        report: an `evaluate_ranking_run` result (or the `evaluation.json` it wrote).

    Returns:
        The table as one string, lines separated by newlines.
    """
    lines = [f"test: {report['test_users']} users, 1 positive + {report['test_negatives']} "
             f"negatives each ({report['test_rows']} rows); bootstrap seed {report['seed']}",
             f"{'':12s}{'auc':>10s}{'gauc':>10s}"]
    for name, values in report["metrics"].items():
        suffix = f"  ({report['against_run_dir']})" if name == AGAINST else ""
        lines.append(f"{name:12s}{values['auc']:10.4f}{values['gauc']:10.4f}{suffix}")
    if report["comparisons"]:
        lines.append("")
    for name, record in report["comparisons"].items():
        lines.append(f"model vs {name}: gauc {_interval(record['gauc'])}; "
                     f"auc {_interval(record['auc'])} -> {record['verdict']}")
    samples = report["bootstrap"]["num_samples"]
    if samples:
        lines += ["", f"[low, high]: {report['bootstrap']['confidence']:.0%} bootstrap interval "
                      f"of model - other, resampling users ({samples} samples); verdict on "
                      f"{report['bootstrap']['verdict_metric']}"]
    return "\n".join(lines)
