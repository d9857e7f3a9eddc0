"""`optimize_run`: optimized variants of a trained run, compared on the run's own test split.

A DIN run (`tfrec-attn train --model din`) is handed to `ranker_report.optimize_ranker_run`
(the same methods, scored by AUC / GAUC on the run's test rows); below, a SASRec run.

Variants (always `float32`, plus the chosen `METHODS`):

- `float32`: the trained model as it is (SavedModel + float TFLite).
- `prune`: `prune_sasrec` fine-tuning to `target_sparsity`, stripped (SavedModel + float TFLite).
- `qat`: `qat_sasrec` fine-tuning, converted to full-integer int8 TFLite
  (`quantization=QAT_QUANTIZATION`; the weights are already on the 8-bit grids learned in
  training, and the converter calibrates the activations QAT keeps in float on validation
  histories), and exported as a SavedModel whose signatures compute with the fake-quantized
  item table (`export.saved_model.item_table`).
- `ptq-int8`, `ptq-float16`, `ptq-dynamic`: post-training quantization of the float model
  (`convert_to_tflite`, int8 calibrated on validation histories).

Fine-tuning (`prune`, `qat`) runs on the run's own training data and batch size, at a
learning rate derived from the run's (`methods.fine_tune_learning_rate`, where the rule and
`FINE_TUNE_EPOCHS` are explained).

Quality uses the same test users, protocol and seed as the run's `metrics.json`. Under the
full protocol a TFLite variant's HR@10 / NDCG@10 come from the deployed file itself (its
top-`k`, `k >= 10`; `deployed_ranks`): ids of the user's history the file did not exclude
(those before its last `max_len`) are dropped, and a target pushed beyond the list counts as a
miss, which is exact when the histories fit `max_len` (each variant records in
`uncertain_users` how many users' ranks the list could not settle). Under a sampled protocol
the negatives can fall outside any top-k, so the figure comes from a second,
evaluation-only flatbuffer converted the same way (same weights and quantization) whose top-k
spans the whole catalogue without history exclusion (the "twin"): exact for float32,
float16 and dynamic files, but an int8 twin is calibrated on every item's score instead of the
top-k's, so its quality can differ from the deployed int8 file's. Each variant records its
`quality_source` (`"deployed"` or `"twin"`). The deployed file is the one measured for size
and latency.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from tfrec_attn._keras import keras, tf
from tfrec_attn.data import make_training_dataset, pad_left
from tfrec_attn.evaluation import MISS_RANK, evaluate, summarize
from tfrec_attn.export import LiteRTRecommender, convert_to_tflite, export_saved_model
from tfrec_attn.export.tflite import int8_tensor_count
from tfrec_attn.optimization.device import optimization_device, optimization_scope
from tfrec_attn.optimization.methods import (
    METHODS,
    OPTIMIZED,
    PTQ,
    QAT_QUANTIZATION,
    check_common_settings,
    check_methods,
    check_output,
    file_size,
    fine_tune_learning_rate,
    invalidate_report,
    latency_ms,
    quantization_notes,
    remove_stale_exports,
    variant_record,
    write_serving_config,
)
from tfrec_attn.optimization.methods import fine_tune_settings as _fine_tune_settings
from tfrec_attn.optimization.plots import plot_optimization
from tfrec_attn.optimization.pruning import gzip_size
from tfrec_attn.optimization.ranker_report import optimize_ranker_run, ranker_table
from tfrec_attn.optimization.sasrec import prune_sasrec, qat_sasrec
from tfrec_attn.training.ranking_evaluation import read_run_metrics, run_type
from tfrec_attn.training.run import item_probabilities, write_json
from tfrec_attn.training.run_dir import CHECKPOINT, RunArtifacts, load_run, restore_model
from tfrec_attn.training.run_dir import METRICS as METRICS_FILE
from tfrec_attn.training.scoring import make_score_fn

__all__ = ["METHODS", "check_methods", "check_settings", "fine_tune_learning_rate",
           "optimize_run", "optimize_table", "plot_optimization"]

METRICS = ("ndcg@10", "hr@10")
BATCH = 256
CALIBRATION_USERS = 200
SUPPORTED_RUNS = ("sasrec", "din")


def check_settings(epochs: int | None, target_sparsity: float, k: int, latency_runs: int,
                   learning_rate: float | None, items: int | None = None) -> None:
    """`ValueError` naming the first bad `optimize_run` setting; `items`: the run's catalogue
    size, which bounds `k` (`None`: not checked)."""
    if k < 10 or (items is not None and k > items):
        most = "" if items is None else f" and at most the run's number of items, {items}"
        raise ValueError(f"k must be >= 10 (the @10 metrics){most}. Received: k={k}")
    check_common_settings(epochs, target_sparsity, latency_runs, learning_rate)


def _run_metrics(run_dir: str | os.PathLike) -> tuple[str, dict]:
    """`(run type, metrics.json)` of the run in `run_dir` (`("sasrec", {})` if missing:
    `load_run` names what is), or `ValueError` naming a run type optimize does not support
    (`ranking_evaluation.run_type`, as `tfrec-attn evaluate` tells them)."""
    if not (Path(run_dir) / METRICS_FILE).is_file():
        return "sasrec", {}
    metrics = read_run_metrics(run_dir)
    kind = run_type(metrics)
    if kind not in SUPPORTED_RUNS:
        raise ValueError(f"{os.fspath(run_dir)} is a `--model {kind}` run; optimize supports "
                         "only SASRec and DIN runs (`tfrec-attn train --model sasrec|din`).")
    return kind, metrics


class _Context:
    """What every variant needs: the run, output folders, fixed inputs and settings."""

    def __init__(self, run: RunArtifacts, root: Path, k: int, latency_runs: int, scratch: Path):
        self.run, self.root, self.k, self.latency_runs = run, root, k, latency_runs
        self.scratch = scratch
        self.max_len = run.model.config.max_len
        split = run.split
        self.calibration = pad_left(split.valid_histories[:CALIBRATION_USERS], self.max_len)
        rows = np.resize(np.arange(len(split.test_histories)), BATCH)
        self.batch = pad_left([split.test_histories[i] for i in rows], self.max_len)
        self.single = self.batch[:1]

    def fresh_model(self):
        run = self.run
        return restore_model(run.metrics["model"], run.path / CHECKPOINT,
                             item_probabilities(run.train, run.vocab_size))

    def training_dataset(self) -> tf.data.Dataset:
        options = self.run.options
        return make_training_dataset(self.run.train, self.max_len, options.batch_size,
                                     seed=options.seed, sliding=options.sliding)

    def evaluate(self, score_fn) -> dict:
        run = self.run
        result = evaluate(score_fn, run.split.test_histories, run.split.test_targets,
                          run.vocab_size, run.options.eval_protocol, seed=run.options.seed)
        return {name: result[name] for name in METRICS}

    def latency(self, call) -> dict:
        """p50/p99 milliseconds of `call(rows)` for one history and for a batch of `BATCH`."""
        return {name: latency_ms(call, rows, self.latency_runs)
                for name, rows in (("single", self.single), (f"batch_{BATCH}", self.batch))}


def _saved_model_part(ctx: _Context, name: str, model) -> dict:
    """The variant as a TF Serving SavedModel (`saved_models/<name>/1/`) and its latency."""
    root = ctx.root / "saved_models"
    shutil.rmtree(root / name, ignore_errors=True)  # a re-run replaces version 1
    path = export_saved_model(model, root, name, version=1, k=ctx.k,
                              metadata={"optimization": name},
                              warmup_histories=ctx.calibration[:10])
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    latency = ctx.latency(lambda rows: serve(history=tf.constant(rows))["item_ids"].numpy())
    return {"path": os.fspath(path), "size_bytes": file_size(path),
            "gzip_bytes": gzip_size(path), "latency": latency}


def _tflite_part(ctx: _Context, name: str, model, quantization: str) -> dict:
    """The deployed `.tflite` (size, latency) and its quality: under the full protocol from
    the deployed file itself (`deployed_ranks`), under a sampled one through the evaluation
    twin (module docstring); `quality_source` says which."""
    kwargs = {"quantization": quantization, "representative_histories": ctx.calibration}
    path = convert_to_tflite(model, ctx.root / "tflite" / f"{name}.tflite", k=ctx.k, **kwargs)
    runner = LiteRTRecommender(path)
    run = ctx.run
    if run.options.eval_protocol == "full":
        histories, targets = run.split.test_histories, run.split.test_targets
        ranks, uncertain = deployed_ranks(runner.recommend(pad_left(histories, ctx.max_len)),
                                          histories, targets)
        summary = summarize(ranks, ks=(10,))
        quality = {metric: summary[metric] for metric in METRICS}
        source = {"quality_source": "deployed", "uncertain_users": int(uncertain.sum())}
    else:
        # Same graph as the deployed file (`convert_to_tflite` picks it from the SASRec and
        # the quantization), ranking the whole catalogue.
        twin = convert_to_tflite(model, ctx.scratch / f"{name}.tflite", k=run.vocab_size - 2,
                                 exclude_history=False, **kwargs)
        quality = ctx.evaluate(_tflite_score_fn(LiteRTRecommender(twin), run.vocab_size))
        source = {"quality_source": "twin"}
    return {"path": os.fspath(path), "size_bytes": file_size(path),
            "gzip_bytes": gzip_size(path),
            "tflite_quantization": quantization, "int8_tensors": int8_tensor_count(path),
            **quality, **source, "latency": ctx.latency(runner.recommend)}


def deployed_ranks(outputs: dict, histories, targets, cutoff: int = 10
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Full-protocol target ranks (`evaluation.evaluate`'s, below `cutoff`) read from a
    deployed file's top-k `outputs` (`item_ids`, `scores` `(n, k)`, `k >= cutoff`), and a
    mask of the users whose rank the list cannot settle.

    The protocol excludes the whole history (a target in it is a miss, `MISS_RANK`); the file
    only its last `max_len` ids, so returned ids in the history (and unfilled `-1` slots) are
    dropped, and a target not in what is left is a miss. Ties count against the target, as in
    `evaluate`: its rank is the number of kept items scoring at least as much, minus one. Exact
    (`uncertain` False) unless dropping left fewer than `cutoff` items and the target is not
    among them (only possible when the history is longer than `max_len`), or the target ties
    the file's last score while the list is full and short of `cutoff` (items tied beyond the
    list are unseen): such ranks are counted as read (the list may be optimistic there).

    Example:
    >>> out = {"item_ids": np.array([[5, 2, 7, 6]]), "scores": np.array([[4., 3., 2., 2.]])}
    >>> deployed_ranks(out, [np.array([9, 2])], np.array([7]), cutoff=2)
    (array([2]), array([False]))
    >>> deployed_ranks(out, [np.array([9, 2])], np.array([9]), cutoff=2)[0] == MISS_RANK
    array([ True])
    """
    ids, scores = np.asarray(outputs["item_ids"]), np.asarray(outputs["scores"])
    ranks = np.full(len(ids), MISS_RANK, np.int64)
    uncertain = np.zeros(len(ids), bool)
    for row, (history, target) in enumerate(zip(histories, targets, strict=True)):
        history = np.asarray(history)
        if target in history:
            continue  # a repeat target: removed with the history, a miss
        kept = (ids[row] >= 2) & ~np.isin(ids[row], history)
        kept_ids, kept_scores = ids[row][kept], scores[row][kept]
        hit = np.flatnonzero(kept_ids == target)
        if not hit.size:
            uncertain[row] = len(kept_ids) < cutoff
            continue
        target_score = kept_scores[hit[0]]
        rank = int((kept_scores >= target_score).sum()) - 1
        ranks[row] = rank
        full = bool((ids[row] >= 2).all())
        uncertain[row] = full and target_score == scores[row][-1] and rank < cutoff
    return ranks, uncertain


