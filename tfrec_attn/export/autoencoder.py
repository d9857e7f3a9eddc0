"""SavedModel export of the attention autoencoder (`models.attention_autoencoder`) for TF Serving.

A request is a user's item set; the answer is the autoencoder's top-k catalogue items with their
logits, as `recommend_from_item_sets` computes them in Python: the set is read as distinct real
ids (repeats and padding dropped, the most recent `max_len` kept, left-padded), and every item
of the request is excluded from the answer.
"""

import os
from pathlib import Path

import numpy as np

from tfrec_attn._keras import keras, tf
from tfrec_attn.export.module_export import (
    find_layer,
    reject_pruning_wrappers,
    save_versioned_module,
)
from tfrec_attn.export.serving import write_warmup_requests
from tfrec_attn.layers import HistoryTopK, PositionEmbedding
from tfrec_attn.layers.masking import ids_to_oov
from tfrec_attn.models.losses import FIRST_ITEM_ID
from tfrec_attn.validation import check_int_up_to

ITEMS = tf.TensorSpec([None, None], tf.int64, name="items")
PAD_ID = 0


def autoencoder_sizes(model: keras.Model) -> tuple[int, int]:
    """`(max_len, vocab_size)` of an autoencoder model (plain, `strip_pruning`'d or QAT).

    Raises a `ValueError` naming `model` for anything else: the model must map one int input
    `(batch, max_len)` to one score tensor `(batch, vocab_size)`, both sizes fixed.

    Example:
    >>> from tfrec_attn.models import AttentionAutoencoderConfig, build_attention_autoencoder
    >>> autoencoder_sizes(build_attention_autoencoder(AttentionAutoencoderConfig(9, 3, dim=4)))
    (3, 9)
    """
    inputs = model.inputs if isinstance(model, keras.Model) else None
    outputs = model.outputs if isinstance(model, keras.Model) else None
    if not inputs or len(inputs) != 1 or not outputs or len(outputs) != 1 \
            or inputs[0].shape.rank != 2 or not inputs[0].dtype.is_integer \
            or inputs[0].shape[1] is None or outputs[0].shape.rank != 2 \
            or outputs[0].shape[1] is None:
        raise ValueError("model must be an attention autoencoder: a functional model from item "
                         "ids (batch, max_len) to catalogue scores (batch, vocab_size), see "
                         f"build_attention_autoencoder. Received: {model!r}")
    reject_pruning_wrappers(model, "model", "model")
    max_len, vocab_size = int(inputs[0].shape[1]), int(outputs[0].shape[1])
    if vocab_size <= FIRST_ITEM_ID:
        raise ValueError(f"model must score at least one real item (vocab_size > "
                         f"{FIRST_ITEM_ID}). Received vocab_size={vocab_size}")
    return max_len, vocab_size


def is_positional(model: keras.Model) -> bool:
    """Whether the model adds a `PositionEmbedding` (then the item order matters)."""
    return find_layer(model, PositionEmbedding) is not None


def read_item_sets(items: tf.Tensor, max_len: int, vocab_size: int) -> tf.Tensor:
    """Request ids `(batch, T)` -> the model's input `(batch, max_len)`, as
    `recommend_from_item_sets` builds it: ids outside `[0, vocab_size)` become OOV (1), repeats
    are dropped (the last occurrence stays), padding (0) is dropped wherever it sits, and the
    most recent `max_len` distinct ids are kept in order and left-padded.

    Builtin TFLite ops only (`EQUAL`, `REDUCE_ANY`, `TOPK_V2`, `GATHER`). The repeat check
    compares every pair of positions, so it costs `O(T^2)` per row of the request.

    Example:
    >>> read_item_sets(tf.constant([[5, 0, 2, 5, 99]]), max_len=4, vocab_size=9).numpy()
    array([[0, 2, 5, 1]])
    """
    items = ids_to_oov(items, vocab_size)
    missing = max_len - items.shape[1] if items.shape[1] is not None else None
    if missing is None or missing > 0:  # at least max_len columns for `top_k` below
        missing = tf.maximum(max_len - tf.shape(items)[1], 0)
        items = tf.concat([tf.zeros(tf.stack([tf.shape(items)[0], missing]), tf.int64), items], 1)
    length = tf.shape(items)[1]
    positions = tf.range(length)
    later = positions[None, :] > positions[:, None]  # [j, i]: position i comes after j
    repeated = tf.reduce_any(
        tf.logical_and(tf.equal(items[:, :, None], items[:, None, :]), later[None]), axis=2)
    items = tf.where(repeated, tf.constant(PAD_ID, tf.int64), items)
    # The `max_len` latest real positions, latest first (padding keys are -1, never chosen
    # before a real one), reversed into reading order.
    keys = tf.where(tf.not_equal(items, PAD_ID), positions[None, :], -1)
    _, latest = tf.math.top_k(keys, k=max_len)
    return tf.gather(items, tf.reverse(latest, axis=[1]), batch_dims=1)


