"""The `tfrec-attn` console script: `tfrec-attn train ...` runs `pipelines.train`."""

import sys

COMMANDS = {"train": "pipelines.train", "optimize": "pipelines.optimize",
            "tune": "pipelines.tune", "benchmark": "pipelines.benchmark",
            "evaluate": "pipelines.evaluate"}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: tfrec-attn {{{','.join(COMMANDS)}}} [options]  (--help after a command)",
              file=sys.stderr)
        return 2
    import importlib

    module = importlib.import_module(COMMANDS[argv[0]])
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
