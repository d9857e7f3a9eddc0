"""Attention fusion of several modality embeddings (id, text, image...) into one vector."""

from tfrec_attn._keras import keras, tf
from tfrec_attn.layers.multi_head_attention import MultiHeadAttention
from tfrec_attn.layers.utils import (
    build_sublayer,
    clone_initializer,
    expand_axes,
    prunable_kernels,
)
from tfrec_attn.registry import register
from tfrec_attn.validation import (
    check_bool,
    check_choice,
    check_optional_positive_int,
    check_positive_int,
    check_rate,
)

QUERIES = ("learned", "first")


def _as_shapes(input_shape) -> list:
    if not isinstance(input_shape, list | tuple) or not input_shape or not isinstance(
            input_shape[0], list | tuple | tf.TensorShape):
        raise ValueError("MultimodalFusion inputs must be a list of modality tensors "
                         f"(batch, d_m) or (batch, T, d_m). Received shape {input_shape}")
    return [tf.TensorShape(s) for s in input_shape]


@register()
class MultimodalFusion(keras.layers.Layer):
    """Fuses M modality embeddings of an item or user with multi-head attention.

    Each modality `m` (width `d_m`) is projected to `dim` by its own `Dense`; a query (a
    learned vector, or the projected first modality) attends over the M projected modality
    tokens with `MultiHeadAttention` (whose output projection gives the fused vector). Missing
    modalities (a masked entry, e.g. an item without an image) get exactly zero weight, and
    with the learned query a row without any modality outputs zeros (`query="first"` always
    keeps the first modality: it is the query). Sequences `(batch, T, d_m)` are fused position by
    position (the time axis is folded into the batch). The modality count and widths come from
    `build`. Dense/matmul/reshape only: prunable, quantizable, TFLite builtins.

    Args:
        dim: int or None. Fused width; defaults to the first modality's width.
        num_heads: int. Attention heads. Defaults to `1`.
        query: `"learned"` (a trained query vector, the modalities compete symmetrically) or
            `"first"` (the first modality, e.g. the id embedding, asks what to add from the
            others; it must always be present, so its mask column is ignored).
        key_dim: int or None. Per-head query/key size; defaults to `dim // num_heads`.
        dropout: float. Dropout on the attention weights.
        use_bias: bool. Biases of the projections.
        kernel_initializer / bias_initializer: initializers of the projections (the kernel one
            also for the learned query).

    Call arguments:
        inputs: list of M tensors `(batch, d_m)`, or M sequences `(batch, T, d_m)` (same T).
        mask: which modalities are present: boolean `(batch, M)` (for sequences also
            `(batch, T, M)`), or Keras' per-input list of M masks (`(batch,)` / `(batch, T)` or
            `None` for always present).
        training: bool, for dropout.
        return_attention_scores: bool. Also return float32 weights over the modalities:
            `(batch, heads, 1, M)` for vectors, `(batch, T, heads, M)` for sequences.

    Returns:
        `(batch, dim)` or `(batch, T, dim)`, and the weights when asked.

    Example:
    >>> from tfrec_attn._keras import tf
    >>> fusion = MultimodalFusion(dim=8, num_heads=2)
    >>> ids, text, image = tf.ones((3, 8)), tf.ones((3, 16)), tf.ones((3, 4))
    >>> present = tf.constant([[True, True, True], [True, True, False], [True, False, False]])
    >>> fused, weights = fusion([ids, text, image], mask=present, return_attention_scores=True)
    >>> fused.shape, weights.shape, weights.numpy()[2, :, 0].round(3).tolist()
    (TensorShape([3, 8]), TensorShape([3, 2, 1, 3]), [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    """

    def __init__(self, dim: int | None = None, num_heads: int = 1, query: str = "learned",
                 key_dim: int | None = None, dropout: float = 0.0, use_bias: bool = True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        check_optional_positive_int("dim", dim)
        check_positive_int("num_heads", num_heads)
        check_optional_positive_int("key_dim", key_dim)
        check_choice("query", query, QUERIES)
        check_rate("dropout", dropout)
        check_bool("use_bias", use_bias)
        self.dim = dim
        self.num_heads = num_heads
        self.query = query
        self.key_dim = key_dim
        self.dropout = dropout
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.supports_masking = True

    def build(self, input_shape):
        shapes = _as_shapes(input_shape)
        ranks = {s.rank for s in shapes}
        if len(ranks) != 1 or ranks.pop() not in (2, 3):
            raise ValueError("MultimodalFusion inputs must all be (batch, d_m) or all "
                             f"(batch, T, d_m). Received shapes {shapes}")
        lengths = {s[1] for s in shapes if s.rank == 3 and s[1] is not None}
        if len(lengths) > 1:
            raise ValueError(f"MultimodalFusion sequences must share T. Received shapes {shapes}")
        self._num_modalities = len(shapes)
        self._sequence = shapes[0].rank == 3
        self._dim = self.dim or shapes[0][-1]
        for i, shape in enumerate(shapes):
            projection = keras.layers.Dense(
                self._dim, use_bias=self.use_bias, dtype=self.dtype_policy,
                kernel_initializer=clone_initializer(self.kernel_initializer),
                bias_initializer=clone_initializer(self.bias_initializer), name=f"projection_{i}")
            build_sublayer(projection, (None, shape[-1]))
            setattr(self, f"projection_{i}", projection)  # a path QAT configs can address
        if self.query == "learned":
            self.learned_query = self.add_weight(
                name="learned_query", shape=(1, self._dim),
                initializer=clone_initializer(self.kernel_initializer))
        self.attention = MultiHeadAttention(
            num_heads=self.num_heads, key_dim=self.key_dim, dropout=self.dropout,
            use_bias=self.use_bias, kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer), dtype=self.dtype_policy,
            name="attention")
        build_sublayer(self.attention, [tf.TensorShape([None, 1, self._dim]),
                                        tf.TensorShape([None, self._num_modalities, self._dim])])
        super().build(input_shape)

    def _modality_mask(self, mask, reference: tf.Tensor):
        """Boolean `(batch, [T,] M)` presence, or None; `reference` is `(batch, [T,] any)`."""
        if mask is None:
            return None
        if isinstance(mask, list | tuple):
            if len(mask) != self._num_modalities:
                raise ValueError(f"mask must hold one entry per modality ({self._num_modalities})."
                                 f" Received {len(mask)}")
            if all(m is None for m in mask):
                return None
            present = tf.ones_like(reference[..., 0], tf.bool)
            mask = tf.stack([present if m is None else tf.cast(m, tf.bool) for m in mask], -1)
        mask = tf.cast(mask, tf.bool)
        if mask.shape[-1] is not None and mask.shape[-1] != self._num_modalities:
            raise ValueError(f"mask must be (batch, {self._num_modalities}) (one column per "
                             f"modality). Received shape {mask.shape}")
        if self._sequence and mask.shape.rank == 2:
            target = tf.concat([tf.shape(reference)[:-1], [self._num_modalities]], 0)
            mask = tf.broadcast_to(expand_axes(mask, 1), target)
        return mask

    def call(self, inputs, mask=None, training=None, return_attention_scores=False):
        inputs = list(inputs) if isinstance(inputs, list | tuple) else [inputs]
        if len(inputs) != self._num_modalities:
            raise ValueError(f"MultimodalFusion was built for {self._num_modalities} modalities. "
                             f"Received {len(inputs)} inputs")
        tokens = [getattr(self, f"projection_{i}")(x) for i, x in enumerate(inputs)]
        stacked = tf.stack(tokens, axis=-2)  # (batch, [T,] M, dim)
        present = self._modality_mask(mask, stacked[..., 0, :])
        tokens = tf.reshape(stacked, [-1, self._num_modalities, self._dim])
        if present is not None:
            present = tf.reshape(present, [-1, self._num_modalities])
        if self.query == "first":
            query = tokens[:, :1]
            if present is not None:  # the query modality is the anchor: always present
                present = tf.concat([tf.ones_like(present[:, :1]), present[:, 1:]], axis=1)
        else:
            query = tf.cast(self.learned_query, tokens.dtype)[None] + tf.zeros_like(tokens[:, :1])
        masks = None if present is None else [tf.reduce_any(present, -1, keepdims=True), present]
        fused, weights = self.attention([query, tokens], mask=masks, training=training,
                                        return_attention_scores=True)
        if self._sequence:
            leading = tf.shape(stacked)[:2]
            fused = tf.reshape(fused, tf.concat([leading, [self._dim]], 0))
            weights = tf.reshape(weights, tf.concat(
                [leading, [self.num_heads, self._num_modalities]], 0))
        else:
            fused = fused[:, 0]
        return (fused, weights) if return_attention_scores else fused

    def compute_mask(self, inputs, mask=None):
        """Sequences: a position is real if any modality is present there; vectors: None."""
        inputs = list(inputs) if isinstance(inputs, list | tuple) else [inputs]
        if mask is None or inputs[0].shape.rank != 3:
            return None
        present = self._modality_mask(mask, inputs[0])
        return None if present is None else tf.reduce_any(present, axis=-1)

    def compute_output_shape(self, input_shape):
        shapes = _as_shapes(input_shape)
        return shapes[0][:-1].concatenate([self.dim or shapes[0][-1]])

    def get_prunable_weights(self) -> list:
        return prunable_kernels(self)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            dim=self.dim,
            num_heads=self.num_heads,
            query=self.query,
            key_dim=self.key_dim,
            dropout=self.dropout,
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
        )
        return config
