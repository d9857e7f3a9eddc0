"""TF Serving plumbing: REST/gRPC request helpers, warm-up records and `models.config`.

The REST helpers build exactly the JSON TF Serving's `:predict` endpoint takes: the row format
(`{"instances": [{"history": [...]}, ...]}`) and the columnar format (`{"inputs": {...}}`),
and parse its responses (`{"predictions": [...]}` / `{"outputs": {...}}`, or the nameless
answers of a one-output signature).
"""

import json
import os
from pathlib import Path

import numpy as np

from tfrec_attn._keras import tf
from tfrec_attn.data import pad_left
from tfrec_attn.validation import check_positive_int


def _history_rows(histories, max_len: int | None) -> np.ndarray:
    if isinstance(histories, np.ndarray) and histories.ndim == 2:
        return histories.astype(np.int64)
    if max_len is None:
        max_len = max(len(h) for h in histories)
    return pad_left([np.asarray(h, np.int64) for h in histories], max_len)


def _extra_input(name: str, value) -> np.ndarray:
    """An extra input as an array; ragged rows of ids (lists of different lengths, e.g.
    `candidates`) are right-padded with 0, the padding id, so position `j` of a row stays the
    `j`-th id sent."""
    try:
        return np.asarray(value)
    except ValueError:  # NumPy refuses ragged nested lists
        pass
    try:
        rows = [np.asarray(row) for row in value]
    except (TypeError, ValueError):
        rows = None
    if rows is None or not rows or any(
            row.ndim != 1 or (row.size and row.dtype.kind not in "iu") for row in rows):
        raise ValueError(f"{name} must be an array, or one list of integer ids per history "
                         "(ragged lists are right-padded with 0). "
                         f"Received: {name}={value!r:.200}")
    padded = np.zeros((len(rows), max(len(row) for row in rows)), np.int64)
    for i, row in enumerate(rows):
        padded[i, :len(row)] = row
    return padded


def rest_request(histories, signature_name: str = "serving_default", columnar: bool = False,
                 max_len: int | None = None, input_name: str = "history", **extra_inputs) -> str:
    """The JSON body of a TF Serving REST `:predict` request.

    Args:
        histories: `(n, T)` array or a list of id lists (left-padded to `max_len`).
        signature_name: which signature to call.
        columnar: use `{"inputs": {...}}` (needed for scalar inputs such as `k`) instead of
            `{"instances": [...]}`.
        max_len: pad lists to this length (default: the longest).
        input_name: the signature's name for `histories` (the autoencoder's is `"items"`).
        **extra_inputs: other named inputs, e.g. `k=5` or `candidate_ids=[[...]]`: a scalar,
            or one row per history. Lists of ids of different lengths (ragged `candidates`)
            are right-padded with 0, the padding id (DIN ranks padding candidates last).

    Raises:
        ValueError: `k` with a signature other than `"recommend"` (the only one that takes
            it), or an input without one row per history.

    Example:
    >>> rest_request([[3, 4]], max_len=3)
    '{"signature_name": "serving_default", "instances": [{"history": [0, 3, 4]}]}'
    >>> rest_request([[3], [4]], candidates=[[5, 6], [7]])  # doctest: +NORMALIZE_WHITESPACE
    '{"signature_name": "serving_default", "instances": [{"history": [3], "candidates": [5, 6]},
     {"history": [4], "candidates": [7, 0]}]}'
    """
    if "k" in extra_inputs and signature_name != "recommend":
        raise ValueError(f"k is not an input of {signature_name!r}: only a SASRec export's "
                         "'recommend' signature takes it (the others return a fixed top-k or "
                         "every candidate): rest_request(histories, signature_name='recommend', "
                         "k=...)")
    rows = _history_rows(histories, max_len)
    extra = {key: _extra_input(key, value) for key, value in extra_inputs.items()}
    if columnar or any(value.ndim == 0 for value in extra.values()):
        inputs = {input_name: rows.tolist()}
        inputs.update({key: value.tolist() for key, value in extra.items()})
        return json.dumps({"signature_name": signature_name, "inputs": inputs})
    for key, value in extra.items():
        if len(value) != len(rows):
            raise ValueError(f"{key} must have one row per history ({len(rows)}). "
                             f"Received shape {value.shape}")
    instances = []
    for i, row in enumerate(rows):
        instance = {input_name: row.tolist()}
        instance.update({key: value[i].tolist() for key, value in extra.items()})
        instances.append(instance)
    return json.dumps({"signature_name": signature_name, "instances": instances})


