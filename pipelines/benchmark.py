"""`python -m pipelines.benchmark speed|attention|variants|families`: training speed, attention
cost, the quality of each attention variant inside the recommender, and of the attention families.

`speed`: epoch time and throughput of the sequential recommender, plus the compute rate of one
fixed-shape train step (FLOPs counted by TF's profiler) against the CPU's measured matmul peak
(`tfrec_attn.benchmarking.speed`; prints the record, and writes speed.json into `--output`).
`attention`: cost of each attention variant against sequence length
(`tfrec_attn.benchmarking.attention_cost`; writes attention.json and attention.png).
`variants`: one train run per `--attention` kind with the same train flags (after `--`); writes
variants.json with each kind's test NDCG@10 / HR@10 and median epoch time.
`families`: DIN (target attention vs mean pooling, test AUC / GAUC), the attention autoencoder
(held-out Recall@20 / NDCG@20 vs popularity and co-occurrence) and the off-policy attention policy
(true reward vs the logging policy) on `--data` (MovieLens) or synthetic data
(`tfrec_attn.benchmarking.families`); writes families.json and prints a table.

Measured on the synthetic generator at a chosen size (default: Amazon-Games-sized, 31k users,
24k items, ~9 events a user), so the numbers are reproducible anywhere. Quality benchmarks are
runs of the train command; docs/BENCHMARKS.md lists both with their commands.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from tfrec_attn.benchmarking import attention_cli, speed
from tfrec_attn.benchmarking.families import families_settings, format_table, run_families
from tfrec_attn.data import DataError
from tfrec_attn.layers import ATTENTION_KINDS
from tfrec_attn.training import run_training
from tfrec_attn.training.distribution import StrategyError
from tfrec_attn.training.run_options import OutputExistsError
from tfrec_attn.training.run_options import check_output_dir as check_run_dir
from tfrec_attn.validation import DataOptionError

VARIANT_FLAGS = ("--attention", "--output", "--export-root")  # set per variant by the benchmark


def check_variant_train_flags(train_argv: list[str]) -> None:
    """Refuses train flags after `--` that the variants benchmark sets itself for each run
    (`VARIANT_FLAGS`: one run per `--kinds` entry, under `--output`, not exported).

    Example:
    >>> check_variant_train_flags(["--epochs", "2", "--attention=local"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: train flags after --: --attention is set by the variants benchmark (use ...
    """
    given = [flag for flag in VARIANT_FLAGS
             if any(arg == flag or arg.startswith(flag + "=") for arg in train_argv)]
    if given:
        raise ValueError(f"train flags after --: {', '.join(given)} "
                         f"{'is' if len(given) == 1 else 'are'} set by the variants benchmark "
                         "(use --kinds to choose the attention kinds, its --output for the run "
                         "directories; runs are not exported)")


def variant_options(kinds: list[str], output: str, train_argv: list[str]) -> dict:
    """One `TrainOptions` per attention kind (the train flags, the kind, its run directory).

    Checks every flag before anything trains; raises `ValueError` naming the bad one.
    """
    from pipelines.train import options_from_args  # the train command's own flag parsing

    if not kinds or "" in kinds or len(set(kinds)) < len(kinds):
        raise ValueError("--kinds must be distinct attention kinds separated by commas. "
                         f"Received: --kinds {','.join(kinds)!r}")
    unknown = sorted(set(kinds) - set(ATTENTION_KINDS))
    if unknown:
        raise ValueError(f"--kinds: unknown {unknown}; choose from {sorted(ATTENTION_KINDS)}")
    check_variant_train_flags(train_argv)
    options = {}
    for kind in kinds:
        try:
            options[kind] = options_from_args(train_argv + [
                "--attention", kind, "--export-root", "", "--output", f"{output}/{kind}"])
            # (TrainOptions has checked the model flags, before any data are read.)
            if not options[kind].overwrite:  # a rerun would stop at this kind's finished run
                check_run_dir(options[kind].output, overwrite=False)
        except (ValueError, OutputExistsError) as err:
            raise ValueError(f"train flags after --: {err}") from err
    data = options[kinds[0]].data
    if data and not Path(data).exists():
        raise ValueError(f"train flags after --: --data {data!r} does not exist")
    return options


def variants(options: dict, output: str, train_argv: list[str]) -> dict:
    """Trains once per attention kind (`variant_options`) and collects the test metrics."""
    results = {}
    for kind, kind_options in options.items():
        metrics = run_training(kind_options)
        seconds = [r["epoch_seconds"] for r in metrics["history"]["valid"]]
        results[kind] = {
            "ndcg@10": metrics["test"]["ndcg@10"], "hr@10": metrics["test"]["hr@10"],
            "epochs": metrics["epochs"], "median_epoch_seconds": float(np.median(seconds)),
            "train_seconds": metrics["train_seconds"], "protocol": metrics["protocol"],
            "attention_options": metrics["model"]["attention_options"],
            # trained again on training + validation events (train_seconds includes it; the
            # epochs and epoch times are the first fit's); a time budget may skip it
            "refit": metrics.get("refit", {}).get("done", False),
        }
        print(f"{kind:10s} NDCG@10 {results[kind]['ndcg@10']:.4f}  HR@10 "
              f"{results[kind]['hr@10']:.4f}  {results[kind]['median_epoch_seconds']:.1f} s/epoch"
              f"  ({results[kind]['epochs']} epochs)", flush=True)
    record = {"train_argv": train_argv, "results": results}
    with open(f"{output}/variants.json", "w") as f:
        json.dump(record, f, indent=2)
    return record


def check_families_args(args) -> None:
    """Raises `ValueError` naming the bad flag of `families`, before anything runs."""
    if args.data is not None and not Path(args.data).exists():
        raise ValueError(f"--data {args.data!r} does not exist")
    families_settings(args.quick, seed=args.seed)  # the settings the flags choose


def families(args) -> dict:
    """Runs the three family measurements and writes `{output}/families.json`."""
    record = run_families(args.data, quick=args.quick, verbose=int(args.verbose),
                          progress=lambda line: print(line, flush=True), seed=args.seed)
    Path(args.output).mkdir(parents=True, exist_ok=True)
    with open(Path(args.output) / "families.json", "w") as f:
        json.dump(record, f, indent=2)
    print(format_table(record))
    print(f"total {record['seconds']} s; wrote {Path(args.output) / 'families.json'}")
    return record


def check_output_dir(path: str) -> None:
    """`--output` must be a directory or not exist yet."""
    if Path(path).exists() and not Path(path).is_dir():
        raise ValueError(f"--output must be a directory, but {path!r} is a file")


def _parser() -> tuple[argparse.ArgumentParser, dict]:
    """The command's parser and its subcommands' parsers by name (for their usage errors)."""
    p = argparse.ArgumentParser(prog="tfrec-attn benchmark")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("speed", help="epoch time / throughput on synthetic data")
    s.add_argument("--users", type=int, default=31000)
    s.add_argument("--items", type=int, default=24000)
    s.add_argument("--length", type=float, default=9.3, help="mean events per user")
    s.add_argument("--max-len", type=int, default=50)
    s.add_argument("--dim", type=int, default=64)
    s.add_argument("--blocks", type=int, default=2)
    s.add_argument("--batch-size", type=int, default=128)
    s.add_argument("--loss", default="softmax", choices=["softmax", "sampled", "bce"])
    s.add_argument("--epochs", type=int, default=3,
                   help="epochs timed (0: only the fixed-shape step)")
    s.add_argument("--xla", "--jit-compile", dest="xla", action="store_true",
                   help="compile the train step with XLA (fixed-shape batches)")
    s.add_argument("--throughput-steps", type=int, default=10,
                   help="timed steps of the fixed (batch, max-len) batch for GFLOP/s")
    s.add_argument("--no-trim", action="store_true", help="pad every batch to max-len")
    s.add_argument("--verbose", type=int, default=2)
    s.add_argument("--output", help="directory: write the printed record to speed.json there")
    a = sub.add_parser("attention", help="attention cost vs sequence length (JSON + PNG)")
    attention_cli.add_arguments(a)
    v = sub.add_parser("variants", help="test NDCG@10 of each --attention kind (train flags "
                       "after --)")
    v.add_argument("--kinds", default=",".join(ATTENTION_KINDS),
                   help="comma-separated attention kinds")
    v.add_argument("--output", required=True, help="directory: one run each, variants.json")
    fam = sub.add_parser("families", help="DIN / attention autoencoder / attention policy "
                         "quality vs their baselines (families.json)")
    fam.add_argument("--output", required=True, help="directory for families.json")
    fam.add_argument("--data", help="MovieLens ratings file or directory (default: synthetic)")
    fam.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    fam.add_argument("--seed", type=int, default=0)
    fam.add_argument("--verbose", action="store_true", help="Keras progress lines")
    return p, {"speed": s, "attention": a, "variants": v, "families": fam}


def _checked(parser: argparse.ArgumentParser, check, *args):
    """`check(*args)`, run before any benchmark: its `ValueError` is a usage error (exit 2).

    Only these up-front checks become usage errors; a `ValueError` raised while a benchmark
    runs is a bug and propagates with its traceback.
    """
    try:
        return check(*args)
    except ValueError as err:
        parser.error(str(err))


def _run_variants(parser: argparse.ArgumentParser, options: dict, output: str,
                  train_argv: list[str]) -> dict:
    """`variants(...)`; what the train command reports as a usage error (a malformed --data
    file, an option that does not fit the data, the strategy) exits 2 the same way here. A
    failure leaves no `output` directory the benchmark created and nothing was written to."""
    created = not Path(output).exists()
    try:
        return variants(options, output, train_argv)
    except (DataError, DataOptionError, StrategyError) as err:  # usage errors of `train`
        flag = "--data: " if isinstance(err, DataError) else ""
        parser.error(f"train flags after --: {flag}{err}")
    finally:
        if created and Path(output).is_dir() and not any(Path(output).iterdir()):
            Path(output).rmdir()


def main(argv=None) -> int:
    p, subs = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    train_argv = argv[argv.index("--") + 1:] if "--" in argv else []
    args = p.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    sub = subs[args.command]
    if "--" in argv and args.command != "variants":
        sub.error("train flags after -- are for the variants command only")
    if args.command == "variants":
        _checked(sub, check_output_dir, args.output)
        options = _checked(sub, variant_options, args.kinds.split(","), args.output, train_argv)
        _run_variants(sub, options, args.output, train_argv)
        return 0
    if args.command == "families":
        _checked(sub, check_output_dir, args.output)
        _checked(sub, check_families_args, args)
        try:
            families(args)
        except DataError as err:  # a malformed --data file, found only when it is read
            sub.error(f"--data: {err}")
        return 0
    if args.command == "attention":
        _checked(sub, check_output_dir, args.output)
        _checked(sub, attention_cli.settings_from_args, args)
        return attention_cli.run_cli(args)
    if args.epochs < 0:
        sub.error(f"--epochs must be >= 0. Received: {args.epochs}")
    _checked(sub, speed.check_speed_args, args)
    if args.output:
        _checked(sub, check_output_dir, args.output)
    record = speed.measure_speed(args)
    print(json.dumps(record, indent=2))
    if args.output:
        print(f"wrote {speed.write_record(record, args.output)}", file=sys.stderr)  # stdout: JSON
    return 0


if __name__ == "__main__":
    sys.exit(main())
