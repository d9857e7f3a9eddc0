"""`tfrec-attn benchmark attention`: options, the measuring child process, outputs.

Writes `attention.json` (records, slopes, speedups, settings, machine) and `attention.png`.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tfrec_attn.benchmarking.attention_cost import (
    FULL_GRID,
    MEMORY_ENV,
    QUICK_GRID,
    VARIANTS,
    check_lengths,
    memory_stats_available,
    run_benchmark,
)
from tfrec_attn.benchmarking.plots import plot_attention_cost

CHILD_MODULE = "tfrec_attn.benchmarking.attention_cli"


def add_arguments(parser) -> None:
    """Options of `tfrec-attn benchmark attention` (= `python -m pipelines.benchmark attention`)."""
    add = parser.add_argument
    add("--output", required=True, help="directory for attention.json and attention.png")
    add("--quick", action="store_true", help="reduced grid (64..1024, batch 4, 3 repeats)")
    add("--lengths", type=int, nargs="+", help="sequence lengths (default 64..4096)")
    add("--variants", nargs="+", default=list(VARIANTS), help=f"of {', '.join(VARIANTS)}")
    add("--heads", type=int, nargs="+", default=[1], help="head counts to measure (e.g. 1 4)")
    add("--dim", type=int, default=64, help="model width d")
    add("--batch-size", type=int, help="default 8 (quick: 4)")
    add("--repeats", type=int, help="timed calls per point, median reported (default 5)")
    add("--warmup", type=int, help="untimed calls before timing (default 2)")
    add("--memory-cap-gb", type=float, default=8.0,
        help="skip a point whose predicted peak exceeds this (recorded with the reason)")
    add("--no-memory", action="store_true", help="skip the peak-memory measurement")
    add("--seed", type=int, default=0)


def settings_from_args(args) -> dict:
    """Validated settings dict (quick or full grid defaults filled in); ValueError if bad."""
    grid = QUICK_GRID if args.quick else FULL_GRID
    settings = {"quick": bool(args.quick), "variants": list(args.variants),
                "heads": list(args.heads), "dim": args.dim,
                "lengths": check_lengths(args.lengths or grid["lengths"]),
                "memory_cap_gb": args.memory_cap_gb, "seed": args.seed}
    for name in ("batch_size", "repeats", "warmup"):
        value = getattr(args, name)
        settings[name] = grid[name] if value is None else value
    for name in ("dim", "batch_size", "repeats"):
        if settings[name] <= 0:
            raise ValueError(f"{name} must be positive. Received: {name}={settings[name]}")
    if settings["warmup"] < 0 or settings["memory_cap_gb"] <= 0:
        raise ValueError(f"warmup must be >= 0 and memory_cap_gb positive. Received: "
                         f"warmup={settings['warmup']}, memory_cap_gb={args.memory_cap_gb}")
    bad = [h for h in settings["heads"] if h <= 0 or settings["dim"] % h]
    if bad:
        raise ValueError(f"heads must be positive divisors of dim={settings['dim']}. "
                         f"Received: heads={settings['heads']}")
    unknown = [v for v in settings["variants"] if v not in VARIANTS]
    if unknown:
        raise ValueError(f"variants: unknown {unknown}; choose from {list(VARIANTS)}")
    return settings


def settings_to_argv(output: str, settings: dict, memory: bool) -> list[str]:
    """Command-line arguments that reproduce `settings` (for the measuring child process)."""
    argv = ["--output", str(output), "--lengths", *map(str, settings["lengths"]),
            "--variants", *settings["variants"], "--heads", *map(str, settings["heads"])]
    for name in ("dim", "batch_size", "repeats", "warmup", "memory_cap_gb", "seed"):
        argv += ["--" + name.replace("_", "-"), str(settings[name])]
    return argv + (["--quick"] if settings["quick"] else []) + ([] if memory else ["--no-memory"])


def run_cli(args, log=print) -> int:
    """Runs the benchmark for parsed `args`, writing `attention.json` and `attention.png`.

    Peak memory needs the allocator statistics that only `TF_CPU_ALLOCATOR_USE_BFC=true` at
    TensorFlow start-up gives; without them, the whole benchmark runs in one child process.
    """
    settings = settings_from_args(args)
    memory = not args.no_memory
    if memory and not memory_stats_available():
        if os.environ.get(MEMORY_ENV) != "true":
            log(f"(re-running in a child process with {MEMORY_ENV}=true for allocator stats)")
            env = {**os.environ, MEMORY_ENV: "true"}
            command = [sys.executable, "-m", CHILD_MODULE, *settings_to_argv(args.output, settings,
                                                                          memory)]
            return subprocess.run(command, env=env, check=False).returncode
        log("WARNING: CPU allocator statistics unavailable; peak memory not measured")
        memory = False
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    result = run_benchmark(settings, memory, log)
    result["settings"]["wall_seconds"] = round(time.monotonic() - started, 1)
    (out / "attention.json").write_text(json.dumps(result, indent=2) + "\n")
    plot_attention_cost(result, out / "attention.png")
    log(summary(result))
    log(f"wrote {out / 'attention.json'} and {out / 'attention.png'}")
    return 0


def summary(result: dict) -> str:
    """Slopes and speedups as a few printable lines."""
    lines = ["log-log slope (forward / train step / peak memory):"]
    for key, s in result["slopes"].items():
        lines.append(f"  {key:<14s} {s['forward_ms']} / {s['train_step_ms']} / {s['peak_bytes']}")
    for title, values in (("speedup vs full at L=2048", result["speedup_at_2048"]),
                          ("memory ratio vs full at L=2048", result["memory_ratio_at_2048"])):
        if values:
            lines.append(f"{title}: {json.dumps(values)}")
    longest = result["at_longest_full_length"]
    if longest["length"]:
        lines.append(f"at L={longest['length']}: speedup {json.dumps(longest['speedup'])}, "
                     f"memory ratio {json.dumps(longest['memory_ratio'])}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tfrec_attn.benchmarking.attention_cli")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:  # only the flags are a usage error; a ValueError while measuring keeps its traceback
        settings_from_args(args)
    except ValueError as err:
        parser.error(str(err))
    return run_cli(args)


if __name__ == "__main__":
    sys.exit(main())
