"""The `tfrec-attn` console script: `tfrec-attn train ...` runs `pipelines.train`."""

import sys

COMMANDS = {"train": "pipelines.train", "optimize": "pipelines.optimize",
            "tune": "pipelines.tune", "benchmark": "pipelines.benchmark",
            "evaluate": "pipelines.evaluate"}
SUMMARIES = {
    "train": "train, evaluate and export a recommender (SASRec, DIN, autoencoder, policy)",
    "optimize": "prune / quantize a SASRec or DIN run, convert to TFLite, compare",
    "tune": "keras-tuner search over a run's model settings",
    "benchmark": "speed, attention cost, attention variants and families benchmarks",
    "evaluate": "re-evaluate a run under several protocols, with paired verdicts",
}
USAGE = f"usage: tfrec-attn {{{','.join(COMMANDS)}}} [options]  (--help after a command)"


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        print("\n".join([USAGE, "", "commands:"]
                        + [f"  {name:<11s}{SUMMARIES[name]}" for name in COMMANDS]))
        return 0
    if not argv or argv[0] not in COMMANDS:
        problem = (f"tfrec-attn: unknown command {argv[0]!r}\n" if argv else
                   "tfrec-attn: a command is required\n")
        print(problem + USAGE, file=sys.stderr)
        return 2
    import importlib

    module = importlib.import_module(COMMANDS[argv[0]])
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
