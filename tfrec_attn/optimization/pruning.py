"""Magnitude pruning of functional towers (TFMOT `prune_low_magnitude`), reports and sizes.

`prune_model` wraps, layer by layer, every layer with something to prune: our layers through
their `get_prunable_weights()` (sublayer kernels and embedding tables), Keras `Dense` /
`Embedding` / convolutions through TFMOT's registry. Layers with nothing to prune (masks,
norms, dropout, position encodings) stay unwrapped. The pruned model shares its layers and
variables with `model`, as TFMOT's `prune_low_magnitude(model)` does.

The wrapper is `PruneLowMagnitude` below, TFMOT's with Keras' implicit masks propagated
(`wrapper_masks.PropagateMask`): a model masked by `Embedding(mask_zero=True)` or `Masking`
stays masked while it is pruned, as it is before and after. Explicit masks
(`block(x, mask=padding)`, as our towers pass them) are forwarded as before.
"""

from __future__ import annotations

import gzip
import os
import tempfile

import numpy as np
import tensorflow_model_optimization as tfmot
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper

from tfrec_attn._keras import keras
from tfrec_attn.optimization.wrapper_masks import PropagateMask
from tfrec_attn.registry import register

sparsity = tfmot.sparsity.keras

SCHEDULES = ("polynomial", "constant")
_KERNEL_LAYERS = (keras.layers.Dense, keras.layers.EinsumDense, keras.layers.Conv1D,
                  keras.layers.Conv2D, keras.layers.Conv3D)


@register()
class PruneLowMagnitude(PropagateMask, pruning_wrapper.PruneLowMagnitude):
    """TFMOT's pruning wrapper whose output carries the wrapped layer's Keras mask.

    Registered as `tfrec_attn>PruneLowMagnitude`, so saved pruned models load without a scope;
    TFMOT's `strip_pruning`, `UpdatePruningStep` and `PruningSummaries` treat it as theirs.
    Two more differences from TFMOT's:
    - it computes in the wrapped layer's dtype policy, and reads each mask in its weight's
      dtype: under `mixed_float16`, TFMOT's wrapper reads its masks in float16 while a float32
      layer (`Dense(dtype="float32")`, the usual output layer) or an `Embedding` (whose table
      is never cast) reads its weight in float32, and the masking multiply fails;
    - a layer with several prunable weights gets masks and thresholds of distinct names
      (`mask`, `mask_1`, ...): TFMOT names each `mask` / `threshold`, which an `.h5` file
      cannot hold twice in one layer (and `from_config` finds our wrapped layers by their
      registered names), so a pruned model of our layers saves and loads as `.h5` too.
    """

    def __init__(self, layer, *args, **kwargs):
        if "dtype" not in kwargs and isinstance(layer, keras.layers.Layer):
            kwargs["dtype"] = layer.dtype_policy
        super().__init__(layer, *args, **kwargs)

    @classmethod
    def from_config(cls, config):
        # TFMOT deserializes the wrapped layer by its bare class name, which the `.h5` loader
        # resolves to Keras' own layer of that name (our `MultiHeadAttention` came back as
        # Keras'): name it by its registered name instead.
        layer = dict(config["layer"])
        registered = layer.get("registered_name")
        if registered and keras.utils.get_registered_object(registered) is not None:
            layer["class_name"] = registered
        return super().from_config({**config, "layer": layer})

    def add_weight(self, name=None, *args, **kwargs):
        if name in ("mask", "threshold"):  # called once per prunable weight, in order, by build
            counts = self.__dict__.setdefault("_pruning_var_counts", {})
            index = counts[name] = counts.get(name, -1) + 1
            name = f"{name}_{index}" if index else name
            # read in the weight's dtype: a mixed-precision layer's weights are cast to float16
            # in its call, an `Embedding`'s table (never autocast) is not
            kwargs["experimental_autocast"] = hasattr(self.prunable_weights[index], "true_dtype")
        return super().add_weight(name, *args, **kwargs)


