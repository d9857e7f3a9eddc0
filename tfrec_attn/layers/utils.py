"""Helpers shared by the layer family: initializer cloning, sublayer builds, prunable weights,
new axes."""

from tfrec_attn._keras import keras, tf


def clone_initializer(initializer):
    """A fresh initializer with the same config, so sublayers never share random state."""
    initializer = keras.initializers.get(initializer)
    return initializer.__class__.from_config(initializer.get_config())


def build_sublayer(layer: keras.layers.Layer, input_shape) -> None:
    """Builds `layer` under its own name scope, so its weights get unique names.

    Built directly inside a parent's `build`, every sublayer would otherwise name its weights
    `parent/kernel:0`, and h5 weight files (which key weights by name) could not be written.
    """
    with tf.name_scope(layer.name):
        layer.build(input_shape)


def prunable_kernels(layer: keras.layers.Layer) -> list:
    """Kernels and embedding tables of every nested sublayer, for TFMOT's `get_prunable_weights`.

    Biases, layer-norm parameters and small vectors stay dense: pruning them saves nothing and
    hurts quality.
    """
    weights = []
    for sub in layer._flatten_layers(include_self=False, recursive=True):
        if isinstance(sub, keras.layers.Dense | keras.layers.EinsumDense):
            weights.append(sub.kernel)
        elif isinstance(sub, keras.layers.Embedding):
            weights.append(sub.embeddings)
    return weights


def check_rank(layer: keras.layers.Layer, argument: str, shape, rank: int = 3,
               layout: str = "(batch, length, dim)") -> None:
    """Raises a ValueError naming `argument` when its static `shape` is not of rank `rank`.

    An unknown rank passes (graphs with dynamic shapes): only what is statically known is checked.

    Example:
    >>> check_rank(keras.layers.Layer(name="demo"), "query", (2, 8))
    Traceback (most recent call last):
    ...
    ValueError: Layer expects query of rank 3 (batch, length, dim). Received: shape (2, 8)
    """
    shape = tf.TensorShape(shape)
    if shape.rank is not None and shape.rank != rank:
        raise ValueError(f"{type(layer).__name__} expects {argument} of rank {rank} {layout}. "
                         f"Received: shape {tuple(shape.as_list())}")


def expand_axes(x: tf.Tensor, *axes: int) -> tf.Tensor:
    """`x` with a size-1 axis inserted at each of `axes`, in order (`tf.expand_dims` each).

    Use it instead of `x[:, None]`-style indexing on tensors with dynamic shapes: TFLite lowers
    `EXPAND_DIMS` for any shape, but a `StridedSlice` with a new axis only when at most one
    dimension is unknown (a `(None, None)` input needs the `StridedSlice` select op).

    Example:
    >>> expand_axes(tf.ones((2, 3)), 1, 3).shape
    TensorShape([2, 1, 3, 1])
    """
    for axis in axes:
        x = tf.expand_dims(x, axis)
    return x


def scatter_rows(ids: tf.Tensor, values: tf.Tensor, width) -> tf.Tensor:
    """`(batch, width)` sums of `values` by id, per row: `out[b, j]` adds every
    `values[b, ...]` whose `ids[b, ...]` is `j` (`SCATTER_ND`, which sums duplicates in TF and
    TFLite alike).

    Args:
        ids: int32 `(batch, ...)`, each in `[0, width)`.
        values: the same shape as `ids`.
        width: the output's second dimension (int or scalar tensor).

    Example:
    >>> scatter_rows(tf.constant([[1, 1, 0]]), tf.constant([[2, 3, 4]]), 3).numpy().tolist()
    [[4, 5, 0]]
    """
    batch = tf.shape(ids)[0]
    rows = tf.broadcast_to(expand_axes(tf.range(batch), *range(1, ids.shape.rank)),
                           tf.shape(ids))
    indices = tf.reshape(tf.stack([rows, ids], axis=-1), [-1, 2])
    return tf.scatter_nd(indices, tf.reshape(values, [-1]), tf.stack([batch, width]))
