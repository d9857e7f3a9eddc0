"""`tfrec-attn train` / `python -m pipelines.train`: train, evaluate and export a recommender.

Precedence: built-in defaults < `--config FILE` (YAML) < flags given on the command line.
"""

import argparse
import dataclasses
import sys
import time
from collections.abc import Hashable
from pathlib import Path

import yaml

from tfrec_attn.data import FORMATS, DataError
from tfrec_attn.export.serving import ModelsConfigError
from tfrec_attn.layers import ATTENTION_KINDS
from tfrec_attn.models import (
    AttentionAutoencoderConfig,
    AttentionPolicyConfig,
    DINConfig,
    SASRecConfig,
)
from tfrec_attn.models.attention_policy import CORRECTIONS
from tfrec_attn.models.din import POOLINGS
from tfrec_attn.training import TrainOptions, results_table, run_training
from tfrec_attn.training.autoencoder_run import (
    AutoencoderOptions,
    autoencoder_results_table,
    run_autoencoder_training,
)
from tfrec_attn.training.distribution import StrategyError, non_chief_task
from tfrec_attn.training.policy_run import (
    PolicyOptions,
    policy_results_table,
    run_policy_training,
)
from tfrec_attn.training.ranking_run import (
    RankingOptions,
    ranking_results_table,
    run_ranking_training,
)
from tfrec_attn.training.run_options import ON_ERROR, OutputExistsError
from tfrec_attn.validation import DataOptionError

MODEL_FLAGS = {  # flag dest -> SASRecConfig field
    "max_len": "max_len", "dim": "dim", "blocks": "num_blocks", "heads": "num_heads",
    "dropout": "dropout", "loss": "loss", "ffn_dim": "ffn_dim", "positional": "positional",
    "l2": "l2", "attention": "attention", "exclude_seen": "exclude_seen",
    "future_targets": "future_targets", "gated": "gated",
    "uniform_negatives": "uniform_negatives", "input_dropout": "input_dropout",
    "transition_neighbors": "transition_neighbors",
    "item_item_neighbors": "item_item_neighbors",
}
RUN_FLAGS = ("data", "format", "on_error", "output", "export_root", "name", "epochs", "batch_size",
             "learning_rate", "max_train_minutes", "patience", "eval_protocol", "seed",
             "min_events", "sliding", "valid_users", "synthetic_users", "synthetic_items",
             "synthetic_length", "verbose", "strategy", "jit_compile", "backup_dir", "ema_decay")
DIN_MODEL_FLAGS = {"max_len": "max_len", "dim": "dim", "pooling": "pooling",
                   "dropout": "dropout", "l2": "l2"}  # flag dest -> DINConfig field
DIN_RUN_FLAGS = ("data", "format", "on_error", "output", "export_root", "name", "epochs",
                 "batch_size", "learning_rate", "max_train_minutes", "patience", "seed",
                 "min_events", "synthetic_users", "synthetic_items", "synthetic_length", "verbose",
                 "negatives", "valid_negatives", "test_negatives", "backup_dir", "ema_decay",
                 "strategy", "jit_compile")
AE_MODEL_FLAGS = {"max_len": "max_len", "dim": "dim", "heads": "num_heads", "blocks": "num_blocks",
                  "dropout": "dropout", "ffn_dim": "ffn_dim", "l2": "l2",
                  "corruption": "corruption"}  # flag dest -> AttentionAutoencoderConfig field
AE_RUN_FLAGS = ("data", "format", "on_error", "output", "export_root", "name", "epochs",
                "batch_size", "learning_rate", "max_train_minutes", "patience", "seed",
                "min_events", "synthetic_users", "synthetic_items", "synthetic_length", "verbose",
                "k", "holdout_fraction", "valid_users", "test_users", "backup_dir", "ema_decay",
                "strategy", "jit_compile")
POLICY_MODEL_FLAGS = {"max_len": "max_len", "dim": "dim", "heads": "num_heads",
                      "blocks": "num_blocks", "dropout": "dropout", "ffn_dim": "ffn_dim",
                      "correction": "correction", "top_k": "top_k",
                      "max_weight": "max_weight",
                      "behaviour_exclude_history": "behaviour_exclude_history",
                      }  # flag dest -> AttentionPolicyConfig field
