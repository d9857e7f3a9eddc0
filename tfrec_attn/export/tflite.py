"""TFLite (LiteRT) export of the sequential recommender: one `recommend` signature, builtin ops.

The flatbuffer holds the whole serving graph of `build_topk_model`: id sanitizing, the encoder,
tied catalogue scores, history exclusion and top-k. Its signature:

    recommend: history int64 (batch, max_len) -> item_ids int64 (batch, k),
                                                scores float32 (batch, k)

`max_len` is fixed (pad with `tfrec_attn.data.pad_left`); the batch dimension is dynamic (stored
as 1, so resize the input tensor before running a larger batch; `LiteRTRecommender` does).
Ids outside `[0, vocab)` become the OOV id (1), the rule of `RecommenderModule.sanitize`.

One tied table, one int8 copy: the item table feeds the history `GATHER` and the catalogue
scores. Scored by a `FULLY_CONNECTED` (the Keras graph), the converter quantizes the constant
once per consumer (per-tensor for `GATHER`, per-channel with 4-byte scales and 8-byte zero
points per item for `FULLY_CONNECTED`) and stores two int8 copies. For `"dynamic"` files of a
`SASRec`, `recommend` scores against rows *gathered* from the table instead (`tf.gather` with
indices sized at run time, which the converter cannot fold into a second constant), so both
consumers are `GATHER`s of one int8 buffer (see `docs/BENCHMARKS.md` section 5). Full-integer
`"int8"` keeps the Keras graph: there each `GATHER` takes its output's calibrated scale, so
two gathers still mean two copies.
"""

import contextlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from tfrec_attn._keras import keras, tf
from tfrec_attn.export.module_export import (
    find_layer,
    mixed_precision_layers,
    reject_mixed_precision,
    reject_pruning_wrappers,
)
from tfrec_attn.export.saved_model import encoder_item_layer, item_table
from tfrec_attn.layers import (
    HistoryTopK,
    ItemEmbedding,
    LastPosition,
    PositionEmbedding,
    SinusoidalPositionEmbedding,
    TransitionPrior,
)
from tfrec_attn.layers.masking import ids_to_oov
from tfrec_attn.models.sasrec import SASRec, active_prior, build_topk_model

SIGNATURE = "recommend"
QUANTIZATIONS = ("none", "float16", "dynamic", "int8")
OOV_ID = 1
# The start of the warning `tensorflow/lite/python/interpreter.py` raises from TF's calibrator.
_INTERPRETER_DEPRECATION = r"\s*Warning: tf\.lite\.Interpreter is deprecated"

# Name scopes an int8 file keeps in float32 when the graph has a `TransitionPrior`: the prior's
# log-probabilities, sums and ratios span orders of magnitude that one int8 scale cannot hold
# (fully quantized, the top-10 kept about a quarter of the Keras model's items), and the top-k
# ranks the mixture it returns (its `TOPK_V2`, whose fused name the scope misses, is kept float
# by op type). The encoder stays int8.
PRIOR_FLOAT_SCOPES = ("transition_prior", "top_k")
PRIOR_FLOAT_OPS = ("TOPK_V2",)

_BUILTIN_NAMES = {code: name for name, code in vars(schema.BuiltinOperator).items()
                  if not name.startswith("_")}


