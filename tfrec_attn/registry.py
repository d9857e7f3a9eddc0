"""One registration decorator: every serializable object lands under `tfrec_attn>ClassName`."""

from tfrec_attn._keras import keras

PACKAGE = "tfrec_attn"


def register(name: str | None = None):
    """Registers a class as Keras-serializable under `tfrec_attn>{name or class name}`.

    Example:
    >>> @register()
    ... class Doubler(keras.layers.Layer):
    ...     def call(self, inputs):
    ...         return inputs * 2
    >>> keras.saving.get_registered_name(Doubler)
    'tfrec_attn>Doubler'
    """
    return keras.saving.register_keras_serializable(package=PACKAGE, name=name)