POLICY_RUN_FLAGS = ("format", "on_error", "output", "export_root", "name", "epochs", "batch_size",
                    "learning_rate", "max_train_minutes", "patience", "seed", "synthetic_users",
                    "synthetic_items", "synthetic_length", "events_per_user", "k", "valid_users",
                    "test_users", "verbose", "backup_dir", "ema_decay", "data", "min_events",
                    "reward_threshold", "reward_col", "strategy", "jit_compile",
                    "behaviour_refit_epochs")
OUTPUT_FLAGS = ("overwrite",)  # every run type's; not tune's (RUN_FLAGS)
MODEL_TYPES = {"sasrec": (MODEL_FLAGS, RUN_FLAGS + ("refit",) + OUTPUT_FLAGS),
               "din": (DIN_MODEL_FLAGS, DIN_RUN_FLAGS + OUTPUT_FLAGS),
               "autoencoder": (AE_MODEL_FLAGS, AE_RUN_FLAGS + OUTPUT_FLAGS),
               "policy": (POLICY_MODEL_FLAGS, POLICY_RUN_FLAGS + OUTPUT_FLAGS)}
OPTION_TYPES = {"sasrec": TrainOptions, "din": RankingOptions, "autoencoder": AutoencoderOptions,
                "policy": PolicyOptions}
