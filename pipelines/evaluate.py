"""`tfrec-attn evaluate`: re-evaluate a run under several protocols, with paired verdicts.

Also `python -m pipelines.evaluate`. Compares the model with each baseline by a paired bootstrap
and writes `RUN_DIR/evaluation.json` (or `OUTPUT/evaluation.json`); see
`tfrec_attn.training.run_evaluation.evaluate_run`. A DIN run (`tfrec-attn train --model din`)
is re-evaluated on its own test rows by AUC / GAUC against popularity and, with `--against`,
another DIN run on the same data and split; see
`tfrec_attn.training.ranking_evaluation.evaluate_ranking_run`.
"""

import argparse
import sys
from pathlib import Path

from tfrec_attn.evaluation import check_cutoffs
from tfrec_attn.training.ranking_evaluation import (
    evaluate_ranking_run,
    ranking_evaluation_table,
    ranking_run_check_warnings,
    read_run_metrics,
    run_type,
)
from tfrec_attn.training.run_evaluation import (
    EVALUATION,
    PROTOCOLS,
    check_protocols,
    evaluate_run,
    evaluate_runs,
    evaluation_table,
    run_check_warnings,
)
from tfrec_attn.validation import check_directory_path

DEFAULT_KS = "5,10,20"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tfrec-attn evaluate",
                                description=__doc__.splitlines()[0])
    add = p.add_argument
    add("--run-dir", required=True, action="append",
        help="a `tfrec-attn train` run directory; repeat it to pool SASRec runs of the same "
        "data (e.g. seeds): per-user metrics averaged over the runs (needs --output)")
    add("--protocols", help="comma-separated protocols: full, sampled, sampled-N (default: "
        f"{','.join(PROTOCOLS)}, leaving out a sampled one the catalogue is too small for; "
        "SASRec runs only)")
    add("--k", help=f"comma-separated metric cut-offs (default: {DEFAULT_KS}; SASRec runs only)")
    add("--against", help="another DIN run on the same data and split, compared with this one "
        "(DIN runs only)")
    add("--bootstrap", type=int, default=1000,
        help="bootstrap samples per comparison (0: metrics only, no verdicts)")
    add("--seed", type=int, default=None,
        help="seeds sampled negatives and the bootstrap (default: the run's seed)")
    add("--output", help="directory for evaluation.json (default: the run directory)")
    return p


def _run_type(run_dir: str) -> str:
    """The run's `--model` (`"sasrec"` when `metrics.json` is missing: `load_run` names it)."""
    if not (Path(run_dir) / "metrics.json").exists():
        return "sasrec"
    return run_type(read_run_metrics(run_dir))


def _evaluate_din(args) -> None:
    given = [flag for flag, value in (("--protocols", args.protocols), ("--k", args.k))
             if value is not None]
    if given:
        raise ValueError(f"{', '.join(given)}: SASRec options, not options of a DIN run "
                         f"({args.run_dir} is evaluated by AUC / GAUC on its own test rows)")
    if args.against is not None and not Path(args.against).is_dir():
        raise FileNotFoundError(f"--against: no such run directory: {args.against}")
    report = evaluate_ranking_run(args.run_dir, against=args.against, bootstrap=args.bootstrap,
                                  seed=args.seed, output=args.output)
    print(ranking_evaluation_table(report))
    for line in ranking_run_check_warnings(report):
        print(f"tfrec-attn evaluate: warning: {line}", file=sys.stderr)


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def parse_ks(value: str) -> tuple[int, ...]:
    """`"5,10"` -> `(5, 10)`; anything but positive integers is an error naming `--k`.

    Example:
    >>> parse_ks("5, 10")
    (5, 10)
    """
    try:
        return check_cutoffs(int(part) for part in _split(value))
    except ValueError:
        raise ValueError(
            f"--k must be comma-separated positive integers. Received: {value!r}") from None


def _sasrec_options(args) -> tuple[tuple[str, ...] | None, tuple[int, ...]]:
    """The `--protocols` and `--k` of a SASRec evaluation, checked."""
    protocols = None  # the defaults: evaluate_run leaves out one that does not fit
    if args.protocols is not None:
        try:
            protocols = check_protocols(_split(args.protocols))
        except ValueError as err:
            raise ValueError(f"--protocols: {err}") from None
    return protocols, parse_ks(DEFAULT_KS if args.k is None else args.k)


def _evaluate_pooled(args) -> dict:
    """Several `--run-dir`: SASRec runs of the same data, pooled (`evaluate_runs`)."""
    if args.output is None:
        raise ValueError("--output: a directory for the pooled evaluation.json is required "
                         "with several --run-dir (each run's own report is left as it is)")
    if args.against is not None:
        raise ValueError("--against compares two DIN runs; it does not take several --run-dir")
    for run_dir in args.run_dir:
        kind = _run_type(run_dir)
        if kind != "sasrec":
            raise ValueError(f"{run_dir} is a `--model {kind}` run; several --run-dir pool "
                             "SASRec runs only")
    protocols, ks = _sasrec_options(args)
    return evaluate_runs(args.run_dir, args.output, protocols, ks=ks,
                         bootstrap=args.bootstrap, seed=args.seed)


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        for run_dir in args.run_dir:
            if not Path(run_dir).is_dir():
                raise FileNotFoundError(f"--run-dir: no such run directory: {run_dir}")
        if args.output is not None:  # a directory for evaluation.json, checked before any work
            if not args.output:
                raise ValueError("--output must be a directory. Received: --output ''")
            check_directory_path("--output", args.output)
        if args.bootstrap < 0:
            raise ValueError(f"--bootstrap must be >= 0 (0 skips the comparisons). "
                             f"Received: {args.bootstrap}")
        if len(args.run_dir) > 1:
            report = _evaluate_pooled(args)
            print(evaluation_table(report))
            for line in run_check_warnings(report):
                print(f"tfrec-attn evaluate: warning: {line}", file=sys.stderr)
            print(f"\nreport: {args.output}/{EVALUATION}")
            return 0
        args.run_dir = args.run_dir[0]
        kind = _run_type(args.run_dir)
        if kind in ("autoencoder", "policy"):
            raise ValueError(f"{args.run_dir} is a `--model {kind}` run; evaluate re-ranks "
                             "SASRec and DIN runs. Its test metrics and baselines are in "
                             f"{args.run_dir}/metrics.json.")
        if kind == "din":
            _evaluate_din(args)
        else:
            if args.against is not None:
                raise ValueError(f"--against compares two DIN runs; {args.run_dir} is not a "
                                 "`tfrec-attn train --model din` run.")
            protocols, ks = _sasrec_options(args)
            report = evaluate_run(args.run_dir, protocols, ks=ks, bootstrap=args.bootstrap,
                                  seed=args.seed, output=args.output)
            print(evaluation_table(report))
            for line in run_check_warnings(report):
                print(f"tfrec-attn evaluate: warning: {line}", file=sys.stderr)
    except (ValueError, FileNotFoundError) as err:
        print(f"tfrec-attn evaluate: {err}", file=sys.stderr)
        return 2
    print(f"\nreport: {args.output or args.run_dir}/{EVALUATION}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