def _tflite_score_fn(runner: LiteRTRecommender, vocab_size: int):
    """Scores `(batch, vocab)` from a flatbuffer whose top-k lists every real item."""
    floor = np.finfo(np.float32).min  # padding and OOV: never recommended, never a target

    def score_fn(histories) -> np.ndarray:
        out = runner.recommend(pad_left(histories, runner.max_len))
        scores = np.full((len(histories), vocab_size), floor, np.float32)
        np.put_along_axis(scores, out["item_ids"], out["scores"], axis=1)
        return scores

    return score_fn


def _variant(ctx: _Context, name: str, model, quantization: str, keras_path: bool,
             saved_model: bool, sparsity: float = 0.0, note: str | None = None) -> dict:
    """One variant's record; `keras_path`: also evaluate `model` itself (its own weights)."""
    tflite = _tflite_part(ctx, name, model, quantization)
    keras_quality = (ctx.evaluate(make_score_fn(model.scorer, ctx.max_len))
                     if keras_path else None)
    saved = _saved_model_part(ctx, name, model) if saved_model else None
    return variant_record(name, tflite, ctx.run.options.eval_protocol, sparsity, keras_quality,
                          saved, note)


def _fine_tune(ctx: _Context, method: str, settings: dict, target_sparsity: float) -> dict:
    keras.utils.set_random_seed(ctx.run.options.seed)
    model, dataset = ctx.fresh_model(), ctx.training_dataset()
    epochs, learning_rate = settings["epochs"], settings["learning_rate"]
    with optimization_scope():
        if method == "prune":
            model, report = prune_sasrec(model, dataset, epochs=epochs,
                                         target_sparsity=target_sparsity,
                                         learning_rate=learning_rate)
        else:
            model, _ = qat_sasrec(model, dataset, epochs=epochs, learning_rate=learning_rate)
    if method == "prune":
        record = _variant(ctx, method, model, "none", keras_path=True, saved_model=True,
                          sparsity=report["sparsity"])
    else:
        record = _variant(ctx, method, model, QAT_QUANTIZATION, keras_path=True,
                          saved_model=True,
                          note="keras and saved_model = the fake-quantized QAT model")
    return {**record, "fine_tuning": settings}


