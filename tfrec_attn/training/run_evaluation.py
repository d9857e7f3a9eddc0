"""Re-evaluating a finished run under any protocols, with paired bootstrap verdicts.

`evaluate_run` reloads a `tfrec-attn train` run (`load_run`: options, restored model, the exact
split), ranks the TEST users with the model, both baselines and, for synthetic data, the
Bayes-optimal oracle under every requested protocol, and asks for each baseline whether the model
is *clearly* better: a paired bootstrap over users of the model's per-user NDCG@10 and HR@10
minus the baseline's (`evaluation.paired_bootstrap`). Under a sampled protocol every scorer is
ranked against the same negatives (drawn from `seed` alone), so the comparison stays paired.

Lives in `training` (not `evaluation`, which stays numpy-only) because it restores a Keras model.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from tfrec_attn.evaluation import (
    FIRST_ITEM_ID,
    check_cutoffs,
    evaluate,
    fewest_negatives,
    fit_baselines,
    hits,
    is_protocol_name,
    ndcg_gains,
    paired_bootstrap,
    parse_protocol,
    verdict,
)
from tfrec_attn.training.run import synthetic_oracle, write_json
from tfrec_attn.training.run_dir import load_run
from tfrec_attn.training.scoring import make_score_fn

EVALUATION = "evaluation.json"
PROTOCOLS = ("full", "sampled-100")
COMPARE_K = 10  # the comparisons use NDCG@10 and HR@10, the run's early-stopping metric family
VERDICT_METRIC = f"ndcg@{COMPARE_K}"  # a baseline's overall verdict follows this metric
CONFIDENCE = 0.95
MODEL, ORACLE = "model", "oracle"
PER_USER = {f"ndcg@{COMPARE_K}": ndcg_gains, f"hr@{COMPARE_K}": hits}
NUM_NEGATIVES = 100  # `evaluate`'s default, as in `run_training`: "sampled" is "sampled-100"


def check_protocols(protocols: Sequence[str]) -> tuple[str, ...]:
    """Validated, distinct protocol names (`"full"`, `"sampled"`, `"sampled-N"`).

    Args:
        protocols: protocol names (one string is one name).

    Returns:
        The names as a tuple, in the given order.

    Raises:
        ValueError: no name, an unknown name, or two names for the same protocol (`"sampled"`
            is `"sampled-100"`).

    Example:
    >>> check_protocols(["full", "sampled-50"])
    ('full', 'sampled-50')
    """
    if isinstance(protocols, str):
        protocols = [protocols]
    protocols = tuple(protocols)
    if not protocols:
        raise ValueError("protocols must name at least one protocol. Received: protocols=()")
    counts = []
    for protocol in protocols:
        if not is_protocol_name(protocol):
            raise ValueError(f"unknown protocol {protocol!r} (use 'full', 'sampled' or "
                             f"'sampled-N'). Received: protocols={protocols}")
        try:  # a well-formed name can still ask for no negatives ('sampled-0')
            counts.append(parse_protocol(protocol, num_negatives=NUM_NEGATIVES))
        except ValueError as err:
            raise ValueError(f"{err}. Received: protocols={protocols}") from None
    if len(set(counts)) != len(counts):
        raise ValueError(f"protocols must be distinct ('sampled' is 'sampled-{NUM_NEGATIVES}'). "
                         f"Received: protocols={protocols}")
    return protocols


def fitting_protocols(protocols: Sequence[str] | None, split,
                      vocab_size: int) -> tuple[tuple[str, ...], dict[str, str]]:
    """`(protocols, skipped)`: the protocols a run's test users can be ranked under.

    A sampled protocol needs that many real items outside every test user's history and
    target. Named `protocols` (already `check_protocols`ed) that do not fit raise a
    `ValueError` naming the protocol; with `None` (the defaults, `PROTOCOLS`) they are left
    out, each with why in `skipped` (`full` always fits).
    """
    explicit = protocols is not None
    protocols = PROTOCOLS if protocols is None else protocols  # checked by the caller
    fewest = fewest_negatives(split.test_histories, split.test_targets, vocab_size)
    kept, skipped = [], {}
    for protocol in protocols:
        count = parse_protocol(protocol, NUM_NEGATIVES)
        if count is None or fewest is None or fewest >= count:
            kept.append(protocol)
            continue
        why = (f"protocol {protocol!r} samples {count} negatives a user, but the catalogue has "
               f"{vocab_size - FIRST_ITEM_ID} items and some test user has only {fewest} "
               "outside its history")
        if explicit:
            fewer = f"with fewer negatives ('sampled-{fewest}') or " if fewest else ""
            raise ValueError(f"{why}: evaluate it {fewer}under 'full'.")
        skipped[protocol] = why
    return tuple(kept), skipped


def _check_bootstrap(bootstrap: int) -> int:
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int | np.integer) or (
            bootstrap < 0):
        raise ValueError(f"bootstrap must be a non-negative integer (0 skips the comparisons). "
                         f"Received: bootstrap={bootstrap!r}")
    return int(bootstrap)


def run_scorers(run) -> dict[str, Callable[[list[np.ndarray]], np.ndarray]]:
    """The scorers `evaluate_run` compares, for a loaded run.

    Args:
        run: a `load_run` result (`RunArtifacts`).

    Returns:
        `{name: score_fn}`: `"model"`, `"popularity"` and `"cooccurrence"` (fitted on the
        sequences the run's model trained on, `run.train`), then `"oracle"` when the run's
        data come from the synthetic generator; each maps a list of histories to
        `(batch, vocab_size)` scores.
    """
    scorers = {MODEL: _model_scorer(run)}
    for name, baseline in fit_baselines(run.train, run.vocab_size).items():
        scorers[name] = baseline.score
    oracle = synthetic_oracle(run.options, run.frame, run.split.vocab)
    if oracle is not None:
        scorers[ORACLE] = oracle.score
    return scorers


def _model_scorer(run) -> Callable[[list[np.ndarray]], np.ndarray]:
    """A loaded run's model as a score function (its scorer: the prior's mixture, if any)."""
    return make_score_fn(run.model.scorer, run.model.config.max_len)


def rank_scorers(
    scorers: Mapping[str, Callable],
    histories: Sequence[np.ndarray],
    targets: np.ndarray,
    vocab_size: int,
    protocol: str,
    ks: Sequence[int] = (5, 10, 20),
    seed: int = 0,
) -> tuple[dict[str, dict[str, float]], dict[str, np.ndarray]]:
    """Evaluates every scorer on the same users (and, when sampled, the same negatives).

    Args:
        scorers: `{name: score_fn}` (see `run_scorers`).
        histories: one chronological id array per user.
        targets: int `(n,)` held-out items.
        vocab_size: id-space size, padding and OOV included.
        protocol: `"full"`, `"sampled"` or `"sampled-N"`.
        ks: metric cut-offs.
        seed: seeds the sampled negatives; every scorer is ranked with a fresh sampler from
            it, hence against the same negatives.

    Returns:
        `(metrics, ranks)`: per scorer the `evaluate` summary, and its int64 `(n,)` target
        ranks in input order, so `ranks[a][i]` and `ranks[b][i]` are the same user.

    Example:
    >>> by_id = lambda batch: np.tile(np.arange(8.0), (len(batch), 1))
    >>> metrics, ranks = rank_scorers({"up": by_id, "down": lambda b: -by_id(b)},
    ...                               [np.array([2])], np.array([7]), 8, "full", ks=(1,))
    >>> ranks["up"].tolist(), ranks["down"].tolist(), metrics["up"]["hr@1"]
    ([0], [4], 1.0)
    """
    metrics, ranks = {}, {}
    for name, score_fn in scorers.items():
        metrics[name], ranks[name] = evaluate(score_fn, histories, targets, vocab_size,
                                              protocol, ks=ks, num_negatives=NUM_NEGATIVES,
                                              seed=seed, return_ranks=True)
    return metrics, ranks


def compare_to_baselines(
    ranks: Mapping[str, np.ndarray], baselines: Sequence[str], num_samples: int, seed: int
) -> dict[str, dict]:
    """Paired bootstrap of the model's per-user NDCG@10 and HR@10 against each baseline.

    Args:
        ranks: `{name: (n,) target ranks}` from `rank_scorers`, with a `"model"` entry; that
            entry may also hold several runs' ranks (`(runs, n)`, the same users), whose
            per-user metrics are averaged over the runs before the comparison.
        baselines: names in `ranks` to compare the model with.
        num_samples: bootstrap samples per comparison.
        seed: seeds the bootstrap.

    Returns:
        `{baseline: {"ndcg@10": ..., "hr@10": ..., "verdict": ...}}`: per metric the
        `paired_bootstrap` result (model minus baseline) plus its `verdict`; the record's
        `"verdict"` is the NDCG@10 one.

    Example:
    >>> ranks = {"model": np.array([0, 1, 0, 2]), "pop": np.array([20, 30, 15, 40])}
    >>> out = compare_to_baselines(ranks, ["pop"], num_samples=100, seed=0)
    >>> out["pop"]["verdict"], out["pop"]["hr@10"]["mean_difference"]
    ('better', 1.0)
    """
    runs = np.atleast_2d(ranks[MODEL])  # one row per run
    out = {}
    for name in baselines:
        record = {}
        for metric, per_user in PER_USER.items():
            model_gains = np.mean([per_user(r, COMPARE_K) for r in runs], axis=0)
            result = paired_bootstrap(model_gains, per_user(ranks[name], COMPARE_K),
                                      num_samples, seed, CONFIDENCE)
            record[metric] = {**result, "verdict": verdict(result)}
        record["verdict"] = record[VERDICT_METRIC]["verdict"]
        out[name] = record
    return out


def _run_check(run, protocol: str, seed: int, model_metrics: dict) -> dict | None:
    """How far the reloaded model's metrics are from the run's own `metrics.json` when this
    protocol and seed are the run's (0.0 when the reload is faithful), else `None`."""
    options = run.options
    same_protocol = (parse_protocol(protocol, NUM_NEGATIVES)
                     == parse_protocol(options.eval_protocol, NUM_NEGATIVES))
    if not same_protocol or (protocol != "full" and seed != options.seed):
        return None
    reported = run.metrics.get("test", {})
    keys = sorted(set(reported) & set(model_metrics))
    gap = max((abs(reported[k] - model_metrics[k]) for k in keys), default=None)
    return {"metrics_compared": keys, "max_abs_difference": gap}