CONFIG_TYPES = {"sasrec": SASRecConfig, "din": DINConfig, "autoencoder": AttentionAutoencoderConfig,
                "policy": AttentionPolicyConfig}  # the YAML `model:` mapping's fields


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tfrec-attn train", description=__doc__.splitlines()[0])
    add = p.add_argument
    add("--config", help="YAML file with any of the options below (flags override it)")
    add("--data", help="data file or directory (not needed for --format synthetic)")
    add("--format", choices=[*FORMATS, "synthetic"])
    add("--on-error", choices=ON_ERROR,
        help="raise (default) on the data file's first malformed line, or skip malformed "
             "lines: counted in metrics.json (dataset.skipped_lines) and summarized in a warning")
    add("--model", dest="model_type", choices=list(MODEL_TYPES),
        help="sasrec (default): next-item retrieval; din: the DIN CTR ranker; autoencoder: the "
             "attention autoencoder of item sets; policy: the attention RL policy trained from "
             "logged bandit feedback (YAML: model_type)")
    add("--output", help="run directory: metrics.json, curves, TensorBoard logs, checkpoint")
    add("--export-root", help="TF Serving model base path (default saved_models; '' disables)")
    add("--name", help="model name under the export root")
    add("--epochs", type=int)
    add("--batch-size", type=int)
    add("--learning-rate", "--lr", dest="learning_rate", type=float)
    add("--max-train-minutes", type=float, help="stop training cleanly after this wall time")
    add("--patience", type=int,
        help="epochs without a better validation NDCG@10 (din: AUC; autoencoder: NDCG@k) "
             "before stopping")
    add("--eval-protocol", choices=["full", "sampled-100"])
    add("--seed", type=int)
    add("--min-events", type=int, help="drop users with fewer events")
    add("--sliding", action=argparse.BooleanOptionalAction, default=None,
        help="train on every window of histories longer than max-len, not just the last")
    add("--refit", action=argparse.BooleanOptionalAction, default=None,
        help="sasrec: after early stopping, train a fresh model on the training and "
             "validation events for the best epoch count and test, save and export it "
             "(default: on when training histories average at most 20 events; --no-refit "
             "keeps the early-stopped model, as the SASRec paper does)")
    add("--valid-users", type=int,
        help="validation users evaluated each epoch (a seeded subsample; default 10000; "
             "autoencoder: users held out for validation, default 10%%; policy: users held "
             "out for validation)")
    add("--test-users", type=int,
        help="autoencoder: users held out for the test (default 10%%); policy: users held "
             "out for the test")
    add("--synthetic-users", type=int)
    add("--synthetic-items", type=int)
    add("--synthetic-length", type=float, help="mean history length of synthetic users")
    add("--verbose", type=int, help="Keras verbosity (1 = progress bars)")
    add("--jit-compile", action=argparse.BooleanOptionalAction, default=None,
        help="XLA-compile the train step (fixed-shape batches avoid recompiles)")
    add("--strategy", choices=["default", "mirrored", "multi-worker"],
        help="tf.distribute strategy: one device, all local GPUs, or the machines in TF_CONFIG "
             "(--batch-size is the global batch)")
    add("--backup-dir",
        help="back up the training state here every epoch; rerun the same command after an "
             "interruption to resume after the last completed epoch (deleted when training "
             "completes; with multi-worker, a directory every worker can read)")
    add("--overwrite", action="store_true", default=None,
        help="replace a finished run already in --output (and the evaluate/optimize files and "
             "TensorBoard logs derived from it); without it such a run is refused")
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
    add("--uniform-negatives", type=int,
        help="sampled loss: uniformly drawn catalogue items added to the in-batch negatives")
    add("--gated", action=argparse.BooleanOptionalAction, default=None,
        help="LiGR blocks (eSASRec): gated residuals and a gated-linear-unit feed-forward")
    add("--input-dropout", type=float,
        help="while training, replace each history item by the unknown-item id with this "
             "probability (0: off, the default)")
    add("--transition-neighbors", type=int,
        help="successors per item in the transition prior mixed into the scores after "
             "training, its weight chosen on validation (default 50; 0: no prior)")
    add("--item-item-neighbors", type=int,
        help="weights per item in the transition prior's EASE item-item term, its L2 weight "
             "and scale chosen on validation (default 200 on catalogues of at most 4,096 "
             "items, else 0; 0: none)")
    add("--attention", choices=list(ATTENTION_KINDS),
        help="self-attention variant of every block (options via the YAML "
             "model: {attention_options: {...}})")
    add("--pooling", choices=list(POOLINGS),
        help="din: history pooling, target attention (default) or the masked mean (the "
             "MLP sizes via the YAML model: {attention_units: [...], mlp_units: [...]})")
    add("--negatives", type=int, help="din: sampled unseen items per training positive")
    add("--valid-negatives", type=int, help="din: unseen items per validation positive")
    add("--test-negatives", type=int, help="din: unseen items per test positive")
    add("--corruption", type=float,
        help="autoencoder: probability of dropping each input item while training")
    add("--k", type=int, help="autoencoder: cut-off of Recall/NDCG; policy: of reward@k "
                              "(logged-feedback files: of HR/NDCG@k)")
    add("--holdout-fraction", type=float,
        help="autoencoder: share of each validation / test user's items held out")
    add("--correction", choices=list(CORRECTIONS),
        help="policy: off-policy correction, top_k (the simulator's default), importance or "
             "none (the default for logged-feedback files)")
    add("--top-k", type=int, help="policy: K of the top-K correction (default: --k)")
    add("--max-weight", type=float, help="policy: cap of the importance weights")
    add("--behaviour-exclude-history", action=argparse.BooleanOptionalAction, default=None,
        help="policy: the behaviour head's softmax leaves out each round's earlier items "
             "(default: on when <1%% of logged actions repeat an earlier item of their user)")
    add("--behaviour-refit-epochs", type=int,
        help="policy: after training, refit the behaviour head alone for at most N epochs, "
             "early stopping on the validation users' logged rounds (0: no refit)")
    add("--events-per-user", type=int,
        help="policy: logged recommendations per training user of the simulator")
    add("--reward-threshold", type=float,
        help="policy, --format movielens: reward 1 for ratings >= this, else 0 (default 4.0)")
    add("--reward-col",
        help="policy, --format csv / parquet: the column of rewards, taken as is (default "
             "reward; the other columns are user, item, timestamp)")
    return p


def _reject_other_model_flags(args, model_type: str) -> None:
    """Raises `ValueError` naming a flag given on the command line that `model_type` lacks."""
    model_flags, run_flags = MODEL_TYPES[model_type]
    others = {flag for flags in MODEL_TYPES.values() for group in flags for flag in group}
    given = sorted(flag for flag in others - set(model_flags) - set(run_flags)
                   if getattr(args, flag) is not None)
    if given:
        names = ", ".join("--" + flag.replace("_", "-") for flag in given)
        raise ValueError(f"{names}: not an option of --model {model_type}")