def _serving_parts(model: SASRec | keras.Model, k: int, exclude_history: bool = True
                   ) -> tuple[keras.Model, int, int]:
    """`(top-k model, max_len, vocab_size)` from a `SASRec` or a functional top-k model."""
    if isinstance(model, SASRec):
        reject_pruning_wrappers(model.encoder, "model.encoder", "model.encoder")
        return (build_topk_model(model.encoder, k=k, exclude_history=exclude_history,
                                 prior=active_prior(model)),
                model.config.max_len, model.config.vocab_size)
    if not isinstance(model, keras.Model) or not isinstance(model.output, dict) or not {
            "item_ids", "scores"} <= set(model.output):
        raise ValueError("model must be a SASRec or a functional top-k model with outputs "
                         f"{{'item_ids', 'scores'}} (see build_topk_model). Received: {model!r}")
    embedding = find_layer(model, ItemEmbedding)
    if embedding is None:
        raise ValueError("The top-k model has no ItemEmbedding layer to read vocab_size from.")
    reject_pruning_wrappers(model, "model", "model")
    reject_mixed_precision(model, "model")
    max_len = model.input.shape[1]
    if max_len is None:
        positions = find_layer(model, (PositionEmbedding, SinusoidalPositionEmbedding))
        if positions is None:
            raise ValueError("The top-k model's history length is unknown: give it a fixed "
                             "input shape (batch, max_len) or a position embedding.")
        max_len = positions.max_length
    return model, int(max_len), embedding.vocab_size


def float32_copy(model: SASRec) -> SASRec:
    """`model` itself if every layer computes in float32, else the same `SASRec` rebuilt
    under the `float32` policy with `model`'s weights (a `mixed_float16` model keeps float32
    variables, so they copy over exactly), which TFLite converts with builtin ops.

    Example:
    >>> from tfrec_attn.models import SASRecConfig
    >>> model = SASRec(SASRecConfig(vocab_size=12, max_len=4, dim=8, num_blocks=1))
    >>> float32_copy(model) is model
    True
    """
    if not mixed_precision_layers(model.encoder):
        return model
    reject_pruning_wrappers(model.encoder, "model.encoder", "model.encoder")
    if hasattr(model.encoder, "_weight_vars") or any(
            isinstance(layer, keras.layers.Wrapper) for layer in model.encoder.layers):
        reject_mixed_precision(model.encoder, "model.encoder")  # QAT / wrapped: not rebuilt
    with float32_policy():
        copy = SASRec(model.config)
    copy.encoder.set_weights(model.encoder.get_weights())
    if model.transition_prior is not None:
        copy.transition_prior.set_weights(model.transition_prior.get_weights())
    return copy


@contextlib.contextmanager
def float32_policy():
    """Sets the global Keras policy to `float32` inside the block (the serving layers built
    there, e.g. `build_topk_model`'s, then compute in float32 whatever the caller's policy)."""
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(policy)


def _recommend_function(topk: keras.Model, max_len: int, vocab_size: int):
    """The `recommend` signature: sanitize ids (as `RecommenderModule.sanitize`), then top-k."""

    @tf.function(input_signature=[tf.TensorSpec([None, max_len], tf.int64, name="history")])
    def recommend(history):
        outputs = topk(ids_to_oov(history, vocab_size, OOV_ID), training=False)
        return {"item_ids": outputs["item_ids"], "scores": outputs["scores"]}

    return recommend


def _shared_table_function(model: SASRec, k: int, exclude_history: bool):
    """`recommend` scoring against `gather(table, all ids)`: one int8 table (module docstring).

    Same values as the Keras graph (`ItemEmbedding(mode="score")` on the last state, then
    `HistoryTopK`); only the route the catalogue rows take differs.
    """
    encoder, max_len = model.encoder, model.config.max_len
    vocab_size = model.config.vocab_size
    item_layer = encoder_item_layer(encoder)
    last, top_k = LastPosition(), HistoryTopK(k=k, exclude_history=exclude_history)
    prior = active_prior(model)

    @tf.function(input_signature=[tf.TensorSpec([None, max_len], tf.int64, name="history")])
    def recommend(history):
        history = ids_to_oov(history, vocab_size, OOV_ID)
        state = tf.cast(last(encoder(history, training=False)), tf.float32)
        # `min(batch, 0) + vocab` is `vocab`, but only known at run time: the gather stays an op.
        ids = tf.range(tf.minimum(tf.shape(history)[0], 0) + vocab_size)
        rows = tf.gather(item_table(item_layer), ids)
        scores = tf.matmul(state, rows, transpose_b=True)
        if prior is not None:
            scores = prior([scores, history])
        top_ids, top_scores = top_k([scores, history])
        return {"item_ids": top_ids, "scores": top_scores}

    return recommend