def run_check_warnings(report: dict) -> list[str]:
    """One line per protocol whose `run_check` found the reloaded model's metrics away from the
    run's `metrics.json` (a non-zero `max_abs_difference`): the reload is not faithful, so the
    report may not describe the model that was trained.

    Example:
    >>> report = {"run_dir": "runs/a", "protocols": {
    ...     "full": {"run_check": {"max_abs_difference": 0.02}},
    ...     "sampled-100": {"run_check": None}}}
    >>> print(*run_check_warnings(report))  # doctest: +ELLIPSIS
    full protocol: the reloaded model of runs/a differs from its metrics.json by up to 0.02 ...
    """
    lines = []
    for protocol, section in report["protocols"].items():
        checks = section.get("run_check")
        for check in checks if isinstance(checks, list) else [checks or {}]:
            gap = check.get("max_abs_difference")
            if not gap:
                continue
            run_dir = check.get("run_dir", report.get("run_dir"))
            lines.append(unfaithful_reload(
                f"{protocol} protocol: the reloaded model of {run_dir}", gap))
    return lines


def unfaithful_reload(subject: str, gap: float) -> str:
    """The warning for a reload whose test metrics are `gap` away from its `metrics.json`."""
    return (f"{subject} differs from its metrics.json by up to {gap:.4g} (run_check in "
            f"{EVALUATION}): the reload is not faithful, so these numbers may not be the "
            "trained model's.")


