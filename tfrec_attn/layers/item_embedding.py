"""An item embedding table that also scores states against the whole catalogue (tied weights)."""

from tfrec_attn._keras import keras, tf
from tfrec_attn.layers.utils import clone_initializer
from tfrec_attn.registry import register
from tfrec_attn.validation import check_bool, check_non_negative_float, check_positive_int


@register()
class ItemEmbedding(keras.layers.Layer):
    """Item id embeddings, shared by the sequence input and the output scores.

    Called on ids it looks up vectors (optionally scaled by `sqrt(dim)`); called with
    `mode="score"` on states `(..., dim)` it returns dot products with every item `(..., vocab)`.
    One layer serves both, so the candidate tower and the query tower share weights in any
    functional model and TFMOT prunes/quantizes the table once.

    Args:
        vocab_size: int. Number of ids, padding (0) and OOV (1) included.
        dim: int. Embedding size.
        scale_by_dim: bool. Multiply looked-up vectors by `sqrt(dim)` (Transformer convention).
        initializer: table initializer.
        l2: float. L2 penalty on looked-up rows (0 disables).

    Call arguments:
        inputs: int ids `(batch, ...)`, or float states `(..., dim)` with `mode="score"`.
        mode: `"embed"` (default) or `"score"`.

    Returns:
        `(batch, ..., dim)` vectors, or `(..., vocab_size)` scores.

    Example:
    >>> from tfrec_attn._keras import tf
    >>> layer = ItemEmbedding(vocab_size=10, dim=4)
    >>> layer(tf.constant([[2, 3]])).shape, layer(tf.ones((2, 4)), mode="score").shape
    (TensorShape([1, 2, 4]), TensorShape([2, 10]))
    """

    def __init__(self, vocab_size: int, dim: int, scale_by_dim: bool = False,
                 initializer="glorot_uniform", l2: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("vocab_size", vocab_size)
        check_positive_int("dim", dim)
        check_bool("scale_by_dim", scale_by_dim)
        if l2 is not None:  # None: no penalty, as 0
            check_non_negative_float("l2", l2)
        self.vocab_size = vocab_size
        self.dim = dim
        self.scale_by_dim = scale_by_dim
        self.initializer = keras.initializers.get(initializer)
        self.l2 = l2

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            name="embeddings", shape=(self.vocab_size, self.dim),
            initializer=clone_initializer(self.initializer))
        super().build(input_shape)

    def call(self, inputs, mode: str = "embed"):
        table = tf.cast(self.embeddings, self.compute_dtype)
        if mode == "score":
            flat = tf.reshape(tf.cast(inputs, table.dtype), [-1, self.dim])
            scores = tf.matmul(flat, table, transpose_b=True)
            return tf.reshape(scores, tf.concat([tf.shape(inputs)[:-1], [self.vocab_size]], 0))
        if mode != "embed":
            raise ValueError(f"mode must be 'embed' or 'score'. Received: mode={mode!r}")
        vectors = tf.gather(table, tf.cast(inputs, tf.int32))
        if self.l2:
            self.add_loss(self.l2 * tf.reduce_sum(tf.square(tf.cast(vectors, tf.float32))))
        if self.scale_by_dim:
            vectors = vectors * tf.cast(self.dim**0.5, vectors.dtype)
        return vectors

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape).concatenate([self.dim])

    def get_prunable_weights(self) -> list:
        return [self.embeddings]

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(vocab_size=self.vocab_size, dim=self.dim, scale_by_dim=self.scale_by_dim,
                      initializer=keras.initializers.serialize(self.initializer), l2=self.l2)
        return config