def parse_rest_response(body: str | dict, output_name: str | None = None
                        ) -> dict[str, np.ndarray]:
    """TF Serving's `:predict` answer -> arrays by output name.

    TF Serving names the outputs of a signature with several (`{"predictions": [{name: value,
    ...}, ...]}` in the row format, `{"outputs": {name: value, ...}}` in the columnar one), but
    omits the name when the signature has one output: `{"predictions": [value, ...]}` and
    `{"outputs": value}`. Such an answer is returned as `{output_name: array}`, so pass the
    signature's output name (`"scores"` for DIN's `serving_default` and SASRec's `score`,
    `"embedding"` for `user_embedding` / `item_embeddings`).

    Args:
        body: the response JSON, as a string or parsed.
        output_name: the name of the output of a one-output signature; required when the
            answer carries no output names, ignored when it does.

    Raises:
        RuntimeError: TF Serving answered `{"error": ...}`.
        ValueError: the answer carries no output names and `output_name` is not given, or it
            is neither TF Serving's row nor columnar answer.

    Example:
    >>> parse_rest_response('{"outputs": {"item_ids": [[4, 2]], "scores": [[0.5, 0.25]]}}')
    {'item_ids': array([[4, 2]]), 'scores': array([[0.5 , 0.25]])}
    >>> parse_rest_response('{"outputs": [[0.5, 0.25]]}', output_name="scores")
    {'scores': array([[0.5 , 0.25]])}
    >>> parse_rest_response('{"predictions": [[0.5, 0.25]]}', output_name="scores")
    {'scores': array([[0.5 , 0.25]])}
    """
    body = json.loads(body) if isinstance(body, str) else body
    if not isinstance(body, dict) or not {"error", "outputs", "predictions"} & set(body):
        raise ValueError("body must be TF Serving's :predict answer, an object with "
                         f"'predictions', 'outputs' or 'error'. Received: {body!r:.200}")
    if "error" in body:
        raise RuntimeError(f"TF Serving returned an error: {body['error']}")
    if "outputs" in body:
        outputs = body["outputs"]
        if isinstance(outputs, dict):
            return {k: np.asarray(v) for k, v in outputs.items()}
        return {_unnamed_output(output_name, "outputs"): np.asarray(outputs)}
    predictions = body["predictions"]
    if predictions and isinstance(predictions[0], dict):
        return {k: np.asarray([p[k] for p in predictions]) for k in predictions[0]}
    return {_unnamed_output(output_name, "predictions"): np.asarray(predictions)}


def _unnamed_output(output_name: str | None, key: str) -> str:
    if not isinstance(output_name, str) or not output_name:
        raise ValueError(
            f"The answer's {key!r} holds no output names (TF Serving omits the name when the "
            "signature has one output): pass output_name, the signature's output (e.g. "
            f"'scores'). Received: output_name={output_name!r}")
    return output_name


def grpc_request(histories, model_name: str, signature_name: str = "serving_default",
                 max_len: int | None = None, input_name: str = "history", **extra_inputs):
    """A `tensorflow_serving.apis.predict_pb2.PredictRequest` for the gRPC `Predict` call."""
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    rows = _history_rows(histories, max_len)
    request.inputs[input_name].CopyFrom(tf.make_tensor_proto(rows, dtype=tf.int64))
    for key, value in extra_inputs.items():
        dtype = tf.int32 if key == "k" else tf.int64
        request.inputs[key].CopyFrom(tf.make_tensor_proto(_extra_input(key, value),
                                                          dtype=dtype))
    return request