def optimize_run(run_dir: str | os.PathLike, methods=METHODS, epochs: int | None = None,
                 target_sparsity: float = 0.8, k: int = 10, latency_runs: int = 50,
                 output: str | os.PathLike | None = None,
                 learning_rate: float | None = None) -> dict:
    """Builds, exports and compares optimized variants of the run in `run_dir`.

    A DIN run is optimized by `ranker_report.optimize_ranker_run` (same arguments, `k` the
    most candidates its `rank` signature returns; AUC / GAUC instead of NDCG@10 / HR@10).

    The outputs are regenerated as a whole: `optimize.json` and `optimize.png` are replaced,
    `optimized/` ends up holding exactly the variants this call lists (exports an earlier
    call wrote for methods not chosen now are removed: `methods.remove_stale_exports`; nothing
    else in the directory is touched) and `optimized/saved_models/models.config` lists exactly
    its SavedModels. They stay consistent if the call fails or is interrupted: once the
    settings are checked and the run is loaded, the earlier `optimize.json`, `optimize.png`
    and `models.config` are removed (`methods.invalidate_report`) before any export is
    replaced, and the new ones are written only after every export is finished,
    `optimize.json` last and atomically. An interrupted call therefore leaves no report (the
    exports it left are described by nothing; re-run to regenerate them).

    Args:
        run_dir: a `tfrec-attn train` run directory (see `training.run_dir.load_run`).
        methods: any of `METHODS`, as a sequence of names or one comma-separated string
            (`"prune,qat"`, as `--methods` takes it); `float32` (the run's model) is always
            included.
        epochs: fine-tuning epochs for `prune` and `qat`; `None`: `FINE_TUNE_EPOCHS`.
        target_sparsity: `prune`'s fraction of zeros in the prunable weights.
        k: items the exported models return (at least 10, so `@10` metrics are defined).
        latency_runs: timed calls per latency figure, after `methods.WARMUP` untimed calls.
        output: the directory (created if missing) where `optimize.json`, `optimize.png` and
            `optimized/` go (default `run_dir`).
        learning_rate: fine-tuning learning rate for `prune` and `qat`; `None`: derived from
            the run's (`fine_tune_learning_rate`, module docstring).

    Returns:
        The report written to `optimize.json`: run-level settings and `"variants"`, one record
        per variant with `path`, `size_bytes`, `gzip_bytes` (the deployed `.tflite`),
        `tflite_quantization`, `int8_tensors` (0: the file holds nothing quantized, noted by
        `optimize_table`), `ndcg@10`, `hr@10` (that file's quality), `quality_source`
        (`"deployed"`: read from that file, with `uncertain_users`; `"twin"`: from its
        evaluation twin, sampled protocols; module docstring), `protocol`,
        `sparsity` (of the prunable weights; 0 for dense variants), `keras` (`ndcg@10`,
        `hr@10` of the Keras model the file came from; `None` for post-training
        quantization, whose Keras model is `float32`'s), `latency` (`tflite` /
        `saved_model` -> `single` (one history) / `batch_256` (`BATCH` histories) ->
        `p50_ms`, `p99_ms`; `saved_model` is `None` without a SavedModel) and `saved_model`
        (`path`, `size_bytes`, `gzip_bytes`, or `None`); fine-tuned variants add
        `fine_tuning` (`epochs`, `learning_rate`, `batch_size`). A DIN run's report differs
        (`optimize_ranker_run`): `auc` / `gauc` for `ndcg@10` / `hr@10`, and latency keys
        `single` / `batch_16` (`ranker_report.BATCH` requests of one history and `C`
        candidates).

    Raises:
        ValueError: a run of another model type, an unknown method, a bad setting or an
            `output` that is not a directory, all raised before anything is loaded or
            written. TypeError: `methods` is not a string or a sequence of strings.
            FileNotFoundError: see `load_run`.
    """
    kind, metrics = _run_metrics(run_dir)  # metrics.json, read once
    if kind == "din":
        return optimize_ranker_run(run_dir, methods, epochs=epochs,
                                   target_sparsity=target_sparsity, k=k,
                                   latency_runs=latency_runs, output=output,
                                   learning_rate=learning_rate)
    model = metrics.get("model") or {}
    methods = check_methods(methods)
    vocab_size = model.get("vocab_size")
    check_settings(epochs, target_sparsity, k, latency_runs, learning_rate,
                   vocab_size - 2 if isinstance(vocab_size, int) else None)
    out = Path(output if output is not None else run_dir)
    check_output(out)
    run = load_run(run_dir)
    fine_tuning = _fine_tune_settings(run, methods, epochs, learning_rate)
    root = out / OPTIMIZED
    invalidate_report(out)  # from here until the end nothing describes the exports
    variants = {}
    with tempfile.TemporaryDirectory(prefix="tfrec_attn_optimize_") as scratch:
        ctx = _Context(run, root, k, latency_runs, Path(scratch))
        variants["float32"] = _variant(ctx, "float32", run.model, "none", keras_path=True,
                                       saved_model=True)
        for method in methods:
            if method in PTQ:
                variants[method] = _variant(ctx, method, run.model, PTQ[method],
                                            keras_path=False, saved_model=False)
            else:
                variants[method] = _fine_tune(ctx, method, fine_tuning[method],
                                              target_sparsity)
    remove_stale_exports(root, variants)
    write_serving_config(root, variants)
    report = {
        "run_dir": os.fspath(run_dir), "protocol": run.options.eval_protocol,
        "seed": run.options.seed, "test_users": len(run.split.test_targets), "k": k,
        "fine_tuning": fine_tuning, "target_sparsity": target_sparsity,
        "latency_runs": latency_runs,
        "device": optimization_device(),
        "reference": {m: run.metrics.get("test", {}).get(m) for m in METRICS},
        "evaluation": ("TFLite quality from each deployed file's top-k (full protocol; see "
                       "quality_source); same protocol, seed and test users as metrics.json"
                       if run.options.eval_protocol == "full" else
                       "TFLite quality from an evaluation twin of each file whose top-k spans "
                       "the catalogue (sampled protocol; an int8 twin is calibrated apart from "
                       "the deployed file); same protocol, seed and test users as "
                       "metrics.json"),
        "variants": variants,
    }
    plot_optimization(report, out / "optimize.png")
    write_json(out / "optimize.json", report)  # last: it describes only finished files
    return report