def evaluate_run(
    run_dir: str | os.PathLike,
    protocols: Sequence[str] | None = None,
    ks: Sequence[int] = (5, 10, 20),
    bootstrap: int = 1000,
    seed: int | None = None,
    output: str | os.PathLike | None = None,
) -> dict:
    """Evaluates a trained run's test split under `protocols` and writes `evaluation.json`.

    Args:
        run_dir: a `tfrec-attn train` run directory.
        protocols: `"full"`, `"sampled"` or `"sampled-N"` names, evaluated in this order.
            `None`: `PROTOCOLS`, leaving out a sampled one the catalogue is too small for
            (`report["skipped_protocols"]` says why; see `fitting_protocols`).
        ks: metric cut-offs of the reported metrics.
        bootstrap: bootstrap samples of each comparison; `0` reports metrics only.
        seed: seeds the sampled negatives and the bootstrap; `None` uses the run's seed, so the
            run's own protocol reproduces its `metrics.json`.
        output: directory for `evaluation.json` (default `run_dir`); no other file is written.

    Returns:
        The report written to `evaluation.json`: `protocols[name]` holds `metrics` (per scorer:
        `model`, `popularity`, `cooccurrence`, `oracle` for synthetic runs), `comparisons` (per
        baseline, see `compare_to_baselines`) and `run_check` (see the README).

    Raises:
        FileNotFoundError: the run directory or one of its files is missing (named).
        ValueError: a bad argument (named) or data that no longer match the run.
    """
    if protocols is not None:
        protocols = check_protocols(protocols)
    ks = check_cutoffs(ks)
    bootstrap = _check_bootstrap(bootstrap)
    run = load_run(run_dir)
    split = run.split
    protocols, skipped = fitting_protocols(protocols, split, run.vocab_size)
    seed = run.options.seed if seed is None else int(seed)
    scorers = run_scorers(run)
    baselines = [name for name in scorers if name not in (MODEL, ORACLE)]
    report = {
        "run_dir": os.fspath(run_dir), "run_protocol": run.options.eval_protocol,
        **({"skipped_protocols": skipped} if skipped else {}),
        "test_users": len(split.test_targets), "seed": seed, "ks": list(ks),
        "bootstrap": {"num_samples": bootstrap, "confidence": CONFIDENCE,
                      "metrics": list(PER_USER), "verdict_metric": VERDICT_METRIC},
        "protocols": {},
    }
    for protocol in protocols:
        metrics, ranks = rank_scorers(scorers, split.test_histories, split.test_targets,
                                      run.vocab_size, protocol, ks, seed)
        report["protocols"][protocol] = {
            "metrics": metrics,
            "comparisons": (compare_to_baselines(ranks, baselines, bootstrap, seed)
                            if bootstrap else {}),
            "run_check": _run_check(run, protocol, seed, metrics[MODEL]),
        }
    write_json(Path(output if output is not None else run_dir) / EVALUATION, report)
    return report


