"""Reloading a finished training run: options, model weights and the exact data split.

A run directory (written by `run_training`) holds `metrics.json` (with `"model"`, the
`SASRecConfig` fields, and `"options"`, the `TrainOptions` fields except `model`),
`checkpoint/weights` (a TF checkpoint from `model.save_weights`) and `item_vocabulary.json`.
`load_run` rebuilds everything from those, re-creating the split deterministically the way
`run_training` does, so later steps (optimization, export) evaluate on the same test users. The
data file is the one `metrics.json` `"dataset"` records (`"path"`, absolute, so any working
directory will do), and must still be the file the run read (`"fingerprint"`, its size and
SHA-256); runs written before these were recorded are reloaded from `--data` as given.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from tfrec_attn._keras import tf
from tfrec_attn.data import Vocabulary, pad_left
from tfrec_attn.data.sequences import Split
from tfrec_attn.models import SASRec, SASRecConfig
from tfrec_attn.training.run import (
    TrainOptions,
    item_probabilities,
    load_data,
    load_sequences,
    read_json,
    trained_sequences,
)
from tfrec_attn.training.run_options import (
    RunOptions,
    check_not_being_replaced,
    data_fingerprint,
)

METRICS = "metrics.json"
CHECKPOINT = "checkpoint/weights"
VOCABULARY = "item_vocabulary.json"


@dataclasses.dataclass
class RunArtifacts:
    """A reloaded run.

    Attributes:
        path: the run directory.
        options: the run's `TrainOptions` (`model` holds the `SASRecConfig` fields; `data`
            the data file's recorded absolute path, see `run_data`).
        model: the trained `SASRec` with its checkpoint restored.
        split: the leave-one-out split the run trained and was evaluated on.
        vocab_size: id-space size (padding and OOV included).
        metrics: the run's `metrics.json`.
        frame: the interactions the split was built from (e.g. for `run.synthetic_oracle`).
        train: the sequences the saved model trained on (`run.trained_sequences`: with the
            refit, `split.train` plus each user's validation target), which the baselines
            compared with it and any fine-tuning of it (`optimize`) use.
    """

    path: Path
    options: TrainOptions
    model: SASRec
    split: Split
    vocab_size: int
    metrics: dict
    frame: object
    train: list


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path} (is this a `tfrec-attn train` run "
                                "directory?)")
    return path


def options_from_metrics(metrics: dict, source: str | os.PathLike = METRICS,
                         options_cls=TrainOptions, writer: str = "run_training",
                         kind: str = "training", required=("model", "options")):
    """The options (`options_cls`, `TrainOptions` by default) recorded in a run's metrics dict:
    its `"options"`, with `"model"` (less `vocab_size`) as the model fields. `writer` and
    `kind` name the run type in the errors; `required` are the mappings the dict must hold."""
    for key in required:
        if not isinstance(metrics.get(key), dict):
            raise ValueError(f"{source}: missing the {key!r} mapping written by {writer}.")
    known = {field.name for field in dataclasses.fields(options_cls)} - {"model"}
    unknown = sorted(set(metrics["options"]) - known)
    if unknown:
        raise ValueError(f"{source}: unknown {kind} options {unknown}.")
    model = {k: v for k, v in metrics["model"].items() if k != "vocab_size"}
    recorded = dict(metrics["options"])
    if recorded.get("format", "synthetic") == "synthetic" and recorded.get("on_error") == "skip":
        recorded["on_error"] = "raise"  # no file to skip lines of: runs before it was refused
    return options_cls(model=model, **recorded)


def restore_model(config: SASRecConfig | dict, checkpoint: str | os.PathLike,
                  item_probs=None) -> SASRec:
    """A new `SASRec` built from `config` with the weights of `checkpoint` restored.

    Each call returns an independent model, so in-place optimizations (`prune_sasrec`,
    `qat_sasrec`) can start from the trained weights again.
    """
    model = SASRec(config, item_probabilities=item_probs)
    model(tf.constant(pad_left([[2]], model.config.max_len)))  # create the variables
    model.load_weights(os.fspath(checkpoint)).expect_partial()
    return model


def run_data(options: RunOptions, dataset: dict, run_dir: str | os.PathLike) -> RunOptions:
    """`options` (a SASRec or DIN run's) reading the data file the run in `run_dir` trained on:
    the absolute `"path"` its metrics' `dataset` records (else `options.data`, as given),
    checked against the recorded `"fingerprint"` when there is one.

    Raises:
        FileNotFoundError: the data file is missing or moved (named).
        ValueError: the file's size or SHA-256 is not the recorded one (named, with both).
    """
    if not options.data:
        return options  # synthetic: the generator settings in `options` identify the data
    path = dataset.get("path") or options.data
    given = "" if path == options.data else f" (--data {options.data})"
    if not Path(path).exists():
        hint = "" if os.path.isabs(path) else (
            "; --data was recorded as given, relative to the directory train ran in")
        raise FileNotFoundError(f"The data the run in {run_dir} was trained on is missing or "
                                f"was moved: {path}{given}{hint}.")
    recorded = dataset.get("fingerprint")
    if recorded is not None:
        current = data_fingerprint(path, options.format)
        if current != recorded:
            raise ValueError(f"The data the run in {run_dir} was trained on changed since: "
                             f"{path}{given}: {_changes(recorded, current)}. Its split cannot "
                             "be re-created; restore that file or train a new run.")
    return dataclasses.replace(options, data=path)


def _changes(recorded: dict, current: dict) -> str:
    """What differs between two `data_fingerprint`s, for `run_data`'s message."""
    if set(recorded) != set(current):
        return f"it reads {sorted(current)} now, {sorted(recorded)} then"
    return "; ".join(f"{name} is {_describe(current[name])} now, {_describe(recorded[name])} "
                     "then" for name in recorded if recorded[name] != current[name])


def _describe(record: dict) -> str:
    return f"{record['bytes']} bytes (sha256 {record['sha256'][:12]}...)"


def load_run(run_dir: str | os.PathLike) -> RunArtifacts:
    """Reloads the run in `run_dir` (see the module docstring for what it must hold).

    Raises:
        FileNotFoundError: `run_dir`, its metrics, checkpoint, vocabulary or the run's data file
            is missing (the message names the path).
        ValueError: the data file changed since the run trained (`run_data`), the
            re-created data no longer matches the run (another vocabulary), or a
            `train --overwrite` is replacing the run (`check_not_being_replaced`).
    """
    run_dir = Path(run_dir)
    _require(run_dir, "Run directory")
    check_not_being_replaced(run_dir)
    metrics_path = _require(run_dir / METRICS, "Run metrics")
    _require(run_dir / "checkpoint" / "checkpoint", "Checkpoint")
    vocab_path = _require(run_dir / VOCABULARY, "Item vocabulary")
    metrics = read_json(metrics_path, "Run metrics")
    options = run_data(options_from_metrics(metrics, metrics_path),
                       metrics.get("dataset", {}), run_dir)
    frame = load_data(options)
    data, split = load_sequences(options, frame)
    vocab_size = data.vocab_size
    if split.vocab != Vocabulary.from_json(vocab_path) or (
            vocab_size != metrics["model"].get("vocab_size")):
        raise ValueError(f"The data of {run_dir} no longer matches its {VOCABULARY}: the split "
                         "cannot be re-created (was the data file changed?).")
    train = trained_sequences(split, metrics.get("refit"))
    model = restore_model(metrics["model"], run_dir / CHECKPOINT,
                          item_probabilities(train, vocab_size))
    return RunArtifacts(run_dir, options, model, split, vocab_size, metrics, frame, train)
