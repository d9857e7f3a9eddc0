"""Writes a `tf.Module` with serving signatures as one TF Serving version, atomically.

Shared by the ranker and policy exports: SavedModel, `assets.extra/tfrec_attn.json`, optional
warm-up requests, pruning of old versions (the steps `export_saved_model` takes for SASRec).
"""

import json
import os
from collections.abc import Callable
from pathlib import Path

from tfrec_attn._keras import keras, tf
from tfrec_attn.export.versioning import (
    atomic_version_dir,
    check_keep,
    check_version,
    keep_latest,
    next_version,
)
from tfrec_attn.validation import check_model_name

WARMUP_FILE = "tf_serving_warmup_requests"


def find_layer(model: keras.Model, types) -> keras.layers.Layer | None:
    """The first layer of `model` (nested, or inside a pruning / QAT wrapper) of `types`, or
    `None`.

    Example:
    >>> from tfrec_attn.layers import PositionEmbedding
    >>> model = keras.Sequential([keras.Input((3, 4)), PositionEmbedding(3)])
    >>> find_layer(model, PositionEmbedding).max_length, find_layer(model, keras.layers.Dense)
    (3, None)
    """
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, types):
            return layer
    return None


def save_versioned_module(module: tf.Module, signatures: dict, export_root: str | os.PathLike,
                          name: str, version: int | None = None, keep: int | None = None,
                          info: dict | None = None,
                          write_warmup: Callable[[Path], int] | None = None) -> Path:
    """Saves `module` to `export_root/name/<version>/` (TF Serving's layout), atomically.

    Args:
        module: the object to save; `signatures` are its `tf.function`s by signature name.
        signatures: `{signature name: tf.function}` (one must be `"serving_default"`).
        export_root: the model base path TF Serving watches.
        name: the model name: one directory (`validation.check_model_name`).
        version: integer version `>= 0`; defaults to one more than the newest.
        keep: if set, delete all but the `keep` newest versions afterwards.
        info: JSON-serializable dict written to `assets.extra/tfrec_attn.json` (the signature
            names are added under `"signatures"`).
        write_warmup: called with `assets.extra/tf_serving_warmup_requests` to write TF
            Serving warm-up records there.

    Returns:
        The path of the new version directory.

    Example:
    >>> import tempfile
    >>> module = tf.Module()
    >>> module.double = tf.function(lambda x: {"y": 2 * x},
    ...                             input_signature=[tf.TensorSpec([None], tf.float32)])
    >>> root = tempfile.mkdtemp()
    >>> save_versioned_module(module, {"serving_default": module.double}, root, "m").name
    '1'
    """
    check_model_name(name)
    if version is not None:
        check_version(version)
    if "serving_default" not in signatures:
        raise ValueError("signatures must include 'serving_default'. "
                         f"Received: {sorted(signatures)}")
    check_keep(keep)
    model_dir = Path(export_root) / name
    version = next_version(model_dir) if version is None else check_version(version)
    with atomic_version_dir(model_dir, version) as scratch:
        tf.saved_model.save(module, str(scratch), signatures=signatures)
        extra = scratch / "assets.extra"
        extra.mkdir(exist_ok=True)
        info = {**(info or {}), "signatures": sorted(signatures)}
        (extra / "tfrec_attn.json").write_text(json.dumps(info, indent=2))
        if write_warmup is not None:
            write_warmup(extra / WARMUP_FILE)
    keep_latest(model_dir, keep)
    return model_dir / str(version)


def is_pruning_wrapper(layer: keras.layers.Layer) -> bool:
    """Whether `layer` is a TFMOT pruning wrapper: TFMOT's `PruneLowMagnitude` or a subclass
    (`tfrec_attn.optimization.pruning.PruneLowMagnitude`), found by its `pruning_vars` or its
    class name, so export modules need not import TFMOT.

    Example:
    >>> is_pruning_wrapper(keras.layers.Dense(2))
    False
    """
    return hasattr(layer, "pruning_vars") or any(
        cls.__name__ == "PruneLowMagnitude" for cls in type(layer).__mro__)


def reject_pruning_wrappers(model: keras.Model, argument: str, what: str) -> None:
    """Raises a `ValueError` naming `argument` when `model` (at any depth, e.g. a SASRec's
    encoder) still has TFMOT pruning wrappers (their masks and step counters are training
    state; export the stripped model `what`)."""
    layers = model._flatten_layers(include_self=False, recursive=True)
    if any(is_pruning_wrapper(layer) for layer in layers):
        raise ValueError(f"{argument} still has TFMOT pruning wrappers: export "
                         f"tfrec_attn.optimization.strip_pruning({what}) instead.")


def mixed_precision_layers(model: keras.Model) -> list[str]:
    """Names of the layers of `model` (at any depth) computing in float16 / bfloat16 (built
    under a `mixed_float16` / `mixed_bfloat16` policy).

    Example:
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, name="d")])
    >>> mixed_precision_layers(model)
    []
    """
    return sorted({layer.name for layer in model._flatten_layers(include_self=False,
                                                                 recursive=True)
                   if getattr(layer, "compute_dtype", None) in ("float16", "bfloat16")})


def reject_mixed_precision(model: keras.Model, argument: str) -> None:
    """Raises a short `ValueError` naming `argument` and its mixed-precision layers, instead of
    the converter's long `ConverterError` (TFLite's builtin kernels do not take the float16 /
    float32 mixes such a graph holds)."""
    mixed = mixed_precision_layers(model)
    if mixed:
        raise ValueError(
            f"{argument} was built under a mixed precision policy (float16/bfloat16 compute "
            f"in {mixed[:5]}{' ...' if len(mixed) > 5 else ''}), which TFLite cannot convert "
            "with builtin ops: build the same model under the 'float32' policy "
            "(keras.mixed_precision.set_global_policy('float32')), copy the weights into it "
            "(set_weights(get_weights())) and convert that (quantization='float16' then "
            "gives float16 weights).")