def _check_same_split(first, run) -> None:
    """Refuses a run whose data or split differ from `first`'s: pooled runs must rank the same
    test users against baselines fitted on the same training sequences (`run.train`: a
    refitted run's include the validation targets, so refitted and other runs do not pool)."""
    refitted = {path: bool(r.metrics.get("refit", {}).get("done"))
                for path, r in ((first.path, first), (run.path, run))}
    if len(set(refitted.values())) > 1:
        done, other = sorted(refitted, key=refitted.get, reverse=True)
        raise ValueError(f"{done} was refitted on the validation targets and {other} was not "
                         "(metrics.json refit.done): their models, and the baselines to compare "
                         "them with, trained on different events; pool runs that all refitted "
                         "or none (--refit / --no-refit)")
    a, b = first.split, run.split
    same = (first.vocab_size == run.vocab_size and len(first.train) == len(run.train)
            and len(a.test_histories) == len(b.test_histories)
            and np.array_equal(a.test_targets, b.test_targets)
            and all(np.array_equal(x, y) for x, y in zip(a.test_histories, b.test_histories))
            and all(np.array_equal(x, y) for x, y in zip(first.train, run.train)))
    if not same:
        synthetic = ("; both are synthetic runs, whose data --seed also generates: runs with "
                     "other --seed values hold other data, so pool seeds of runs on a data file"
                     if first.options.format == run.options.format == "synthetic"
                     and first.options.seed != run.options.seed else "")
        raise ValueError(f"{run.path}: its data, split or training sequences differ from "
                         f"{first.path}'s; pooled runs must be trained on the same data and "
                         "split, all refitted on the validation targets or none (e.g. one "
                         f"config on one data file trained with different --seed values)"
                         f"{synthetic}")


