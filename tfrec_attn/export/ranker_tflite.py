"""TFLite (LiteRT) export of the DIN ranker: one `score` signature, builtin ops only.

    score: history int64 (batch, max_len), candidates int64 (batch, C) -> scores float32 (batch, C)

`C` (candidates a row) is fixed when converting, so the tiling and reshapes around the tower are
static; the batch stays dynamic. Pad shorter candidate lists with 0 and ignore their scores (or
convert one file per slate size). `max_len` is fixed as well
(left-pad with `tfrec_attn.data.pad_left`). Ids outside `[0, vocab)` become OOV (1) in the
graph, as in the SavedModel (`export.ranker`).
"""

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from tfrec_attn._keras import keras, tf
from tfrec_attn.export.litert_runner import signature_runner
from tfrec_attn.export.module_export import reject_mixed_precision
from tfrec_attn.export.ranker import din_tower, score_candidates, tower_sizes
from tfrec_attn.export.tflite import QUANTIZATIONS, check_id_range, convert_module
from tfrec_attn.models.din import DIN

RANKER_SIGNATURE = "score"


def _representative_dataset(data, max_len: int, num_candidates: int, vocab_size: int):
    """The int8 calibration generator of `representative_data` (checked: shapes, integer ids
    in `[0, vocab_size)`), one request a step."""
    if not isinstance(data, dict) or set(data) != {"history", "candidates"}:
        raise ValueError("quantization='int8' needs representative_data: a dict {'history': "
                         f"(n, {max_len}), 'candidates': (n, {num_candidates})}} of real request "
                         f"rows. Received: {type(data).__name__}")
    history, candidates = (np.asarray(data[key]) for key in ("history", "candidates"))
    if history.ndim != 2 or history.shape[1] != max_len or not len(history) \
            or candidates.shape != (len(history), num_candidates):
        raise ValueError(f"representative_data must hold history (n >= 1, max_len={max_len}) "
                         f"and candidates (n, num_candidates={num_candidates}). Received "
                         f"shapes {history.shape} and {candidates.shape}")
    for key, ids in (("history", history), ("candidates", candidates)):
        if ids.dtype.kind not in "iu":
            raise ValueError(f"representative_data[{key!r}] must hold integer item ids. "
                             f"Received dtype {ids.dtype}")
        check_id_range(f"representative_data[{key!r}]", ids, vocab_size)

    def generator() -> Iterator[dict]:
        for row, slate in zip(history.astype(np.int64), candidates.astype(np.int64)):
            yield {"history": row[None], "candidates": slate[None]}

    return generator


def convert_ranker_to_tflite(model_or_tower: DIN | keras.Model, path: str | os.PathLike,
                             num_candidates: int, quantization: str = "none",
                             representative_data: dict | None = None,
                             allow_select_tf_ops: bool = False) -> Path:
    """Converts the DIN ranker to a `.tflite` file scoring `num_candidates` candidates a row.

    Args:
        model_or_tower: a trained `DIN` or its tower (plain, `strip_pruning`'d or QAT).
        path: the `.tflite` file to write (parent directories are created).
        num_candidates: `C`, fixed in the file (module docstring).
        quantization: `"none"` (float32), `"float16"`, `"dynamic"` (int8 weights, float
            activations) or `"int8"` (full-integer internals calibrated on
            `representative_data`; inputs and output keep int64/float32).
        representative_data: `{"history": (n, max_len), "candidates": (n, C)}` real request
            rows, ids in `[0, vocab_size)`; required for `"int8"`, ignored otherwise.
        allow_select_tf_ops: allow Flex (TF) ops, which need the Flex delegate on device.

    Returns:
        The path of the written file.

    Example:
    >>> import tempfile
    >>> from tfrec_attn.models import DINConfig
    >>> din = DIN(DINConfig(vocab_size=9, max_len=3, dim=4, mlp_units=(4,)))
    >>> path = convert_ranker_to_tflite(din, tempfile.mkdtemp() + "/din.tflite", 5)
    >>> LiteRTRanker(path).score([[0, 2, 3]], [[4, 5, 6, 7, 8]]).shape
    (1, 5)
    """
    if isinstance(num_candidates, bool) or not isinstance(num_candidates, int) \
            or num_candidates < 1:
        raise ValueError("num_candidates must be a positive int. "
                         f"Received: num_candidates={num_candidates!r}")
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}. "
                         f"Received: quantization={quantization!r}")
    tower, _ = din_tower(model_or_tower)
    reject_mixed_precision(tower, "model_or_tower")
    max_len, vocab_size = tower_sizes(tower)
    representative = None
    if quantization == "int8":
        representative = _representative_dataset(representative_data, max_len, num_candidates,
                                                 vocab_size)

    @tf.function(input_signature=[
        tf.TensorSpec([None, max_len], tf.int64, name="history"),
        tf.TensorSpec([None, num_candidates], tf.int64, name="candidates")])
    def score(history, candidates):
        return {"scores": score_candidates(tower, history, candidates, vocab_size)}

    module = tf.Module()
    module.tower, module.score = tower, score
    return convert_module(module.score, RANKER_SIGNATURE, path, quantization,
                          representative, allow_select_tf_ops)


class LiteRTRanker:
    """Scores candidates with a `.tflite` file from `convert_ranker_to_tflite` (LiteRT).

    Args:
        path: the `.tflite` file.
        num_threads: interpreter threads; `None` lets LiteRT choose.
    """

    def __init__(self, path: str | os.PathLike, num_threads: int | None = None):
        interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
        self._runner = signature_runner(interpreter, path, RANKER_SIGNATURE)
        inputs = self._runner.get_input_details()
        self.max_len = int(inputs["history"]["shape_signature"][1])
        self.num_candidates = int(inputs["candidates"]["shape_signature"][1])

    def _check(self, name: str, ids, label: str, width: int, length: str) -> np.ndarray:
        """Integer ids `(n, width)`; `length` says what a wrong row length should become."""
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iu":
            raise ValueError(f"{name} must be integer item ids. Received dtype {ids.dtype}")
        if ids.ndim != 2:
            raise ValueError(f"{name} must be 2-D (n, {label}={width}); use {name}[None] for "
                             f"one row. Received shape {ids.shape}")
        if ids.shape[1] != width:
            raise ValueError(f"{name} must have {length}. Received shape {ids.shape}")
        return ids.astype(np.int64)

    def score(self, history, candidates) -> np.ndarray:
        """`(n, max_len)` histories and `(n, C)` candidates -> float32 logits `(n, C)`."""
        history = self._check(
            "history", history, "max_len", self.max_len,
            f"length max_len={self.max_len} (left-pad with 0, see tfrec_attn.data.pad_left)")
        candidates = self._check(
            "candidates", candidates, "num_candidates", self.num_candidates,
            f"num_candidates={self.num_candidates} columns, the slate size fixed in the file "
            "(pad shorter slates with 0 and ignore their scores, or convert a file for this "
            "size)")
        if len(history) != len(candidates):
            raise ValueError("history and candidates must have the same number of rows. "
                             f"Received {len(history)} and {len(candidates)}")
        if not len(history):
            return np.zeros((0, self.num_candidates), np.float32)
        return self._runner(history=history, candidates=candidates)["scores"]
