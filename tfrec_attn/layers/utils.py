"""Helpers shared by the layer family: initializer cloning and prunable-weight discovery."""

from tfrec_attn._keras import keras


def clone_initializer(initializer):
    """A fresh initializer with the same config, so sublayers never share random state."""
    initializer = keras.initializers.get(initializer)
    return initializer.__class__.from_config(initializer.get_config())


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