def _is_pruning_wrapper(layer) -> bool:
    # `PruneLowMagnitude` is not public API; its instances are the layers with `pruning_vars`.
    return isinstance(layer, keras.layers.Wrapper) and hasattr(layer, "pruning_vars")


def prunable_weights(layer: keras.layers.Layer) -> list:
    """The weights magnitude pruning applies to in `layer` (wrapped or not).

    Our layers say so with `get_prunable_weights()`; for Keras layers we follow TFMOT's registry
    (kernels of dense/conv layers, embedding tables); anything else has none.

    Example:
    >>> layer = keras.layers.Dense(3)
    >>> layer.build((None, 2))
    >>> [w.name for w in prunable_weights(layer)]
    ['kernel:0']
    """
    if _is_pruning_wrapper(layer):
        return [weight for weight, _, _ in layer.pruning_vars]
    if hasattr(layer, "get_prunable_weights"):
        return list(layer.get_prunable_weights())
    if isinstance(layer, _KERNEL_LAYERS):
        return [layer.kernel]
    if isinstance(layer, keras.layers.Embedding):
        return [layer.embeddings]
    return []


def check_target_sparsity(target_sparsity: float) -> float:
    """`target_sparsity` if it is a fraction of zeros pruning can reach (in `[0, 1)`), else
    `ValueError` naming it.

    Example:
    >>> check_target_sparsity(0.8)
    0.8
    """
    if not 0.0 <= target_sparsity < 1.0:
        raise ValueError(f"target_sparsity must be in [0, 1). Received: {target_sparsity}")
    return target_sparsity


def make_schedule(target_sparsity: float = 0.8, schedule: str = "polynomial",
                  begin_step: int = 0, end_step: int | None = None, frequency: int = 100):
    """A TFMOT pruning schedule.

    `"polynomial"` ramps sparsity from 0 at `begin_step` to `target_sparsity` at `end_step`
    (required); `"constant"` prunes to `target_sparsity` at `begin_step` and keeps the mask
    updated every `frequency` steps until `end_step` (default: forever). Masks are updated on
    steps `begin_step + i * frequency`, so make `end_step - begin_step` a multiple of
    `frequency` for the target to be reached exactly at `end_step`.
    """
    check_target_sparsity(target_sparsity)
    if frequency < 1:
        raise ValueError(f"frequency must be positive. Received: frequency={frequency}")
    if schedule == "polynomial":
        if end_step is None or end_step <= begin_step:
            raise ValueError(
                f"schedule='polynomial' (the default) ramps sparsity up until end_step, so it "
                f"needs end_step > begin_step (e.g. end_step = epochs x steps per epoch), or use "
                f"schedule='constant' to prune to target_sparsity at begin_step. Received: "
                f"begin_step={begin_step}, end_step={end_step}")
        return sparsity.PolynomialDecay(initial_sparsity=0.0, final_sparsity=target_sparsity,
                                        begin_step=begin_step, end_step=end_step,
                                        frequency=frequency)
    if schedule == "constant":
        return sparsity.ConstantSparsity(target_sparsity, begin_step=begin_step,
                                         end_step=-1 if end_step is None else end_step,
                                         frequency=frequency)
    raise ValueError(f"schedule must be one of {SCHEDULES}. Received: schedule={schedule!r}")


