"""`tfrec-attn evaluate`: re-evaluate a run under several protocols, with paired verdicts.

Also `python -m pipelines.evaluate`. Compares the model with each baseline by a paired bootstrap
and writes `RUN_DIR/evaluation.json` (or `OUTPUT/evaluation.json`); see
`tfrec_attn.training.run_evaluation.evaluate_run`.
"""

import argparse
import sys
from pathlib import Path

from tfrec_attn.evaluation import check_cutoffs
from tfrec_attn.training.run_evaluation import (
    EVALUATION,
    PROTOCOLS,
    check_protocols,
    evaluate_run,
    evaluation_table,
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tfrec-attn evaluate",
                                description=__doc__.splitlines()[0])
    add = p.add_argument
    add("--run-dir", required=True, help="a `tfrec-attn train` run directory")
    add("--protocols", default=",".join(PROTOCOLS),
        help="comma-separated protocols: full, sampled, sampled-N")
    add("--k", default="5,10,20", help="comma-separated metric cut-offs")
    add("--bootstrap", type=int, default=1000,
        help="bootstrap samples per comparison (0: metrics only, no verdicts)")
    add("--seed", type=int, default=None,
        help="seeds sampled negatives and the bootstrap (default: the run's seed)")
    add("--output", help="directory for evaluation.json (default: the run directory)")
    return p


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


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        try:
            protocols = check_protocols(_split(args.protocols))
        except ValueError as err:
            raise ValueError(f"--protocols: {err}") from None
        if not Path(args.run_dir).is_dir():
            raise FileNotFoundError(f"--run-dir: no such run directory: {args.run_dir}")
        ks = parse_ks(args.k)
        if args.bootstrap < 0:
            raise ValueError(f"--bootstrap must be >= 0 (0 skips the comparisons). "
                             f"Received: {args.bootstrap}")
        report = evaluate_run(args.run_dir, protocols, ks=ks, bootstrap=args.bootstrap,
                              seed=args.seed, output=args.output)
    except (ValueError, FileNotFoundError) as err:
        print(f"tfrec-attn evaluate: {err}", file=sys.stderr)
        return 2
    print(evaluation_table(report))
    print(f"\nreport: {args.output or args.run_dir}/{EVALUATION}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