class AutoencoderModule(tf.Module):
    """The exported autoencoder: the model plus a TF Serving `serving_default` signature.

    Signature `serving_default`: `items` int64 `(batch, any length)`, a user's item set in any
    order, 0 = padding (ids outside `[0, vocab_size)` are read as OOV, 1; the model reads the
    set as `read_item_sets` builds it) -> `item_ids` int64 `(batch, max_k)` and `scores`
    float32 `(batch, max_k)`, the model's logits, best first. Padding and OOV are never
    returned, nor (with `exclude_input`) any item of the request: when fewer than `max_k` real
    items remain (`vocab_size - 2 - len(set) < max_k`), the slots left over hold id `-1` with
    score `-inf` with `mark_unfilled` (the SavedModel's contract, as for SASRec's), or excluded
    items without it (the TFLite file: int8 needs finite scores).

    Args:
        model: a trained model from `build_attention_autoencoder`: plain, pruned (after
            `strip_pruning`) or quantization-aware (`make_qat_model`).
        max_k: how many items to return; at most the number of real items (`vocab_size - 2`).
        exclude_input: never return items of the request.
        mark_unfilled: fill the slots no eligible item fills with id `-1` and score `-inf`
            (`HistoryTopK`); otherwise excluded items, ranked after every eligible one.

    Example:
    >>> from tfrec_attn.models import AttentionAutoencoderConfig, build_attention_autoencoder
    >>> model = build_attention_autoencoder(AttentionAutoencoderConfig(10, max_len=3, dim=4,
    ...                                                            num_blocks=0))
    >>> module = AutoencoderModule(model, max_k=2)  # keep a reference: `serve` is a method
    >>> out = module.serve(tf.constant([[0, 2, 3]], tf.int64))
    >>> out["item_ids"].shape, bool((out["item_ids"] >= 4).numpy().all())
    (TensorShape([1, 2]), True)
    """

    def __init__(self, model: keras.Model, max_k: int = 10, exclude_input: bool = True,
                 mark_unfilled: bool = False):
        super().__init__()
        self.max_len, self.vocab_size = autoencoder_sizes(model)
        self.model = model
        items = self.vocab_size - FIRST_ITEM_ID
        check_int_up_to("max_k", max_k, items, "the number of real items")
        self.max_k = max_k
        self.exclude_input = exclude_input
        self.top_k = HistoryTopK(k=max_k, exclude_history=exclude_input,
                                 mark_unfilled=mark_unfilled)

    def recommend(self, items: tf.Tensor) -> dict:
        """Top-`max_k` of int64 `items (batch, T)`, `T` static (TFLite) or not (SavedModel)."""
        logits = self.model(read_item_sets(items, self.max_len, self.vocab_size),
                            training=False)
        item_ids, scores = self.top_k([tf.cast(logits, tf.float32),
                                       ids_to_oov(items, self.vocab_size)])
        return {"item_ids": item_ids, "scores": scores}

    @tf.function(input_signature=[ITEMS])
    def serve(self, items):
        # Signatures do not check ranks at run time; `EnsureShape` does, naming the input.
        return self.recommend(tf.ensure_shape(items, [None, None], name="check_items_rank"))

    def signatures(self) -> dict:
        return {"serving_default": self.serve}


def export_autoencoder(model: keras.Model, export_root: str | os.PathLike,
                       name: str = "autoencoder", version: int | None = None,
                       keep: int | None = None, metadata: dict | None = None, warmup=None,
                       max_k: int = 10, exclude_input: bool = True) -> Path:
    """Exports the autoencoder to `export_root/name/<version>/` atomically (TF Serving layout).

    Args:
        model: a trained autoencoder model (see `AutoencoderModule`).
        export_root: the model base path TF Serving watches.
        name: the model name (a directory).
        version: integer version `>= 0`; defaults to one more than the newest.
        keep: if set, delete all but the `keep` newest versions afterwards.
        metadata: JSON-serializable dict merged into `assets.extra/tfrec_attn.json` (which holds
            `config` (`None`: a functional model does not carry its config, so pass
            `metadata={"config": config.to_dict()}`), `max_len`, `vocab_size`, `positional`,
            `max_k`, `exclude_input` and the signature names).
        warmup: `(n, max_len)` real item sets written as TF Serving warm-up requests.
        max_k: how many items `serving_default` returns (id `-1`, score `-inf` in the slots
            no eligible item fills).
        exclude_input: never return items of the request.

    Returns:
        The path of the new version directory.

    Example:
    >>> import tempfile
    >>> from tfrec_attn.models import AttentionAutoencoderConfig, build_attention_autoencoder
    >>> model = build_attention_autoencoder(AttentionAutoencoderConfig(10, max_len=3, dim=4,
    ...                                                            num_blocks=0))
    >>> export_autoencoder(model, tempfile.mkdtemp(), max_k=2).parts[-2:]
    ('autoencoder', '1')
    """
    module = AutoencoderModule(model, max_k=max_k, exclude_input=exclude_input,
                               mark_unfilled=True)
    info = {"config": None, "max_len": module.max_len, "vocab_size": module.vocab_size,
            "positional": is_positional(model), "max_k": max_k,
            "exclude_input": exclude_input, **(metadata or {})}
    write_warmup = None
    if warmup is not None:
        item_sets = np.asarray(warmup)
        if item_sets.ndim != 2 or item_sets.dtype.kind not in "iu":
            raise ValueError("warmup must be an integer array (n, max_len) of real item sets. "
                             f"Received dtype {item_sets.dtype}, shape {item_sets.shape}")

        def write_warmup(path):
            return write_warmup_requests(path, item_sets, model_name=name, input_name="items")

    return save_versioned_module(module, module.signatures(), export_root, name, version=version,
                                 keep=keep, info=info, write_warmup=write_warmup)
