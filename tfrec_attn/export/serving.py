"""TF Serving plumbing: REST/gRPC request helpers, warm-up records and `models.config`.

The REST helpers build exactly the JSON TF Serving's `:predict` endpoint takes: the row format
(`{"instances": [{"history": [...]}, ...]}`) and the columnar format (`{"inputs": {...}}`),
and parse its responses (`{"predictions": [...]}` / `{"outputs": {...}}`).
"""

import json
import os
from pathlib import Path

import numpy as np

from tfrec_attn._keras import tf
from tfrec_attn.data import pad_left


def _history_rows(histories, max_len: int | None) -> np.ndarray:
    if isinstance(histories, np.ndarray) and histories.ndim == 2:
        return histories.astype(np.int64)
    if max_len is None:
        max_len = max(len(h) for h in histories)
    return pad_left([np.asarray(h, np.int64) for h in histories], max_len)


def rest_request(histories, signature_name: str = "serving_default", columnar: bool = False,
                 max_len: int | None = None, **extra_inputs) -> str:
    """The JSON body of a TF Serving REST `:predict` request.

    Args:
        histories: `(n, T)` array or a list of id lists (left-padded to `max_len`).
        signature_name: which signature to call.
        columnar: use `{"inputs": {...}}` (needed for scalar inputs such as `k`) instead of
            `{"instances": [...]}`.
        max_len: pad lists to this length (default: the longest).
        **extra_inputs: other named inputs, e.g. `k=5` or `candidate_ids=[[...]]`.

    Example:
    >>> rest_request([[3, 4]], max_len=3)
    '{"signature_name": "serving_default", "instances": [{"history": [0, 3, 4]}]}'
    """
    rows = _history_rows(histories, max_len)
    if columnar or any(np.ndim(v) == 0 for v in extra_inputs.values()):
        inputs = {"history": rows.tolist()}
        inputs.update({k: np.asarray(v).tolist() for k, v in extra_inputs.items()})
        return json.dumps({"signature_name": signature_name, "inputs": inputs})
    instances = []
    for i, row in enumerate(rows):
        instance = {"history": row.tolist()}
        instance.update({k: np.asarray(v)[i].tolist() for k, v in extra_inputs.items()})
        instances.append(instance)
    return json.dumps({"signature_name": signature_name, "instances": instances})


def parse_rest_response(body: str | dict) -> dict[str, np.ndarray]:
    """TF Serving's `{"predictions": [...]}` or `{"outputs": {...}}` -> arrays by output name."""
    body = json.loads(body) if isinstance(body, str) else body
    if "error" in body:
        raise RuntimeError(f"TF Serving returned an error: {body['error']}")
    if "outputs" in body:
        outputs = body["outputs"]
        return {k: np.asarray(v) for k, v in outputs.items()}
    predictions = body["predictions"]
    if predictions and isinstance(predictions[0], dict):
        return {k: np.asarray([p[k] for p in predictions]) for k in predictions[0]}
    return {"output": np.asarray(predictions)}


def grpc_request(histories, model_name: str, signature_name: str = "serving_default",
                 max_len: int | None = None, **extra_inputs):
    """A `tensorflow_serving.apis.predict_pb2.PredictRequest` for the gRPC `Predict` call."""
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    rows = _history_rows(histories, max_len)
    request.inputs["history"].CopyFrom(tf.make_tensor_proto(rows, dtype=tf.int64))
    for key, value in extra_inputs.items():
        dtype = tf.int32 if key == "k" else tf.int64
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value, dtype=dtype))
    return request


def write_warmup_requests(path: str | os.PathLike, histories, model_name: str,
                          signature_name: str = "serving_default", limit: int = 100,
                          **extra_inputs) -> int:
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
    extra = {key: np.asarray(value) for key, value in extra_inputs.items()}
    for key, value in extra.items():
        if value.ndim == 0 or len(value) != len(rows):
            raise ValueError(f"{key} must have one row per history ({len(rows)}). "
                             f"Received shape {value.shape}")
    rows = rows[:limit]
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i, row in enumerate(rows):
            request = grpc_request(row[None, :], model_name, signature_name,
                                   **{key: value[i:i + 1] for key, value in extra.items()})
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return len(rows)


def write_models_config(path: str | os.PathLike, models: dict[str, str],
                        num_versions: int = 1) -> Path:
    """Writes a TF Serving `--model_config_file` serving each `name: base_path` model.

    `num_versions` latest versions of each model stay loaded (for canaries and rollbacks).
    """
    entries = []
    for name, base_path in models.items():
        entries.append(
            "  config {\n"
            f'    name: "{name}"\n'
            f'    base_path: "{base_path}"\n'
            '    model_platform: "tensorflow"\n'
            f"    model_version_policy {{ latest {{ num_versions: {num_versions} }} }}\n"
            "  }\n")
    path = Path(path)
    path.write_text("model_config_list {\n" + "".join(entries) + "}\n")
    return path
