"""`tfrec-attn tune` / `python -m pipelines.tune`: keras-tuner search over the SASRec config.

Precedence: built-in defaults < `--config FILE` (YAML) < flags given on the command line. The
YAML takes train's run options (`epochs` is per trial, `output` the tuning directory), a
`model:` mapping of fixed fields, and `tuner`, `max_trials`, `max_tune_minutes`, `overwrite`,
`search_space` (e.g. `{dim: [32, 64], dropout: {min: 0.1, max: 0.5}}`).
Writes `DIR/tuning.json`, `DIR/tuning.png` and `DIR/best_config.yaml`, which
`tfrec-attn train --config DIR/best_config.yaml` trains as is. Re-running resumes the search,
with the same tuner, data and training options only (other ones need a new `--output`).
"""

import argparse
import sys

from pipelines.train import RUN_FLAGS, load_config
from tfrec_attn.data import FORMATS, DataError
from tfrec_attn.training import TrainOptions
from tfrec_attn.training.run_options import ON_ERROR
from tfrec_attn.tuning import TUNERS, TuneOptions, TuneSettingsError, run_tuning, tuning_table
from tfrec_attn.validation import DataOptionError

TUNE_KEYS = ("tuner", "max_trials", "max_tune_minutes", "overwrite", "search_space")
TRAIN_FLAGS = ("data", "format", "on_error", "epochs", "output", "seed", "synthetic_users",
               "synthetic_items", "synthetic_length", "verbose")
DEFAULT_OUTPUT = "runs/tune"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tfrec-attn tune", description=__doc__.splitlines()[0])
    add = p.add_argument
    add("--config", help="YAML file with any of the options below (flags override it)")
    add("--data", help="data file or directory (not needed for --format synthetic)")
    add("--format", choices=[*FORMATS, "synthetic"])
    add("--on-error", choices=ON_ERROR,
        help="raise (default) on the data file's first malformed line, or skip malformed lines")
    add("--tuner", choices=list(TUNERS), help="search strategy (default random)")
    add("--max-trials", type=int, help="trials in the search, counting resumed ones")
    add("--max-tune-minutes", type=float,
        help="stop cleanly after this wall time (the running trial ends early)")
    add("--epochs", type=int, help="epochs per trial (early stopping may end a trial sooner)")
    add("--output", help=f"tuning directory (default {DEFAULT_OUTPUT})")
    add("--seed", type=int)
    add("--overwrite", action="store_true", default=None,
        help="discard an earlier search in --output instead of resuming it")
    add("--synthetic-users", type=int)
    add("--synthetic-items", type=int)
    add("--synthetic-length", type=float, help="mean history length of synthetic users")
    add("--verbose", type=int, help="Keras verbosity (1 = progress bars)")
    return p


def options_from_args(argv=None) -> TuneOptions:
    args = parser().parse_args(argv)
    config = load_config(args.config)
    model = dict(config.pop("model", {}) or {})
    tune = {key: config.pop(key) for key in TUNE_KEYS if key in config}
    unknown = set(config) - set(RUN_FLAGS)
    if unknown:
        raise ValueError(f"{args.config}: unknown options {sorted(unknown)}")
    for key in TRAIN_FLAGS:
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    for key in TUNE_KEYS:
        if getattr(args, key, None) is not None:
            tune[key] = getattr(args, key)
    config.setdefault("output", DEFAULT_OUTPUT)
    if config.get("export_root") == "":
        config["export_root"] = None
    return TuneOptions(train=TrainOptions(model=model, **config), **tune)


def main(argv=None) -> int:
    try:
        options = options_from_args(argv)
    except ValueError as err:
        print(f"tfrec-attn tune: {err}", file=sys.stderr)
        return 2
    try:
        report = run_tuning(options)
    except DataError as err:  # a missing or malformed --data file, as `tfrec-attn train` says
        print(f"tfrec-attn tune: --data: {err}", file=sys.stderr)
        return 2
    except (DataOptionError, TuneSettingsError) as err:  # misfits the data, or the resumed search
        print(f"tfrec-attn tune: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        print(f"tfrec-attn tune: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C: one line, not Keras' traceback
        print(f"tfrec-attn tune: interrupted; rerun the same command to resume the search in "
              f"{options.train.output} (its completed trials are kept)", file=sys.stderr)
        return 130
    print(tuning_table(report))
    out = options.train.output
    print(f"\nreport: {out}/tuning.json, {out}/tuning.png")
    print(f"train the best: tfrec-attn train --config {report['best_config']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