def check_id_range(argument: str, ids: np.ndarray, vocab_size: int | None) -> None:
    """`ValueError` naming `argument`, its first id outside `[0, vocab_size)` and that range
    (`vocab_size=None`: nothing is checked). The file reads such ids as OOV, so calibrating
    int8 on them would fit the ranges to OOV rows instead of real inputs.

    >>> check_id_range("rows", np.array([[0, 2, 40]]), 32)
    Traceback (most recent call last):
    ...
    ValueError: rows must hold item ids in [0, vocab_size) = [0, 32). Received: 40 at index (0, 2)
    """
    if vocab_size is None or not ids.size:
        return
    bad = np.argwhere((ids < 0) | (ids >= vocab_size))
    if len(bad):
        index = tuple(int(i) for i in bad[0])
        raise ValueError(f"{argument} must hold item ids in [0, vocab_size) = [0, {vocab_size})."
                         f" Received: {ids[index]} at index {index}")


def representative_dataset(rows, max_len: int, argument: str = "representative_histories",
                           input_name: str = "history", what: str = "real validation histories",
                           vocab_size: int | None = None):
    """The int8 calibration generator of a `(batch, max_len)` int64 input: one row a step.

    Shared by every `convert_*_to_tflite` whose one input is a left-padded id array.

    Args:
        rows: `(n, max_len)` int array of real inputs, or `None`.
        max_len: the input length the file fixes.
        argument: the caller's argument name (error messages name it).
        input_name: the signature's input name.
        what: what the rows are (error messages).
        vocab_size: ids must lie in `[0, vocab_size)` (`check_id_range`); `None`: unchecked.

    Returns:
        A generator function yielding `{input_name: (1, max_len) int64}`.

    Example:
    >>> next(representative_dataset([[0, 2, 3]], 3)())["history"].tolist()
    [[0, 2, 3]]
    """
    if rows is None:
        raise ValueError(f"quantization='int8' needs {argument}: {what}, an int array "
                         f"(n, {max_len}). Received: None")
    rows = np.asarray(rows)
    if rows.dtype.kind not in "iu" or rows.ndim != 2 or rows.shape[1] != max_len \
            or not len(rows):
        raise ValueError(f"{argument} must be an int array (n >= 1, max_len={max_len}). "
                         f"Received dtype {rows.dtype}, shape {rows.shape}")
    check_id_range(argument, rows, vocab_size)

    def generator() -> Iterator[dict]:
        for row in rows.astype(np.int64):
            yield {input_name: row[None]}

    return generator


