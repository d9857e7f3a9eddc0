"""TFLite (LiteRT) export of the attention autoencoder: one `recommend` signature, builtin ops.

    recommend: items int64 (batch, max_len) -> item_ids int64 (batch, k),
                                               scores float32 (batch, k)

The flatbuffer holds the SavedModel's serving graph (`AutoencoderModule.recommend`): OOV
mapping, repeat and padding removal (`read_item_sets`), the model and the top-k without the
input items. `max_len` is fixed (left-pad shorter sets with `tfrec_attn.data.pad_left`); the
batch is dynamic.
"""

import os
from pathlib import Path

import numpy as np

from tfrec_attn._keras import keras, tf
from tfrec_attn.data.vocabulary import FIRST_ITEM_ID
from tfrec_attn.export.autoencoder import AutoencoderModule, autoencoder_sizes
from tfrec_attn.export.litert_runner import LiteRTRecommender
from tfrec_attn.export.module_export import reject_mixed_precision
from tfrec_attn.export.tflite import (
    QUANTIZATIONS,
    SIGNATURE,
    convert_module,
    representative_dataset,
)
from tfrec_attn.validation import check_int_up_to


def convert_autoencoder_to_tflite(model: keras.Model, path: str | os.PathLike, k: int = 10,
                                  quantization: str = "none",
                                  representative_data: np.ndarray | None = None,
                                  allow_select_tf_ops: bool = False,
                                  exclude_input: bool = True) -> Path:
    """Converts the attention autoencoder to a `.tflite` file with the `recommend` signature.

    Args:
        model: a trained model from `build_attention_autoencoder` (plain, `strip_pruning`'d or
            QAT; a QAT model keeps its learned ranges even with `quantization="none"`).
        path: the `.tflite` file to write (parent directories are created).
        k: how many items `recommend` returns; at most `vocab_size - 2`.
        quantization: `"none"` (float32), `"float16"`, `"dynamic"` (int8 weights, float
            activations) or `"int8"` (full-integer internals calibrated on
            `representative_data`; the input and outputs keep int64/float32).
        representative_data: `(n, max_len)` int array of real item sets (left-padded);
            required for `"int8"`, ignored otherwise.
        allow_select_tf_ops: allow Flex (TF) ops, which need the Flex delegate on device.
        exclude_input: never return the input items (`False` with `k = vocab_size - 2` ranks
            the whole catalogue).

    Returns:
        The path of the written file.

    Example:
    >>> import tempfile
    >>> from tfrec_attn.models import AttentionAutoencoderConfig, build_attention_autoencoder
    >>> model = build_attention_autoencoder(AttentionAutoencoderConfig(10, max_len=3, dim=4,
    ...                                                            num_blocks=0))
    >>> path = convert_autoencoder_to_tflite(model, tempfile.mkdtemp() + "/ae.tflite", k=2)
    >>> LiteRTAutoencoder(path).recommend([[0, 2, 3]])["item_ids"].shape
    (1, 2)
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}. "
                         f"Received: quantization={quantization!r}")
    items = autoencoder_sizes(model)[1] - FIRST_ITEM_ID  # checks the model
    check_int_up_to("k", k, items, "the number of real items")
    module = AutoencoderModule(model, max_k=k, exclude_input=exclude_input)
    reject_mixed_precision(module.model, "model")
    representative = None
    if quantization == "int8":
        representative = representative_dataset(representative_data, module.max_len,
                                                "representative_data", "items", "real item sets",
                                                vocab_size=module.vocab_size)

    @tf.function(input_signature=[tf.TensorSpec([None, module.max_len], tf.int64,
                                                name="items")])
    def recommend(items):
        return module.recommend(items)

    holder = tf.Module()  # the model and the one function (not `serve`'s dynamic-length trace)
    holder.model, holder.recommend = module.model, recommend
    return convert_module(holder.recommend, SIGNATURE, path, quantization,
                          representative, allow_select_tf_ops)


class LiteRTAutoencoder(LiteRTRecommender):
    """Top-k items from a `.tflite` file of `convert_autoencoder_to_tflite` (LiteRT).

    `recommend(item_sets)`: `(n, max_len)` int ids, left-padded with 0 ->
    `{"item_ids": int64 (n, k), "scores": float32 (n, k)}`, best first, never an input item;
    the input is checked as `LiteRTRecommender` checks histories.

    Args:
        path: the `.tflite` file.
        num_threads: interpreter threads; `None` lets LiteRT choose.
    """

    input_name, argument = "items", "item_sets"
