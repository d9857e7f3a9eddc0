"""TFLite (LiteRT) export of the attention RL policy: one `recommend` signature, builtin ops only.

    recommend: history int64 (batch, max_len) -> item_ids int64 (batch, k),
                                                probabilities float32 (batch, k)

The flatbuffer holds `PolicyModule.serve` (`export.policy`): ids outside `[0, vocab)` read as
OOV (1), the network, the top-k actions (never padding or OOV; never history items with
`exclude_history`) and `pi(a|s)`, the softmax over all actions (ids `>= 2`), not renormalized
after the exclusions. `max_len` is fixed (left-pad with `tfrec_attn.data.pad_left`); the batch
stays dynamic.

The fixed-length input also bounds the exclusion: the file sees, and so excludes, only the
`max_len` ids it is given. For a user with a longer history, items before the last `max_len`
can be returned; drop them on device (the SavedModel's `serving_default` takes any length and
excludes every id of the request).
"""

import os
from pathlib import Path

import numpy as np

from tfrec_attn._keras import keras, tf
from tfrec_attn.export.litert_runner import LiteRTRecommender
from tfrec_attn.export.module_export import reject_mixed_precision
from tfrec_attn.export.policy import PolicyModule, policy_network
from tfrec_attn.export.tflite import (
    QUANTIZATIONS,
    SIGNATURE,
    convert_module,
    representative_dataset,
)
from tfrec_attn.models.attention_policy import AttentionPolicy
from tfrec_attn.models.losses import FIRST_ITEM_ID
from tfrec_attn.validation import check_int_up_to

POLICY_SIGNATURE = SIGNATURE  # "recommend", the signature `LiteRTRecommender` runs
OUTPUTS = ("item_ids", "probabilities")


def convert_policy_to_tflite(policy_or_network: AttentionPolicy | keras.Model,
                             path: str | os.PathLike, k: int = 10, quantization: str = "none",
                             representative_data: np.ndarray | None = None,
                             exclude_history: bool = True,
                             allow_select_tf_ops: bool = False) -> Path:
    """Converts the policy to a `.tflite` file returning its top-`k` actions and `pi(a|s)`.

    Args:
        policy_or_network: a trained `AttentionPolicy` or its network (plain,
            `strip_pruning`'d or quantization-aware), as for `export_policy`.
        path: the `.tflite` file to write (parent directories are created).
        k: how many actions `recommend` returns; at most the number of actions
            (`vocab_size - 2`).
        quantization: `"none"` (float32), `"float16"`, `"dynamic"` (int8 weights, float
            activations) or `"int8"` (full-integer internals calibrated on
            `representative_data`; input and outputs keep int64/float32).
        representative_data: `(n, max_len)` int array of real histories; required for
            `"int8"`, ignored otherwise.
        exclude_history: never return items of the `(n, max_len)` input (older items of a
            longer history are not seen, so not excluded: see the module docstring).
        allow_select_tf_ops: allow Flex (TF) ops, which need the Flex delegate on device.

    Returns:
        The path of the written file.

    Example:
    >>> import tempfile
    >>> from tfrec_attn.models import AttentionPolicyConfig
    >>> policy = AttentionPolicy(AttentionPolicyConfig(vocab_size=10, max_len=3, dim=8))
    >>> path = convert_policy_to_tflite(policy, tempfile.mkdtemp() + "/policy.tflite", k=2)
    >>> out = LiteRTPolicy(path).recommend([[0, 2, 3]])
    >>> out["item_ids"].shape, out["probabilities"].dtype
    ((1, 2), dtype('float32'))
    """
    network, _ = policy_network(policy_or_network)
    reject_mixed_precision(network, "policy_or_network")
    actions = int(network.output["logits"].shape[-1]) - FIRST_ITEM_ID
    check_int_up_to("k", k, actions, "the number of actions")
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}. "
                         f"Received: quantization={quantization!r}")
    module = PolicyModule(  # checks exclude_history
        policy_or_network, max_k=k, exclude_history=exclude_history)
    representative = None
    if quantization == "int8":
        representative = representative_dataset(representative_data, module.max_len,
                                                "representative_data",
                                                vocab_size=module.vocab_size)

    # `serve` takes any history length; the file fixes it to `max_len` (static shapes).
    @tf.function(input_signature=[
        tf.TensorSpec([None, module.max_len], tf.int64, name="history")])
    def recommend(history):
        return module.serve(history)

    module.recommend = recommend
    return convert_module(module.recommend, POLICY_SIGNATURE, path, quantization,
                          representative, allow_select_tf_ops)


class LiteRTPolicy(LiteRTRecommender):
    """The policy's top-k actions and `pi(a|s)` from a `convert_policy_to_tflite` file.

    Reads the file's `recommend` signature and checks the input as `LiteRTRecommender` does
    (integer ids, `(n, max_len)`); ids outside `[0, vocab)` are read as OOV inside the model.
    Only the `max_len` ids given are excluded: filter a longer history's older items from the
    answer yourself.

    Args:
        path: the `.tflite` file.
        num_threads: interpreter threads; `None` lets LiteRT choose.
    """

    output_names = OUTPUTS  # `recommend`: {"item_ids": int64 (n, k), "probabilities": (n, k)}