def _configure(converter, quantization: str, representative, allow_select_tf_ops: bool) -> None:
    ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization in ("float16", "dynamic", "int8"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantization == "int8":
        # Internals in int8 where a kernel exists, float elsewhere; the int64 input and the
        # int64/float32 outputs keep their types (inference_input/output_type stay float32).
        converter.representative_dataset = representative
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    if allow_select_tf_ops:
        ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
    converter.target_spec.supported_ops = ops


def convert_to_tflite(model: SASRec | keras.Model, path: str | os.PathLike, k: int = 10,
                      quantization: str = "none",
                      representative_histories: np.ndarray | None = None,
                      allow_select_tf_ops: bool = False, exclude_history: bool = True) -> Path:
    """Converts the top-k recommender to a `.tflite` file with the `recommend` signature.

    Args:
        model: a trained `SASRec`, or a functional top-k model (`build_topk_model`, whose own
            `k` is then used and the `k` argument ignored). A `SASRec` built under a mixed
            precision policy is converted from its float32 copy (`float32_copy`); a pruned
            one must be `strip_pruning`'d first.
        path: the `.tflite` file to write (parent directories are created).
        k: how many items `recommend` returns.
        quantization: `"none"` (float32), `"float16"` (float16 weights), `"dynamic"` (int8
            weights, float activations) or `"int8"` (full-integer internals calibrated on
            `representative_histories`; input and outputs keep int64/float32; a QAT `SASRec`
            converts the same way). Top-10 overlap with Keras is tested in
            `tests/export/test_tflite.py`; `"dynamic"` is the smallest file (one int8 table).
            A `SASRec`'s transition prior (when its weight is above 0) is in every file, its
            table never quantized (int32); in `"int8"` files it and the final top-k compute
            in float32 (`PRIOR_FLOAT_SCOPES`).
        representative_histories: `(n, max_len)` int array of real validation histories,
            ids in `[0, vocab_size)`; required for `"int8"`, ignored otherwise.
        allow_select_tf_ops: allow Flex (TF) ops, which need the Flex delegate on device.
        exclude_history: for a `SASRec`, never return history items (`False`: rank the whole
            catalogue, e.g. for an evaluation twin with `k = vocab_size - 2`).

    Returns:
        The path of the written file.

    Raises:
        ValueError: an unknown `quantization`, or `"int8"` without `representative_histories`
            (or with ids outside `[0, vocab_size)`), a model still holding pruning wrappers,
            or a mixed precision top-k model; raised before anything is converted.
        tf.lite ConverterError: the graph needs non-builtin ops (and not `allow_select_tf_ops`).
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}. "
                         f"Received: quantization={quantization!r}")
    if isinstance(model, SASRec):
        model = float32_copy(model)
    with float32_policy():
        topk, max_len, vocab_size = _serving_parts(model, k, exclude_history)
        representative = None
        if quantization == "int8":
            representative = representative_dataset(representative_histories, max_len,
                                                    vocab_size=vocab_size)
        module = tf.Module()
        module.topk = topk
        if quantization == "dynamic" and isinstance(model, SASRec):
            module.recommend = _shared_table_function(model, k, exclude_history)
        else:
            module.recommend = _recommend_function(topk, max_len, vocab_size)
        has_prior = find_layer(topk, TransitionPrior) is not None
        return convert_module(module.recommend, SIGNATURE, path, quantization,
                              representative, allow_select_tf_ops,
                              float_scopes=PRIOR_FLOAT_SCOPES if has_prior else (),
                              float_ops=PRIOR_FLOAT_OPS if has_prior else ())


def convert_module(function, signature: str, path: str | os.PathLike, quantization: str,
                   representative, allow_select_tf_ops: bool, float_scopes=(),
                   float_ops=()) -> Path:
    """Converts the tf.function `function` (with an input signature) to a `.tflite` file at
    `path` under the signature name `signature` (through a SavedModel, so the signature keeps
    its name and its input/output names); returns the path.

    Under `"int8"`, the ops whose output tensors are named inside one of `float_scopes` (Keras
    layer names, e.g. `"transition_prior"`), and every op of a type in `float_ops` (TFLite
    builtin names), stay float32: the names are read from a float conversion of the same
    graph, and the file is quantized
    selectively by TF's `QuantizationDebugger` (`denylisted_nodes` / `denylisted_ops`, its
    documented use).

    The scratch SavedModel holds only `function` and the variables it reads: saving the module
    that owns it would also serialize every Keras layer the module holds, about two thirds of a
    conversion's time, for nothing the converter reads."""
    holder = tf.Module()
    holder.function = function
    holder.variables_read = list(function.get_concrete_function().variables)
    scratch = tempfile.mkdtemp(prefix="tfrec_attn_tflite_")
    try:
        tf.saved_model.save(holder, scratch, signatures={signature: function})
        converter = tf.lite.TFLiteConverter.from_saved_model(scratch, signature_keys=[signature])
        _configure(converter, quantization, representative, allow_select_tf_ops)
        with warnings.catch_warnings():
            # int8 calibration runs TF's own `tf.lite.Interpreter`, which warns that it is
            # deprecated on every conversion: nothing the caller can act on. Only that
            # message is hidden; the converter's C++ log lines (`fully_quantize: ...`) go to
            # the process's stderr and stay, as do real errors.
            warnings.filterwarnings("ignore", message=_INTERPRETER_DEPRECATION,
                                    category=UserWarning)
            if quantization == "int8" and (float_scopes or float_ops):
                nodes = (_scoped_tensor_names(scratch, signature, float_scopes,
                                              allow_select_tf_ops) if float_scopes else [])
                options = tf.lite.experimental.QuantizationDebugOptions(
                    denylisted_nodes=nodes, denylisted_ops=list(float_ops))
                flatbuffer = tf.lite.experimental.QuantizationDebugger(
                    converter=converter, debug_dataset=representative,
                    debug_options=options).get_nondebug_quantized_model()
            else:
                flatbuffer = converter.convert()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(flatbuffer)
    return path