def evaluate_runs(
    run_dirs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    protocols: Sequence[str] | None = None,
    ks: Sequence[int] = (5, 10, 20),
    bootstrap: int = 1000,
    seed: int | None = None,
) -> dict:
    """Pools several runs of the same data (e.g. seeds) and compares them with the baselines.

    One run's verdict mixes two kinds of luck: which users happen to be in the test set, and
    the training seed. Pooling separates the second: each test user's NDCG@10 and HR@10 are
    averaged over the runs (the expected value of one training run for that user), and the
    paired bootstrap over users then asks whether *the training procedure* beats a baseline.
    It does not replace the per-run verdicts (`evaluate_run`), which say whether one trained
    model does.

    Args:
        run_dirs: two or more `tfrec-attn train` SASRec run directories trained on the same data
            and split (the first one's baselines and, for synthetic data, oracle are used).
        output: directory for `evaluation.json` (required: each run's own report is left as is).
        protocols: as in `evaluate_run`.
        ks: metric cut-offs of the reported metrics.
        bootstrap: bootstrap samples of each comparison; `0` reports metrics only.
        seed: seeds the sampled negatives and the bootstrap; `None` uses the first run's seed.
            Every run is ranked against the same negatives.

    Returns:
        The report written to `output/evaluation.json`: as `evaluate_run`'s, with `run_dirs`
        instead of `run_dir`; per protocol `metrics["model"]` is the mean of the runs' metrics,
        `metrics["run i"]` run i's (1-based, in `run_dirs` order), `comparisons` are made on
        the per-user metrics averaged over the runs, and `run_check` is a list, one
        `{"run_dir", ...}` per run (the `evaluate_run` check's keys where it applies).

    Raises:
        FileNotFoundError: a run directory or one of its files is missing (named).
        ValueError: fewer than two runs, a run given twice, `output` one of the runs or inside
            one, runs on different data or splits, or a bad argument (named).
    """
    run_dirs = [os.fspath(d) for d in run_dirs]
    if len(run_dirs) < 2:
        raise ValueError(f"evaluate_runs pools two or more runs. Received: {run_dirs}")
    if len({os.path.realpath(d) for d in run_dirs}) < len(run_dirs):
        raise ValueError(f"run_dirs must be distinct runs. Received: {run_dirs}")
    target = Path(os.path.realpath(output))
    if any(target.is_relative_to(os.path.realpath(d)) for d in run_dirs):
        raise ValueError(f"output must not be one of the pooled runs or inside one (its own "
                         f"{EVALUATION} would be replaced, or a later --overwrite of that run "
                         f"would leave the pooled report in it). Received: "
                         f"output={os.fspath(output)!r}")
    if protocols is not None:
        protocols = check_protocols(protocols)
    ks = check_cutoffs(ks)
    bootstrap = _check_bootstrap(bootstrap)
    runs = [load_run(d) for d in run_dirs]
    for run in runs[1:]:
        _check_same_split(runs[0], run)
    protocols, skipped = fitting_protocols(protocols, runs[0].split, runs[0].vocab_size)
    seed = runs[0].options.seed if seed is None else int(seed)
    names = [f"run {i}" for i in range(1, len(runs) + 1)]
    others = {name: fn for name, fn in run_scorers(runs[0]).items() if name != MODEL}
    scorers = {**{name: _model_scorer(run) for name, run in zip(names, runs)}, **others}
    baselines = [name for name in others if name != ORACLE]
    split = runs[0].split
    report = {
        "run_dirs": run_dirs, "run_protocols": [r.options.eval_protocol for r in runs],
        **({"skipped_protocols": skipped} if skipped else {}),
        "test_users": len(split.test_targets), "seed": seed, "ks": list(ks),
        "bootstrap": {"num_samples": bootstrap, "confidence": CONFIDENCE,
                      "metrics": list(PER_USER), "verdict_metric": VERDICT_METRIC,
                      "pooled": "per-user metrics averaged over the runs"},
        "protocols": {},
    }
    for protocol in protocols:
        metrics, ranks = rank_scorers(scorers, split.test_histories, split.test_targets,
                                      runs[0].vocab_size, protocol, ks, seed)
        per_run = [metrics[name] for name in names]
        mean = {key: float(np.mean([m[key] for m in per_run])) for key in per_run[0]}
        model_ranks = [ranks.pop(name) for name in names]
        report["protocols"][protocol] = {
            "metrics": {MODEL: mean, **metrics},
            "comparisons": (compare_to_baselines({MODEL: model_ranks, **ranks}, baselines,
                                                 bootstrap, seed) if bootstrap else {}),
            "run_check": [{"run_dir": d, **(_run_check(r, protocol, seed, m) or {})}
                          for d, r, m in zip(run_dirs, runs, per_run)],
        }
    write_json(Path(output) / EVALUATION, report)
    return report


