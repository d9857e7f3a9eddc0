"""A stand-in for TF Serving's REST `:predict` handler, for contract tests.

No TF Serving binary can be installed on the build machines, so tests send the exact JSON body
to this function instead: it loads the SavedModel with `tf.saved_model.load`, converts the JSON
to tensors by the signature's declared dtypes (as TF Serving does), calls the signature and
answers in TF Serving's response format (a signature with one output: its values without the
output's name, as TF Serving answers).
"""

import json

import numpy as np

from tfrec_attn._keras import tf


def predict_like_tf_serving(export_dir: str, body: str) -> str:
    request = json.loads(body)
    loaded = tf.saved_model.load(str(export_dir))
    signature = loaded.signatures[request.get("signature_name", "serving_default")]
    specs = signature.structured_input_signature[1]
    if "instances" in request:
        names = request["instances"][0].keys()
        inputs = {n: np.asarray([inst[n] for inst in request["instances"]]) for n in names}
    else:
        inputs = {n: np.asarray(v) for n, v in request["inputs"].items()}
    unknown = set(inputs) - set(specs)
    if unknown:
        return json.dumps({"error": f"unknown inputs {sorted(unknown)}"})
    tensors = {n: tf.constant(v, dtype=specs[n].dtype) for n, v in inputs.items()}
    outputs = {k: v.numpy().tolist() for k, v in signature(**tensors).items()}
    # TF Serving drops the output's name when the signature has only one
    single = next(iter(outputs.values())) if len(outputs) == 1 else None
    if "instances" in request:
        if single is not None:
            return json.dumps({"predictions": single})
        rows = len(next(iter(outputs.values())))
        return json.dumps({"predictions": [{k: v[i] for k, v in outputs.items()}
                                           for i in range(rows)]})
    return json.dumps({"outputs": outputs if single is None else single})