def _scoped_tensor_names(saved_model: str, signature: str, scopes,
                         allow_select_tf_ops: bool) -> list[str]:
    """The output tensor names of a float conversion of `saved_model` that lie inside one of
    the name `scopes` (`.../<scope>/...`)."""
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model, signature_keys=[signature])
    _configure(converter, "none", None, allow_select_tf_ops)
    names = {tensor.Name().decode() for tensor in _tensors(converter.convert())}
    return sorted(name for name in names
                  if any(f"/{scope}/" in f"/{part}" for scope in scopes
                         for part in name.split(";")))


def _tensors(flatbuffer: bytes) -> Iterator:
    """Every tensor (`schema.Tensor`) of every subgraph of a `.tflite` flatbuffer."""
    model = schema.Model.GetRootAs(flatbuffer, 0)
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        for i in range(graph.TensorsLength()):
            yield graph.Tensors(i)


def int8_tensor_count(path: str | os.PathLike) -> int:
    """How many int8 tensors a `.tflite` file holds: 0 means nothing in it was quantized to
    8 bits (e.g. a `dynamic` conversion of a model whose weights are all below the converter's
    1,024-element threshold is a float32 file).

    Example:
    >>> import tempfile
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> path = f"{tempfile.mkdtemp()}/tiny.tflite"
    >>> _ = open(path, "wb").write(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    >>> int8_tensor_count(path)
    0
    """
    return sum(tensor.Type() == schema.TensorType.INT8
               for tensor in _tensors(Path(path).read_bytes()))


def _operator_codes(path: str | os.PathLike) -> Iterator[tuple[str, bool]]:
    """`(name, is_custom)` for every operator code in the flatbuffer."""
    model = schema.Model.GetRootAs(Path(path).read_bytes(), 0)
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        # Codes above 127 live in `BuiltinCode`; older files only fill the deprecated field.
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            yield code.CustomCode().decode(), True
        else:
            yield _BUILTIN_NAMES.get(builtin, f"BUILTIN_{builtin}"), False


def tflite_ops(path: str | os.PathLike) -> set[str]:
    """Names of the operators a `.tflite` file uses: builtin names (`"FULLY_CONNECTED"`) or,
    for custom and Flex ops, their custom code (`"FlexEinsum"`)."""
    return {name for name, _ in _operator_codes(path)}


def assert_builtin_only(path: str | os.PathLike) -> None:
    """Raises `ValueError` listing the Flex/custom ops if the file needs more than builtins."""
    others = sorted({name for name, custom in _operator_codes(path) if custom})
    if others:
        raise ValueError(
            f"{path} uses non-builtin ops {others}: Flex ops need the TF Select delegate and "
            "custom ops a registered kernel on device. Rewrite the layer with builtin ops "
            "(matmul/reshape/transpose rather than einsum), or pass allow_select_tf_ops=True."
        )
