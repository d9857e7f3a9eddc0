"""`optimize_ranker_run`: optimized variants of a DIN run, compared on the run's own test rows.

`optimize_run` (`optimization/report.py`) hands DIN runs (`tfrec-attn train --model din`) here.
Variants, as for SASRec (always `float32`, plus the chosen `methods.METHODS`):

- `float32`: the trained tower as it is (SavedModel + float TFLite).
- `prune`: `prune_din` fine-tuning to `target_sparsity`, stripped (SavedModel + float TFLite).
- `qat`: `qat_din` fine-tuning, converted to full-integer int8 TFLite (activations calibrated
  on validation requests) and exported as a SavedModel of the fake-quantized tower.
- `ptq-int8`, `ptq-float16`, `ptq-dynamic`: post-training quantization of the float tower
  (`convert_ranker_to_tflite`, int8 calibrated on validation requests).

The run is reloaded as `tfrec-attn evaluate` reloads it (`ranking_evaluation.load_ranking_run`:
same data, split seed and sampled negatives), so the AUC / GAUC are over the test rows of
`metrics.json`: one request a test user, their history and `C = 1 + test_negatives` candidates
(the held-out item, then the seeded negatives). The deployed `.tflite` scores exactly such a
request (`num_candidates=C`), so the deployed file itself is evaluated (each variant's
`quality_source` is `"deployed"`; a SASRec run under a sampled protocol needs an evaluation
twin). Calibration requests are the first `CALIBRATION_USERS` validation users'
(their `1 + valid_negatives` candidates repeated to `C`): never test rows.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from tfrec_attn._keras import keras, tf
from tfrec_attn.data import make_ranking_dataset
from tfrec_attn.export import LiteRTRanker, convert_ranker_to_tflite, export_ranker
from tfrec_attn.export.tflite import int8_tensor_count
from tfrec_attn.models import DIN, DINConfig
from tfrec_attn.optimization.device import optimization_device, optimization_scope
from tfrec_attn.optimization.din import prune_din, qat_din
from tfrec_attn.optimization.methods import (
    METHODS,
    OPTIMIZED,
    PTQ,
    QAT_QUANTIZATION,
    check_common_settings,
    check_methods,
    check_output,
    file_size,
    fine_tune_settings,
    invalidate_report,
    latency_ms,
    quantization_notes,
    remove_stale_exports,
    variant_record,
    write_serving_config,
)
from tfrec_attn.optimization.plots import plot_optimization
from tfrec_attn.optimization.pruning import gzip_size
from tfrec_attn.training.ctr_evaluation import ctr_metrics, evaluate_ranker
from tfrec_attn.training.ranking_evaluation import RankingRun, load_ranking_run
from tfrec_attn.training.run import write_json
from tfrec_attn.validation import check_positive_int

METRICS = ("auc", "gauc")
BATCH = 16  # requests (one history and C candidates each) in the batched latency figure
EVAL_REQUESTS = 64  # requests a LiteRT call scores while evaluating
CALIBRATION_USERS = 200
WARMUP_REQUESTS = 10


def _requests(rows: dict, group: int) -> dict:
    """`ranking_examples(..., last_only=True)` rows as requests: `history` `(users, max_len)`
    and `candidates` `(users, group)` (a user's rows share the history)."""
    return {"history": rows["history"][::group], "candidates": rows["candidate"].reshape(-1, group)}


class _RankerContext:
    """What every variant needs: the run, output folder, fixed requests and settings."""

    def __init__(self, run: RankingRun, root: Path, k: int, latency_runs: int):
        self.run, self.root, self.k, self.latency_runs = run, root, k, latency_runs
        split = run.split
        self.num_candidates = 1 + split.test_negatives
        self.requests = _requests(split.test, self.num_candidates)
        valid = _requests(split.valid, 1 + split.valid_negatives)
        columns = np.arange(self.num_candidates) % valid["candidates"].shape[1]
        self.calibration = {"history": valid["history"][:CALIBRATION_USERS],
                            "candidates": valid["candidates"][:CALIBRATION_USERS][:, columns]}
        self.warmup = {key: value[:WARMUP_REQUESTS] for key, value in valid.items()}
        rows = np.resize(np.arange(len(self.requests["history"])), BATCH)
        self.shapes = {"single": {key: value[:1] for key, value in self.requests.items()},
                       f"batch_{BATCH}": {key: value[rows] for key, value in self.requests.items()}}

    def fresh_ranker(self) -> DIN:
        """A new `DIN` holding the run's trained weights (fine-tuning changes it in place)."""
        din = DIN(DINConfig(**self.run.metrics["model"]))
        din.tower.set_weights(self.run.tower.get_weights())
        return din

    def training_dataset(self) -> tf.data.Dataset:
        run, options = self.run, self.run.options
        return make_ranking_dataset(run.split.train, run.metrics["model"]["max_len"],
                                    run.vocab_size, options.batch_size, options.negatives,
                                    seed=options.seed)

    def evaluate(self, scores: np.ndarray) -> dict:
        """AUC / GAUC of `(users, C)` scores of the test requests."""
        split = self.run.split
        return ctr_metrics(np.asarray(scores).reshape(-1), split.test, split.test_negatives)

    def tflite_scores(self, runner: LiteRTRanker) -> np.ndarray:
        history, candidates = self.requests["history"], self.requests["candidates"]
        return np.concatenate([runner.score(history[i:i + EVAL_REQUESTS],
                                            candidates[i:i + EVAL_REQUESTS])
                               for i in range(0, len(history), EVAL_REQUESTS)])

    def latency(self, call) -> dict:
        """p50/p99 ms of `call(history, candidates)`: one request, and `BATCH` requests."""
        return {name: latency_ms(lambda r: call(r["history"], r["candidates"]), rows,
                                 self.latency_runs)
                for name, rows in self.shapes.items()}


def _saved_model_part(ctx: _RankerContext, name: str, tower: keras.Model) -> dict:
    """The variant as a TF Serving SavedModel (`saved_models/<name>/1/`) and its latency."""
    root = ctx.root / "saved_models"
    shutil.rmtree(root / name, ignore_errors=True)  # a re-run replaces version 1
    path = export_ranker(tower, root, name, version=1, max_k=ctx.k, warmup=ctx.warmup,
                         metadata={"optimization": name, "config": ctx.run.metrics["model"]})
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    latency = ctx.latency(lambda history, candidates: serve(
        history=tf.constant(history), candidates=tf.constant(candidates))["scores"].numpy())
    return {"path": os.fspath(path), "size_bytes": file_size(path),
            "gzip_bytes": gzip_size(path), "latency": latency}


def _tflite_part(ctx: _RankerContext, name: str, tower: keras.Model, quantization: str) -> dict:
    """The deployed `.tflite`: size, quality on the test requests and latency."""
    path = convert_ranker_to_tflite(tower, ctx.root / "tflite" / f"{name}.tflite",
                                    ctx.num_candidates, quantization,
                                    representative_data=ctx.calibration)
    runner = LiteRTRanker(path)
    return {"path": os.fspath(path), "size_bytes": file_size(path),
            "gzip_bytes": gzip_size(path), "tflite_quantization": quantization,
            "int8_tensors": int8_tensor_count(path),
            **ctx.evaluate(ctx.tflite_scores(runner)), "quality_source": "deployed",
            "latency": ctx.latency(runner.score)}


def _variant(ctx: _RankerContext, name: str, tower: keras.Model, quantization: str,
             own_model: bool, sparsity: float = 0.0, note: str | None = None) -> dict:
    """One variant's record; `own_model`: `tower` is the variant's own (fine-tuned or the
    run's), so its Keras quality and a SavedModel are recorded too."""
    tflite = _tflite_part(ctx, name, tower, quantization)
    split = ctx.run.split
    keras_quality = evaluate_ranker(tower, split.test, split.test_negatives) if own_model else None
    saved = _saved_model_part(ctx, name, tower) if own_model else None
    return variant_record(name, tflite, _protocol(split.test_negatives), sparsity, keras_quality,
                          saved, note)


def _fine_tune(ctx: _RankerContext, method: str, settings: dict, target_sparsity: float) -> dict:
    keras.utils.set_random_seed(ctx.run.options.seed)
    din, dataset = ctx.fresh_ranker(), ctx.training_dataset()
    epochs, learning_rate = settings["epochs"], settings["learning_rate"]
    with optimization_scope():
        if method == "prune":
            din, report = prune_din(din, dataset, epochs=epochs, target_sparsity=target_sparsity,
                                    learning_rate=learning_rate)
            record = _variant(ctx, method, din.tower, "none", own_model=True,
                              sparsity=report["sparsity"])
        else:
            din, _ = qat_din(din, dataset, epochs=epochs, learning_rate=learning_rate)
            record = _variant(ctx, method, din.tower, QAT_QUANTIZATION, own_model=True,
                              note="keras and saved_model = the fake-quantized QAT tower")
    return {**record, "fine_tuning": settings}


def _protocol(test_negatives: int) -> str:
    return f"1 positive + {test_negatives} negatives"


def optimize_ranker_run(run_dir: str | os.PathLike, methods=METHODS, epochs: int | None = None,
                        target_sparsity: float = 0.8, k: int = 10, latency_runs: int = 50,
                        output: str | os.PathLike | None = None,
                        learning_rate: float | None = None) -> dict:
    """Builds, exports and compares optimized variants of the DIN run in `run_dir`.

    Args:
        run_dir: a `tfrec-attn train --model din` run directory (`load_ranking_run`).
        methods, epochs, target_sparsity, latency_runs, output, learning_rate: as for
            `optimize_run` (`optimization/report.py`).
        k: the most candidates the exported SavedModels' `rank` signature returns (`max_k`).

    Returns:
        The report written to `optimize.json`: run-level settings (`model_type` `"din"`,
        `protocol`, `test_users`, `num_candidates` `C`, `reference`: the run's test AUC /
        GAUC, ...) and `"variants"`, one record per variant with `path`, `size_bytes`,
        `gzip_bytes` (the deployed `.tflite`), `tflite_quantization`, `auc`, `gauc` (that
        file's quality; `quality_source` `"deployed"`), `protocol`, `sparsity` (of the
        prunable weights; 0 for dense variants), `keras` (`auc`, `gauc` of the variant's
        Keras tower; `None` for post-training quantization, whose tower is `float32`'s),
        `latency` (`tflite` /
        `saved_model` -> `single` / `batch_16` -> `p50_ms`, `p99_ms`, a request being one
        history and `C` candidates; `saved_model` is `None` without a SavedModel) and
        `saved_model` (`path`, `size_bytes`, `gzip_bytes`, or `None`); fine-tuned variants
        add `fine_tuning` (`epochs`, `learning_rate`, `batch_size`).

    The outputs are regenerated as a whole, as by `optimize_run`: `optimized/` ends up
    holding exactly the variants this call lists, `optimized/saved_models/models.config`
    lists exactly its SavedModels, and an interrupted or failed call leaves no
    `optimize.json` / `models.config` describing replaced or deleted files (the earlier ones
    are removed before any export is replaced; `optimize.json` is written last).

    Raises:
        ValueError: an unknown or unsupported method, a bad setting or an `output` that is
            not a directory, raised before anything is loaded or written; data that no longer
            match the run. TypeError: `methods` is not a string or a sequence of strings.
            FileNotFoundError: see `load_ranking_run`.
    """
    methods = check_methods(methods)
    check_common_settings(epochs, target_sparsity, latency_runs, learning_rate)
    check_positive_int("k", k)
    out = Path(output if output is not None else run_dir)
    check_output(out)
    run = load_ranking_run(run_dir)
    fine_tuning = fine_tune_settings(run, methods, epochs, learning_rate)
    ctx = _RankerContext(run, out / OPTIMIZED, k, latency_runs)
    invalidate_report(out)  # from here until the end nothing describes the exports
    variants = {"float32": _variant(ctx, "float32", run.tower, "none", own_model=True)}
    for method in methods:
        if method in PTQ:
            variants[method] = _variant(ctx, method, run.tower, PTQ[method], own_model=False)
        else:
            variants[method] = _fine_tune(ctx, method, fine_tuning[method], target_sparsity)
    remove_stale_exports(ctx.root, variants)
    write_serving_config(ctx.root, variants)
    report = {
        "run_dir": os.fspath(run_dir), "model_type": "din",
        "protocol": _protocol(run.split.test_negatives), "seed": run.options.seed,
        "test_users": len(ctx.requests["history"]), "test_rows": len(run.split.test["label"]),
        "num_candidates": ctx.num_candidates, "k": k, "fine_tuning": fine_tuning,
        "target_sparsity": target_sparsity, "latency_runs": latency_runs,
        "device": optimization_device(),
        "reference": {m: run.metrics.get("test", {}).get(m) for m in METRICS},
        "evaluation": "each deployed .tflite scores the run's test requests (one history and "
                      "its 1 + test_negatives candidates); same rows as metrics.json",
        "variants": variants,
    }
    plot_optimization(report, out / "optimize.png", metric="gauc")
    write_json(out / "optimize.json", report)  # last: it describes only finished files
    return report


def ranker_table(report: dict) -> str:
    """A plain-text table of the variants in an `optimize_ranker_run` report."""
    shapes = list(report["variants"]["float32"]["latency"]["tflite"])
    sizes = "/".join(shape.removeprefix("batch_").replace("single", "1") for shape in shapes)
    header = (f"{'variant':12s}{'tflite KiB':>11s}{'gzip KiB':>10s}{'auc':>8s}{'gauc':>8s}"
              f"{'keras gauc':>11s}{'sparsity':>9s}{f'tfl p50 {sizes} ms':>17s}"
              f"{f'sm p50 {sizes} ms':>16s}")
    lines = [f"test ({report['protocol']} a user, {report['test_users']} users; a request = "
             f"1 history + {report['num_candidates']} candidates)", header]
    for name, v in report["variants"].items():
        cells = ["/".join(f"{v['latency'][runtime][shape]['p50_ms']:.2f}" for shape in shapes)
                 if v["latency"][runtime] else "-" for runtime in ("tflite", "saved_model")]
        keras_gauc = f"{v['keras']['gauc']:.4f}" if v["keras"] else "-"
        lines.append(f"{name:12s}{v['size_bytes'] / 1024:11.1f}{v['gzip_bytes'] / 1024:10.1f}"
                     f"{v['auc']:8.4f}{v['gauc']:8.4f}{keras_gauc:>11s}{v['sparsity']:9.3f}"
                     f"{cells[0]:>17s}{cells[1]:>16s}")
    return "\n".join(lines + quantization_notes(report["variants"]))