def optimize_table(report: dict) -> str:
    """A plain-text table of the variants in an `optimize_run` report (of either run type)."""
    if report.get("model_type") == "din":
        return ranker_table(report)
    header = (f"{'variant':12s}{'tflite KiB':>11s}{'gzip KiB':>10s}{'ndcg@10':>9s}"
              f"{'hr@10':>8s}{'keras ndcg':>11s}{'sparsity':>9s}{'tfl p50 1/256 ms':>18s}"
              f"{'sm p50 1/256 ms':>17s}")
    lines = [f"test ({report['protocol']} protocol, {report['test_users']} users)", header]
    for name, v in report["variants"].items():
        lat = v["latency"]
        cells = []
        for runtime in ("tflite", "saved_model"):
            if lat[runtime] is None:
                cells.append("-")
            else:
                cells.append(f"{lat[runtime]['single']['p50_ms']:.2f}/"
                             f"{lat[runtime][f'batch_{BATCH}']['p50_ms']:.2f}")
        keras = f"{v['keras']['ndcg@10']:.4f}" if v["keras"] else "-"
        lines.append(f"{name:12s}{v['size_bytes'] / 1024:11.1f}{v['gzip_bytes'] / 1024:10.1f}"
                     f"{v['ndcg@10']:9.4f}{v['hr@10']:8.4f}{keras:>11s}"
                     f"{v['sparsity']:9.3f}{cells[0]:>18s}{cells[1]:>17s}")
    return "\n".join(lines + quantization_notes(report["variants"]))