def prune_model(model: keras.Model, target_sparsity: float = 0.8, schedule: str = "polynomial",
                begin_step: int = 0, end_step: int | None = None,
                frequency: int = 100) -> keras.Model:
    """`model` with a pruning wrapper around every layer with prunable weights.

    The wrappers are `PruneLowMagnitude` (TFMOT's, propagating Keras' implicit masks).

    Args:
        model: a functional or Sequential model (nested ones are pruned too).
        target_sparsity: final fraction of zeros in each prunable weight.
        schedule, begin_step, end_step, frequency: see `make_schedule`.

    Returns:
        The pruned model; train it with `pruning_callbacks()` and export `strip_pruning(...)`.
        Prune a tower in which each layer is called once (the encoder, not the scoring or
        top-k model that calls the shared `ItemEmbedding` twice): a wrapper advances its
        pruning step on every training call.

    Example:
    >>> x = keras.Input((4,))
    >>> model = keras.Model(x, keras.layers.Dense(2, name="d")(keras.layers.Dropout(0.1)(x)))
    >>> pruned = prune_model(model, schedule="constant")
    >>> [type(layer).__name__ for layer in pruned.layers]
    ['InputLayer', 'Dropout', 'PruneLowMagnitude']
    """
    pruning_schedule = make_schedule(target_sparsity, schedule, begin_step, end_step, frequency)

    def clone(layer):
        if isinstance(layer, keras.Model):
            return prune_model(layer, target_sparsity, schedule, begin_step, end_step, frequency)
        if _is_pruning_wrapper(layer) or not prunable_weights(layer):
            return layer
        return PruneLowMagnitude(layer, pruning_schedule=pruning_schedule)

    return keras.models.clone_model(model, clone_function=clone)


def pruning_callbacks(log_dir: str | None = None) -> list:
    """`UpdatePruningStep` (required while training a pruned model) and, with `log_dir`,
    `PruningSummaries` (per-layer sparsity in TensorBoard)."""
    callbacks = [sparsity.UpdatePruningStep()]
    if log_dir is not None:
        callbacks.append(sparsity.PruningSummaries(log_dir=log_dir))
    return callbacks


def strip_pruning(model: keras.Model) -> keras.Model:
    """`model` without pruning wrappers (same layers and sparse variables), ready to export."""
    return sparsity.strip_pruning(model)


def _layers(model: keras.Model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _layers(layer)
        else:
            yield layer


def sparsity_report(model: keras.Model) -> dict:
    """Per-layer and overall sparsity (fraction of exact zeros) of the prunable weights.

    Works on pruned and on stripped models. Layers without prunable weights are left out.

    Returns:
        `{"layers": {name: {"zeros", "size", "sparsity"}}, "zeros", "size", "sparsity"}`,
        where a wrapped layer is reported under its inner layer's name.

    Example:
    >>> layer = keras.layers.Dense(2, use_bias=False, name="d")
    >>> model = keras.Sequential([keras.Input((2,)), layer])
    >>> layer.kernel.assign([[0.0, 1.0], [0.0, 0.0]])  # doctest: +ELLIPSIS
    <...>
    >>> sparsity_report(model)
    {'layers': {'d': {'zeros': 3, 'size': 4, 'sparsity': 0.75}}, 'zeros': 3, 'size': 4, \
'sparsity': 0.75}
    """
    layers = {}
    for layer in _layers(model):
        weights = prunable_weights(layer)
        if not weights:
            continue
        values = [np.asarray(keras.backend.get_value(w)) for w in weights]
        zeros = int(sum(np.count_nonzero(v == 0) for v in values))
        size = int(sum(v.size for v in values))
        name = layer.layer.name if _is_pruning_wrapper(layer) else layer.name
        layers[name] = {"zeros": zeros, "size": size, "sparsity": zeros / size}
    zeros = sum(entry["zeros"] for entry in layers.values())
    size = sum(entry["size"] for entry in layers.values())
    return {"layers": layers, "zeros": zeros, "size": size,
            "sparsity": zeros / size if size else 0.0}


def _gzip_file(path: str) -> int:
    with open(path, "rb") as handle:
        return len(gzip.compress(handle.read()))


def gzip_size(path_or_model) -> int:
    """Gzip-compressed size in bytes of a saved file, a directory (files compressed one by one,
    summed), or a model's weights (saved to a temporary HDF5 file).

    Pruned weights are stored dense, so their savings show up only after compression; compare
    `gzip_size(stripped)` with `gzip_size(dense)`.
    """
    if isinstance(path_or_model, keras.layers.Layer):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "weights.h5")
            path_or_model.save_weights(path)
            return _gzip_file(path)
    path = os.fspath(path_or_model)
    if os.path.isdir(path):
        return sum(_gzip_file(os.path.join(root, name))
                   for root, _, names in sorted(os.walk(path)) for name in sorted(names))
    return _gzip_file(path)