class _UniqueKeyLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses a key given twice in one mapping (PyYAML keeps the last
    value silently, so a config's earlier setting would be ignored without a word)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            if isinstance(key, Hashable):
                seen.add(key)
        return super().construct_mapping(node, deep)


def load_config(path: str | None) -> dict:
    """The YAML options file as a dict (`{}` without one); a `ValueError` naming the file when
    it is missing, not YAML, or not a mapping."""
    if not path:
        return {}
    try:
        with open(path) as f:
            config = yaml.load(f, Loader=_UniqueKeyLoader) or {}  # a SafeLoader
    except FileNotFoundError:
        raise ValueError(f"--config {path}: no such file") from None
    except yaml.YAMLError as err:
        raise ValueError(f"--config {path}: not valid YAML: {err}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a mapping of options, got {type(config).__name__}")
    return config


def _float_fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if "float" in str(f.type)}


def _int_fields(cls) -> set[str]:
    """Fields typed `int` (or `int | None`) alone: not floats, bools or tuples of ints."""
    return {f.name for f in dataclasses.fields(cls)
            if str(f.type).replace(" ", "") in ("int", "int|None", "<class'int'>")}


def coerce_floats(options: dict, cls, where: str) -> dict:
    """`options` with the string values of `cls`'s float fields converted (PyYAML reads an
    unquoted `1e-3` as the string '1e-3'); any other string there is a `ValueError` naming
    `where` (the YAML file) and the key.

    Example:
    >>> coerce_floats({"learning_rate": "1e-3", "epochs": 2}, TrainOptions, "c.yaml")
    {'learning_rate': 0.001, 'epochs': 2}
    >>> coerce_floats({"l2": "high"}, SASRecConfig, "c.yaml")
    Traceback (most recent call last):
    ...
    ValueError: c.yaml: l2 must be a number. Received: l2='high'
    >>> coerce_floats({"epochs": "two"}, TrainOptions, "c.yaml")
    Traceback (most recent call last):
    ...
    ValueError: c.yaml: epochs must be an integer. Received: epochs='two'
    """
    converted = dict(options)
    for key in _int_fields(cls) & set(options):  # `epochs: two`, named here with the file
        value = options[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{where}: {key} must be an integer. Received: {key}={value!r}")
    for key in _float_fields(cls) & set(options):
        value = options[key]
        if isinstance(value, str):
            try:
                converted[key] = float(value)
            except ValueError:
                raise ValueError(f"{where}: {key} must be a number. "
                                 f"Received: {key}={value!r}") from None
    return converted


def _check_config_keys(config: dict, model_type: str, where: str) -> None:
    """Refuses keys of the YAML file that are not options of `model_type`, saying where a
    model field belongs."""
    _, run_flags = MODEL_TYPES[model_type]
    unknown = set(config) - set(run_flags)
    fields = {f.name for f in dataclasses.fields(CONFIG_TYPES[model_type])} - {"vocab_size"}
    misplaced = sorted(unknown & fields)
    if misplaced:
        one = len(misplaced) == 1
        raise ValueError(f"{where}: {', '.join(misplaced)} "
                         + ("is a model setting: put it" if one else
                            "are model settings: put them") + " under model:")
    if unknown:
        raise ValueError(f"{where}: unknown options {sorted(unknown)}"
                         + (f" for model_type {model_type}" if model_type != "sasrec" else ""))


def options_from_args(argv=None) -> (TrainOptions | RankingOptions | AutoencoderOptions
                                     | PolicyOptions):
    args = parser().parse_args(argv)
    config = load_config(args.config)
    model = config.pop("model", None) or {}
    if not isinstance(model, dict):
        raise ValueError(f"{args.config}: model must be a mapping of model settings (e.g. "
                         f"model: {{dim: 64}}). Received: model={model!r}")
    model_type = args.model_type or config.get("model_type", "sasrec")  # the flag wins
    config.pop("model_type", None)
    if model_type not in MODEL_TYPES:
        raise ValueError(f"{args.config}: model_type must be one of {list(MODEL_TYPES)}, "
                         f"got {model_type!r}")
    _reject_other_model_flags(args, model_type)
    model_flags, run_flags = MODEL_TYPES[model_type]
    _check_config_keys(config, model_type, args.config)
    config = coerce_floats(config, OPTION_TYPES[model_type], args.config)
    model = coerce_floats(model, CONFIG_TYPES[model_type], f"{args.config}: model")
    fields = {f.name for f in dataclasses.fields(CONFIG_TYPES[model_type])}
    unknown = sorted(set(model) - fields)
    if unknown:  # named with the file; flags are mapped to the fields below
        raise ValueError(f"{args.config}: model: {unknown} are not "
                         f"{CONFIG_TYPES[model_type].__name__} fields (settings go by their "
                         f"field names, e.g. num_blocks for --blocks); known: "
                         f"{sorted(fields - {'vocab_size'})}")
    for flag, field in model_flags.items():
        if getattr(args, flag) is not None:
            model[field] = getattr(args, flag)
    for flag in run_flags:
        if getattr(args, flag) is not None:
            config[flag] = getattr(args, flag)
    if config.get("export_root") == "":
        config["export_root"] = None
    return OPTION_TYPES[model_type](model=model, **config)


def interrupted_message(options, started: float | None = None) -> str:
    """What an interrupted run left: its results (interrupted after writing them, at or after
    the epoch-seconds time `started`), a backup to resume from, the run an `--overwrite` was
    replacing (put back), or no metrics."""
    metrics = Path(options.output) / "metrics.json"
    if started is not None and metrics.exists() and metrics.stat().st_mtime >= started:
        return f"interrupted after the run finished; its results are in {metrics}"
    backup = options.backup_dir and Path(options.backup_dir)
    if backup and backup.is_dir() and any(backup.iterdir()):
        return (f"interrupted; rerun the same command to resume from the backup in {backup} "
                "(after the last completed epoch)")
    if options.overwrite and chief_task(options) is None and metrics.exists():  # put back
        return (f"interrupted; this run wrote no results, and the run it was replacing in "
                f"{options.output} was restored as it was"
                + ("" if backup else " (--backup-dir makes a run resumable)"))
    return (f"interrupted; {options.output}/metrics.json was not written"
            + (" and no epoch was backed up yet" if backup else
               " (--backup-dir makes a run resumable)"))


def chief_task(options) -> str | None:
    """`None` if this process wrote the run's outputs (always, except on a multi-worker run's
    other workers: `distribution.non_chief_task`), else its task (`"worker:1"`)."""
    if getattr(options, "strategy", "default") != "multi-worker":
        return None
    return non_chief_task()


def main(argv=None) -> int:
    try:
        options = options_from_args(argv)
    except ValueError as err:
        print(f"tfrec-attn train: {err}", file=sys.stderr)
        return 2
    started = time.time()  # metrics.json written after this: the run finished
    try:
        if isinstance(options, RankingOptions):
            metrics = run_ranking_training(options)
            print(ranking_results_table(metrics))
        elif isinstance(options, PolicyOptions):
            metrics = run_policy_training(options)
            print(policy_results_table(metrics))
        elif isinstance(options, AutoencoderOptions):
            metrics = run_autoencoder_training(options)
            print(autoencoder_results_table(metrics))
        else:
            metrics = run_training(options)
            print(results_table(metrics))
    except DataError as err:  # a malformed --data file, found only when it is read
        print(f"tfrec-attn train: --data: {err}", file=sys.stderr)
        return 2
    except DataOptionError as err:  # an option that does not fit the data just read
        print(f"tfrec-attn train: {err}", file=sys.stderr)
        return 2
    except ModelsConfigError as err:  # checked before training; the file is left unchanged
        print(f"tfrec-attn train: --export-root: {err}", file=sys.stderr)
        return 2
    except OutputExistsError as err:  # checked before the data are read; nothing is changed
        print(f"tfrec-attn train: --output: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: one line, not Keras' traceback
        print(f"tfrec-attn train: {interrupted_message(options, started)}", file=sys.stderr)
        return 130
    except StrategyError as err:  # TF_CONFIG / --batch-size vs the replicas, before training
        print(f"tfrec-attn train: {err}", file=sys.stderr)
        return 2
    task = chief_task(options)
    if task is not None:  # its metrics.json and export went to a deleted temporary directory
        print(f"\n{task} is not the chief: it wrote no outputs (the chief writes "
              f"{options.output}/metrics.json and the export)")
        return 0
    print(f"\nmetrics: {options.output}/metrics.json")
    if "export_path" in metrics:
        print(f"SavedModel (TF Serving layout): {metrics['export_path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
