"""TFLite round trips of small functional models, for the per-layer TFLite contract tests.

A layer case's model (`tests/optimization/optimization_cases.case_model`) becomes a `.tflite`
file for a fixed batch, with the converter settings of `tfrec_attn.export.tflite` (builtin ops;
`"int8"`: full-integer inside, float32 input and output, calibrated on given feeds), and runs in
LiteRT (`ai_edge_litert`), never in `tf.lite.Interpreter`.

The exporters convert through a scratch SavedModel (`convert_module`, for a named signature);
here the converter reads the concrete function directly, which gives the same outputs for every
layer case at a third of the time (checked when this harness was written), so files have no
signature and inputs are fed by name.

Example:
>>> round(relative_error(np.array([3.0, 4.0]), np.array([3.3, 4.4])), 6)
0.1
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from tfrec_attn._keras import keras, tf
from tfrec_attn.export.tflite import _configure


def input_names(model: keras.Model) -> list[str]:
    """The model's `keras.Input` names, in feed order: the file's input names."""
    return [tensor.name.split(":")[0] for tensor in model.inputs]


def serving_function(model: keras.Model, batch: int):
    """`model` (inference mode) as a tf.function of its named inputs at a fixed `batch`."""
    specs = [tf.TensorSpec((batch, *tensor.shape[1:]), tensor.dtype, name=name)
             for tensor, name in zip(model.inputs, input_names(model), strict=True)]

    @tf.function(input_signature=specs)
    def serve(*inputs):
        return model(list(inputs), training=False)

    return serve


def convert(model: keras.Model, path: str | os.PathLike, batch: int,
            quantization: str = "none", calibration: Sequence[list[np.ndarray]] = ()) -> Path:
    """Writes `model` (fed like `model(feed)`) as a builtin-ops `.tflite` file for `batch` rows.

    Args:
        quantization: one of `tfrec_attn.export.tflite.QUANTIZATIONS`.
        calibration: for `"int8"`, the feeds (`batch` rows each) the ranges are calibrated on.
    """
    function = serving_function(model, batch)
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [function.get_concrete_function()], function)

    def representative():
        yield from (list(feed) for feed in calibration)

    _configure(converter, quantization, representative, allow_select_tf_ops=False)
    path = Path(path)
    path.write_bytes(converter.convert())
    return path


def run(path: str | os.PathLike, model: keras.Model, feeds: Sequence[list[np.ndarray]]
        ) -> np.ndarray:
    """The file's output on each feed (inputs named like `model`'s) in LiteRT, stacked."""
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    by_name = {detail["name"]: detail["index"] for detail in interpreter.get_input_details()}
    output = interpreter.get_output_details()[0]["index"]
    outputs = []
    for feed in feeds:
        for name, value in zip(input_names(model), feed, strict=True):
            interpreter.set_tensor(by_name[name], value)
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(output))
    return np.stack(outputs)


def relative_error(want: np.ndarray, got: np.ndarray) -> float:
    """Normalized RMS error `||got - want|| / ||want||`: 0 when equal, 1 for an all-zero `got`."""
    want, got = np.asarray(want, np.float64), np.asarray(got, np.float64)
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))
