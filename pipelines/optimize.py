"""`tfrec-attn optimize` / `python -m pipelines.optimize`: prune, quantize and compare a run.

Writes `RUN_DIR/optimize.json`, `RUN_DIR/optimize.png` and the exports under
`RUN_DIR/optimized/` (see `tfrec_attn.optimization.report.optimize_run`) for a SASRec or a DIN
run (`tfrec-attn train --model din`: `optimization.ranker_report.optimize_ranker_run`). A re-run
regenerates them as a whole: exports of methods not chosen this time are removed and
`optimized/saved_models/models.config` lists exactly the SavedModels left. The earlier
`optimize.json`, `optimize.png` and `models.config` are removed before any export is replaced
and the new ones written once every export is finished, so an interrupted run (Ctrl-C) leaves
no report describing files it replaced or deleted.
"""

import argparse
import sys
from pathlib import Path

from tfrec_attn.optimization.methods import check_methods, check_output
from tfrec_attn.optimization.report import METHODS, optimize_run, optimize_table


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tfrec-attn optimize", description=__doc__.splitlines()[0])
    add = p.add_argument
    add("--run-dir", required=True,
        help="a `tfrec-attn train` run directory (SASRec, or `--model din`)")
    add("--methods", default=",".join(METHODS),
        help=f"comma-separated subset of {','.join(METHODS)} (float32 is always included)")
    add("--epochs", type=int, default=None,
        help="fine-tuning epochs for prune and qat (default: prune 3, qat 1)")
    add("--learning-rate", type=float, default=None,
        help="fine-tuning learning rate for prune and qat (default: derived from the run's: "
             "prune 1x, qat 0.1x its --lr; see optimization/report.py)")
    add("--target-sparsity", type=float, default=0.8,
        help="prune: fraction of zero weights, in [0, 1)")
    add("--k", type=int, default=10,
        help="SASRec: items the exported models return (>= 10, at most the run's items); "
             "DIN: the most candidates the `rank` signature returns (>= 1)")
    add("--latency-runs", type=int, default=50, help="timed calls per latency percentile")
    add("--output", help="directory (created if missing) where reports and exports go "
                         "(default: the run directory)")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        # Checks the options, the run type and every setting before any work (nothing written).
        if not Path(args.run_dir).is_dir():  # before --output, which defaults to it
            raise FileNotFoundError(f"--run-dir: no such run directory: {args.run_dir}")
        methods = check_methods(args.methods, name="--methods")
        if args.output is not None:
            check_output(args.output, name="--output")
        report = optimize_run(args.run_dir, methods, epochs=args.epochs,
                              target_sparsity=args.target_sparsity, k=args.k,
                              latency_runs=args.latency_runs, output=args.output,
                              learning_rate=args.learning_rate)
    except (ValueError, FileNotFoundError) as err:
        print(f"tfrec-attn optimize: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: one line, not Keras' traceback
        out = args.output or args.run_dir
        print(f"tfrec-attn optimize: interrupted; {out}/optimize.json was not written (exports "
              f"under {out}/optimized/ may be missing): rerun the same command to optimize the "
              "run again", file=sys.stderr)
        return 130
    print(optimize_table(report))
    out = args.output or args.run_dir
    print(f"\nreport: {out}/optimize.json, {out}/optimize.png; exports: {out}/optimized/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
