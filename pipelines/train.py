"""`tfrec-attn train` / `python -m pipelines.train`: train, evaluate and export a recommender.

Precedence: built-in defaults < `--config FILE` (YAML) < flags given on the command line.
"""

import argparse
import sys

import yaml

from tfrec_attn.layers import ATTENTION_KINDS
from tfrec_attn.training import TrainOptions, results_table, run_training

MODEL_FLAGS = {  # flag dest -> SASRecConfig field
    "max_len": "max_len", "dim": "dim", "blocks": "num_blocks", "heads": "num_heads",
    "dropout": "dropout", "loss": "loss", "ffn_dim": "ffn_dim", "positional": "positional",
    "l2": "l2", "attention": "attention", "exclude_seen": "exclude_seen",
    "future_targets": "future_targets",
}
RUN_FLAGS = ("data", "format", "output", "export_root", "name", "epochs", "batch_size",
             "learning_rate", "max_train_minutes", "patience", "eval_protocol", "seed",
             "min_events", "sliding", "valid_users", "synthetic_users", "synthetic_items",
             "synthetic_length", "verbose", "strategy", "jit_compile", "backup_dir", "ema_decay")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tfrec-attn train", description=__doc__.splitlines()[0])
    add = p.add_argument
    add("--config", help="YAML file with any of the options below (flags override it)")
    add("--data", help="data file or directory (not needed for --format synthetic)")
    add("--format", choices=["sasrec", "movielens", "csv", "parquet", "synthetic"])
    add("--model", choices=["sasrec"], default="sasrec")
    add("--output", help="run directory: metrics.json, curves, TensorBoard logs, checkpoint")
    add("--export-root", help="TF Serving model base path (default saved_models; '' disables)")
    add("--name", help="model name under the export root")
    add("--epochs", type=int)
    add("--batch-size", type=int)
    add("--learning-rate", "--lr", dest="learning_rate", type=float)
    add("--max-train-minutes", type=float, help="stop training cleanly after this wall time")
    add("--patience", type=int, help="epochs without a better validation NDCG@10 before stopping")
    add("--eval-protocol", choices=["full", "sampled-100"])
    add("--seed", type=int)
    add("--min-events", type=int, help="drop users with fewer events")
    add("--sliding", action=argparse.BooleanOptionalAction, default=None,
        help="train on every window of histories longer than max-len, not just the last")
    add("--valid-users", type=int,
        help="validation users evaluated each epoch (a seeded subsample; default 10000)")
    add("--synthetic-users", type=int)
    add("--synthetic-items", type=int)
    add("--synthetic-length", type=float, help="mean history length of synthetic users")
    add("--verbose", type=int, help="Keras verbosity (1 = progress bars)")
    add("--jit-compile", action=argparse.BooleanOptionalAction, default=None,
        help="XLA-compile the train step (fixed-shape batches avoid recompiles; not for bce)")
    add("--strategy", choices=["default", "mirrored", "multi-worker"],
        help="tf.distribute strategy: one device, all local GPUs, or the machines in TF_CONFIG "
             "(--batch-size is the global batch)")
    add("--backup-dir",
        help="back up the training state here every epoch; rerun the same command after an "
             "interruption to resume after the last completed epoch (deleted when training "
             "completes; with multi-worker, a directory every worker can read)")
    add("--ema-decay", type=float,
        help="evaluate, keep and export an exponential moving average of the weights "
             "(decay per step, e.g. 0.99)")
    add("--max-len", type=int)
    add("--dim", type=int)
    add("--blocks", type=int)
    add("--heads", type=int)
    add("--dropout", type=float)
    add("--ffn-dim", type=int)
    add("--positional", choices=["learned", "sinusoidal"])
    add("--loss", choices=["auto", "softmax", "sampled", "bce"],
        help="auto (default): softmax up to 8,192 items, sampled above")
    add("--l2", type=float)
    add("--exclude-seen", action=argparse.BooleanOptionalAction, default=None,
        help="softmax losses: items already in a training window are not its negatives")
    add("--future-targets", type=int,
        help="softmax loss: each position learns the next N items of its window (1: next only)")
    add("--attention", choices=list(ATTENTION_KINDS),
        help="self-attention variant of every block (options via the YAML "
             "model: {attention_options: {...}})")
    return p


def load_config(path: str | None) -> dict:
    """The YAML options file as a dict (`{}` without one); exits naming the file if malformed."""
    if not path:
        return {}
    with open(path) as f:
        config = yaml.safe_load(f) or {}
    if not isinstance(config, dict):
        raise SystemExit(f"{path}: expected a mapping of options, got {type(config)}")
    return config


def options_from_args(argv=None) -> TrainOptions:
    args = parser().parse_args(argv)
    config = load_config(args.config)
    model = dict(config.pop("model", {}) or {})
    unknown = set(config) - set(RUN_FLAGS)
    if unknown:
        raise SystemExit(f"{args.config}: unknown options {sorted(unknown)}")
    for flag, field in MODEL_FLAGS.items():
        if getattr(args, flag) is not None:
            model[field] = getattr(args, flag)
    for flag in RUN_FLAGS:
        if getattr(args, flag) is not None:
            config[flag] = getattr(args, flag)
    if config.get("export_root") == "":
        config["export_root"] = None
    return TrainOptions(model=model, **config)


def main(argv=None) -> int:
    try:
        options = options_from_args(argv)
    except ValueError as err:
        print(f"tfrec-attn train: {err}", file=sys.stderr)
        return 2
    metrics = run_training(options)
    print(results_table(metrics))
    print(f"\nmetrics: {options.output}/metrics.json")
    if "export_path" in metrics:
        print(f"SavedModel (TF Serving layout): {metrics['export_path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
