"""Identity in the forward pass, no gradient backwards: a head that must not train its input."""

from tfrec_attn._keras import keras, tf
from tfrec_attn.registry import register


@register()
class StopGradient(keras.layers.Layer):
    """Passes `inputs` through unchanged and blocks their gradient.

    A proper layer (rather than a `tf.stop_gradient` lambda between layers) keeps functional
    models serializable and lets TFMOT clone them. The off-policy recommender's behaviour head
    reads the policy state through it, so fitting the logging policy does not move the state
    (Chen et al., 2019, section 4.3). TFLite drops it (an `Identity`).

    Call arguments:
        inputs: any float tensor.

    Returns:
        `inputs`, with a zero gradient.

    Example:
    >>> from tfrec_attn._keras import tf
    >>> x = tf.constant([1.0, 2.0])
    >>> with tf.GradientTape() as tape:
    ...     tape.watch(x)
    ...     y = tf.reduce_sum(StopGradient()(x) * x)
    >>> tape.gradient(y, x).numpy().tolist()
    [1.0, 2.0]
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs):
        return tf.stop_gradient(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_prunable_weights(self) -> list:
        return []