def _signed(value: float) -> str:
    return f"{value:+.4f}"


def evaluation_table(report: dict) -> str:
    """A plain-text table per protocol: metrics of every scorer, then the verdicts.

    Args:
        report: an `evaluate_run` or `evaluate_runs` result (or the `evaluation.json` written).

    Returns:
        The table as one string, lines separated by newlines.
    """
    pooled = report.get("run_dirs")
    lines = [f"test: {report['test_users']} users, seed {report['seed']}"]
    if pooled:
        lines += [f"run {i}: {run_dir}" for i, run_dir in enumerate(pooled, 1)]
    model = f"model (mean of {len(pooled)} runs)" if pooled else MODEL
    for protocol, section in report["protocols"].items():
        metrics = section["metrics"]
        keys = [f"{m}@{k}" for k in report["ks"] for m in ("ndcg", "hr")] + ["mrr"]
        width = max(17, len(model) + 1)
        lines += ["", f"{protocol} protocol",
                  f"{'':{width}s}" + "".join(f"{k:>10s}" for k in keys)]
        for name, values in metrics.items():
            label = {ORACLE: "oracle (ceiling)", MODEL: model}.get(name, name)
            lines.append(f"{label:{width}s}" + "".join(f"{values[k]:10.4f}" for k in keys))
        for name, record in section["comparisons"].items():
            parts = [f"{metric} {_signed(r['mean_difference'])} "
                     f"[{_signed(r['ci_low'])}, {_signed(r['ci_high'])}]"
                     for metric, r in record.items() if metric != "verdict"]
            lines.append(f"{model} vs {name}: " + "; ".join(parts) + f" -> {record['verdict']}")
    samples = report["bootstrap"]["num_samples"]
    if samples:
        lines += ["", f"[low, high]: {report['bootstrap']['confidence']:.0%} paired bootstrap "
                      f"interval of model - baseline ({samples} samples); verdict on "
                      f"{report['bootstrap']['verdict_metric']}"]
        if pooled:
            lines.append("pooled: each user's metrics averaged over the runs, then paired "
                         "with the baseline's")
    lines += [f"not evaluated: {why}" for why in report.get("skipped_protocols", {}).values()]
    return "\n".join(lines)