def write_warmup_requests(path: str | os.PathLike, histories, model_name: str,
                          signature_name: str = "serving_default", limit: int = 100,
                          input_name: str = "history", **extra_inputs) -> int:
    """Writes TF Serving warm-up records (`PredictionLog`s in a TFRecord file).

    Place the file at `<version>/assets.extra/tf_serving_warmup_requests`; TF Serving replays it
    before it marks the version available, so the first real requests are not slow. Use real
    validation histories so every shape the graph sees in production is traced.

    `**extra_inputs` are other per-row inputs of the signature, one row per history (e.g.
    `candidates=(n, C)` ids for the DIN ranker); row `i` goes into request `i`.

    Returns:
        The number of records written (one request per history row, at most `limit`).
    """
    from tensorflow_serving.apis import prediction_log_pb2

    rows = _history_rows(histories, None)
    extra = {key: _extra_input(key, value) for key, value in extra_inputs.items()}
    for key, value in extra.items():
        if value.ndim == 0 or len(value) != len(rows):
            raise ValueError(f"{key} must have one row per history ({len(rows)}). "
                             f"Received shape {value.shape}")
    rows = rows[:limit]
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i, row in enumerate(rows):
            request = grpc_request(row[None, :], model_name, signature_name,
                                   input_name=input_name,
                                   **{key: value[i:i + 1] for key, value in extra.items()})
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return len(rows)


class ModelsConfigError(ValueError):
    """A TF Serving `--model_config_file` that cannot be read or merged into (the message names
    the file; the file is left unchanged)."""


def read_models_config(path: str | os.PathLike):
    """The TF Serving `--model_config_file` at `path` as a `ModelServerConfig`, or `None` if
    there is no file.

    Raises:
        ModelsConfigError: (a `ValueError`) naming the file, if it is not a text-format model
            config list (a parse error, a `custom_model_config`, or a model name listed twice).
    """
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    path = Path(path)
    if not path.exists():
        return None
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(path.read_text(), config)
    except (text_format.ParseError, UnicodeDecodeError) as error:
        raise ModelsConfigError(f"{path} is not a TF Serving model config list ({error}); "
                                "fix or remove it (it was left unchanged).") from error
    if config.WhichOneof("config") == "custom_model_config":
        raise ModelsConfigError(f"{path} holds a custom_model_config, not a "
                                "model_config_list; fix or remove it (it was left unchanged).")
    names = [entry.name for entry in config.model_config_list.config]
    if len(set(names)) < len(names):
        raise ModelsConfigError(f"{path} lists a model name more than once ({names}); fix "
                                "or remove it (it was left unchanged).")
    return config


def write_models_config(path: str | os.PathLike, models: dict[str, str],
                        num_versions: int = 1, merge: bool = True) -> Path:
    """Adds or updates `name: base_path` models in the TF Serving `--model_config_file` at
    `path`, keeping every other model it lists (so SASRec and DIN runs can share one file);
    with `merge=False` the file lists exactly `models` (whatever it held is dropped).

    An entry with the same name is replaced; new ones are appended. The file is rewritten
    atomically (temporary file + `os.replace`); one that cannot be parsed (`read_models_config`)
    raises `ValueError` and is left untouched. Uses TF Serving's own `ModelServerConfig` proto.

    Args:
        path: the config file (created if missing).
        models: model name -> `base_path` (the directory holding its numbered versions).
        num_versions: the latest versions of each given model kept loaded (for canaries and
            rollbacks).
        merge: keep the other models the file lists (`False`: replace the whole list, e.g.
            `optimize`'s config of exactly the SavedModels it leaves).

    Returns:
        `path`.

    Example:
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "models.config"
    >>> _ = write_models_config(path, {"sasrec": "/models/sasrec"})
    >>> _ = write_models_config(path, {"din": "/models/din"})
    >>> [e.name for e in read_models_config(path).model_config_list.config]
    ['sasrec', 'din']
    >>> _ = write_models_config(path, {"din": "/models/din"}, merge=False)
    >>> [e.name for e in read_models_config(path).model_config_list.config]
    ['din']
    """
    check_positive_int("num_versions", num_versions)
    if not isinstance(models, dict) or not all(
            isinstance(k, str) and k and isinstance(v, str) and v for k, v in models.items()):
        raise ValueError("models must map non-empty model names to non-empty base paths. "
                         f"Received: models={models!r}")
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    path = Path(path)
    config = read_models_config(path) if merge else None
    if config is None:
        config = model_server_config_pb2.ModelServerConfig()
    entries = config.model_config_list.config
    index = {entry.name: entry for entry in entries}
    for name, base_path in models.items():
        entry = index[name] if name in index else entries.add()
        entry.Clear()
        entry.name = name
        entry.base_path = base_path
        entry.model_platform = "tensorflow"
        entry.model_version_policy.latest.num_versions = num_versions
    if not entries:  # an empty list still names its oneof, so TF Serving reads a valid file
        config.model_config_list.SetInParent()
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text_format.MessageToString(config))
    os.replace(temporary, path)
    return path
