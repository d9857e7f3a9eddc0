"""Input corruption for set autoencoders: drop whole items (ids become padding) while training."""

from tfrec_attn._keras import keras, tf
from tfrec_attn.registry import register


@register()
class ItemDropout(keras.layers.Layer):
    """Replaces each real item id by the padding id with probability `rate`, in training only.

    The denoising corruption of Mult-DAE (Liang et al., 2018) on an id input: the model then
    reconstructs the user's whole item set from a random part of it. Dropped items become
    padding, so a `PaddingMask` computed from this layer's output hides them from attention.
    A row never loses all its items: if every real id of a row would be dropped, the one with
    the largest random draw is kept. Padding stays padding. At inference (and with `rate=0`)
    the layer returns its input unchanged and adds no op to the graph.

    Args:
        rate: float in `[0, 1)`. Probability of dropping each real item. Defaults to `0.5`
            (Mult-DAE's input dropout).
        pad_id: int. The padding id dropped items become. Defaults to `0`.
        seed: int or None. Op-level seed of the random draws.
        replacement_id: int or None. The id dropped items become; `None` (the default) means
            `pad_id`, so dropped items are hidden. An unknown-item id (the vocabulary's OOV id)
            instead keeps the position visible and hides only which item it was (SASRec's
            `input_dropout`).

    Call arguments:
        inputs: integer ids `(batch, T)`.
        training: bool. Corrupt only when `True`.

    Returns:
        Ids of the same shape and dtype.

    Example:
    >>> from tfrec_attn._keras import tf
    >>> layer = ItemDropout(rate=0.5)
    >>> ids = tf.constant([[0, 2, 3, 4]])
    >>> layer(ids).numpy().tolist()  # inference: identity
    [[0, 2, 3, 4]]
    >>> int(tf.reduce_sum(tf.cast(layer(ids, training=True) > 0, tf.int32))) >= 1
    True
    """

    def __init__(self, rate: float = 0.5, pad_id: int = 0, seed: int | None = None,
                 replacement_id: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate < 1.0:
            raise ValueError(f"rate must be a float in [0, 1). Received: rate={rate!r}")
        if isinstance(pad_id, bool) or not isinstance(pad_id, int):
            raise ValueError(f"pad_id must be an int. Received: pad_id={pad_id!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed must be an int or None. Received: seed={seed!r}")
        if replacement_id is not None and (isinstance(replacement_id, bool)
                                           or not isinstance(replacement_id, int)):
            raise ValueError("replacement_id must be an int or None. "
                             f"Received: replacement_id={replacement_id!r}")
        self.rate = float(rate)
        self.replacement_id = replacement_id
        self.pad_id = pad_id
        self.seed = seed

    def _drop(self, ids):
        pad = tf.cast(self.pad_id, ids.dtype)
        real = tf.not_equal(ids, pad)
        draws = tf.random.uniform(tf.shape(ids), seed=self.seed)
        keep = tf.logical_and(real, draws >= self.rate)
        # The real item with the largest draw survives in rows where every item would drop.
        real_draws = tf.where(real, draws, -tf.ones_like(draws))
        best = tf.logical_and(
            real, tf.equal(real_draws, tf.reduce_max(real_draws, axis=-1, keepdims=True)))
        emptied = tf.logical_not(tf.reduce_any(keep, axis=-1, keepdims=True))
        keep = tf.logical_or(keep, tf.logical_and(emptied, best))
        replacement = pad if self.replacement_id is None else tf.cast(self.replacement_id,
                                                                      ids.dtype)
        return tf.where(tf.logical_or(keep, tf.logical_not(real)), ids,
                        tf.fill(tf.shape(ids), replacement))

    def call(self, inputs, training=None):
        if self.rate == 0.0:
            return inputs
        return keras.backend.in_train_phase(lambda: self._drop(inputs), inputs, training=training)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_prunable_weights(self) -> list:
        return []

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(rate=self.rate, pad_id=self.pad_id, seed=self.seed,
                      replacement_id=self.replacement_id)
        return config
