"""The attention base class every tfrec_attn attention variant derives from."""

from tfrec_attn._keras import keras, tf
from tfrec_attn.layers import masking
from tfrec_attn.layers.utils import (
    build_sublayer,
    check_rank,
    clone_initializer,
    expand_axes,
    prunable_kernels,
)
from tfrec_attn.registry import register
from tfrec_attn.validation import (
    check_bool,
    check_optional_positive_int,
    check_positive_int,
    check_rate,
)

_INPUT_NAMES = ("query", "value", "key")


def _input_shapes(input_shape) -> list[tf.TensorShape]:
    """The query's, value's and key's shapes from one shape or a list / tuple of them (as
    `call` takes the inputs): `[(2, 3, 8), (2, 5, 8)]` and `((2, 3, 8), (2, 5, 8))` are two
    shapes, `(2, 3, 8)` one."""
    if isinstance(input_shape, list | tuple) and input_shape and isinstance(
            input_shape[0], list | tuple | tf.TensorShape):
        return [tf.TensorShape(s) for s in input_shape]
    return [tf.TensorShape(input_shape)]


def _split_inputs(inputs):
    """`query` | `[query, value]` | `[query, value, key]` -> (query, value, key)."""
    if isinstance(inputs, list | tuple):
        if not 1 <= len(inputs) <= 3:
            raise ValueError(
                f"Attention inputs must be query, [query, value] or [query, value, key]. "
                f"Received {len(inputs)} tensors."
            )
        query = inputs[0]
        value = inputs[1] if len(inputs) > 1 else query
        key = inputs[2] if len(inputs) > 2 else value
        return query, value, key
    return inputs, inputs, inputs


def _check_value_and_key(owner: str, query, value, key) -> None:
    """Static shapes: the key has one row per value (its batch and length are the value's),
    and the query's batch is theirs; otherwise a `ValueError` naming both shapes instead of a
    matmul's."""
    for name, other, axes in (("key", key, (0, 1)), ("query", query, (0,))):
        for axis in axes:
            a, b = value.shape[axis], other.shape[axis]
            if a is not None and b is not None and a != b:
                what = "batch size" if axis == 0 else "length"
                raise ValueError(f"{owner}: the {name}'s {what} must equal the value's. "
                                 f"Received: value shape {tuple(value.shape)}, {name} shape "
                                 f"{tuple(other.shape)}")


def _split_masks(mask, self_attention: bool):
    """A single mask or `[query_mask, value_mask(, key_mask)]` -> (query_mask, value_mask)."""
    if mask is None:
        return None, None
    if isinstance(mask, list | tuple):
        query_mask = mask[0]
        value_mask = mask[1] if len(mask) > 1 else (query_mask if self_attention else None)
        return query_mask, value_mask
    return mask, (mask if self_attention else None)


@register()
class BaseAttention(keras.layers.Layer):
    """Multi-head attention with hooks: subclasses override `_compute_scores` / `_apply_scores`.

    Projections are `Dense` layers and heads are split with reshape/transpose, so TFMOT can prune
    and quantize every kernel and TFLite lowers it to builtin ops.

    Args:
        num_heads: int. Number of heads. Defaults to `1`.
        key_dim: int or None. Size of each query/key head; defaults to `query_dim // num_heads`.
        value_dim: int or None. Size of each value head; defaults to `key_dim`.
        output_dim: int or None. Output size; defaults to the query's last dimension.
        use_projections: bool. If False, attends over the raw inputs (one head, no weights).
        dropout: float. Dropout on the attention weights.
        use_bias: bool. Whether projections use biases.
        causal: bool. Query `i` sees only keys `j <= i` (end-aligned).
        kernel_initializer / bias_initializer: initializers for the projections.

    Call arguments:
        inputs: query `(batch, T, dim)`, or `[query, value]`, or `[query, value, key]`.
        mask: boolean padding mask `(batch, T)` (self-attention) or `[query_mask, value_mask]`.
        training: bool, for dropout.
        return_attention_scores: bool. Also return the `(batch, heads, T, S)` weights.
        attention_mask: optional boolean `(batch, T, S)` mask, merged with the others.

    Returns:
        `(batch, T, output_dim)`, and the attention weights when asked.
    """

    def __init__(
        self,
        num_heads: int = 1,
        key_dim: int | None = None,
        value_dim: int | None = None,
        output_dim: int | None = None,
        use_projections: bool = True,
        dropout: float = 0.0,
        use_bias: bool = True,
        causal: bool = False,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int("num_heads", num_heads)
        for name, value in (("key_dim", key_dim), ("value_dim", value_dim),
                            ("output_dim", output_dim)):
            check_optional_positive_int(name, value)
        check_rate("dropout", dropout)
        for name, flag in (("use_projections", use_projections), ("use_bias", use_bias),
                           ("causal", causal)):
            check_bool(name, flag)
        if not use_projections and num_heads != 1:
            raise ValueError(
                f"use_projections=False supports one head only. Received: num_heads={num_heads}"
            )
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.value_dim = value_dim
        self.output_dim = output_dim
        self.use_projections = use_projections
        self.dropout = dropout
        self.use_bias = use_bias
        self.causal = causal
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.supports_masking = True

    # -- building ---------------------------------------------------------------------------
    def _dense(self, units: int, name: str, input_dim: int) -> keras.layers.Dense:
        layer = keras.layers.Dense(
            units,
            use_bias=self.use_bias,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            dtype=self.dtype_policy,
            name=name,
        )
        build_sublayer(layer, (None, None, input_dim))
        return layer

    def build(self, input_shape):
        shapes = _input_shapes(input_shape)
        self._check_ranks(shapes)
        query_dim = shapes[0][-1]
        value_dim_in = shapes[1][-1] if len(shapes) > 1 else query_dim
        key_dim_in = shapes[2][-1] if len(shapes) > 2 else value_dim_in
        self._query_dim = query_dim
        self._head_key_dim = self.key_dim or max(query_dim // self.num_heads, 1)
        self._head_value_dim = self.value_dim or self._head_key_dim
        if self.use_projections:
            heads = self.num_heads
            self.query_dense = self._dense(heads * self._head_key_dim, "query", query_dim)
            self.key_dense = self._dense(heads * self._head_key_dim, "key", key_dim_in)
            self.value_dense = self._dense(heads * self._head_value_dim, "value", value_dim_in)
            self.output_dense = self._dense(
                self.output_dim or query_dim, "attention_output", heads * self._head_value_dim
            )
        else:
            if None not in (query_dim, key_dim_in) and query_dim != key_dim_in:
                raise ValueError(
                    f"{type(self).__name__} attends over the raw inputs (no projections): query "
                    f"and key last dimensions must match. Received: query dim {query_dim}, key "
                    f"dim {key_dim_in}")
            self._head_key_dim = query_dim
            self._head_value_dim = value_dim_in
        self._dropout_layer = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)
        self.build_scores(shapes)
        super().build(input_shape)

    def build_scores(self, shapes) -> None:
        """Hook: create weights `_compute_scores` needs (e.g. additive attention's vector)."""

    # -- the hooks -------------------------------------------------------------------------
    def _compute_scores(self, query: tf.Tensor, key: tf.Tensor) -> tf.Tensor:
        """Attention logits `(batch, heads, T, S)` from `(batch, heads, T|S, key_dim)` heads."""
        scale = tf.cast(1.0 / float(self._head_key_dim) ** 0.5, query.dtype)
        return tf.matmul(query * scale, key, transpose_b=True)

    def _apply_scores(self, scores, value, mask, training):
        """Masked softmax, dropout, weighted sum -> (`(batch, heads, T, value_dim)`, weights)."""
        weights = masking.masked_softmax(scores, mask)
        dropped = self._dropout_layer(tf.cast(weights, value.dtype), training=training)
        return tf.matmul(dropped, value), weights

    def _attend(self, q, k, v, query_mask, value_mask, attention_mask, training,
                return_weights: bool):
        """Hook: `(heads (batch, heads, T, value_dim), weights)` from projected heads and masks.

        The default merges the masks into one dense `(batch, 1, T, S)` mask and runs
        `_compute_scores` / `_apply_scores`. Variants that must never form a `T x S` tensor
        (local, linear, low-rank attention) override this instead, and build the weights only
        when `return_weights` is True (returning `None` otherwise).
        """
        combined = masking.merge_masks(
            query_mask, value_mask, attention_mask, self.causal, tf.shape(q)[2], tf.shape(k)[2]
        )
        scores = self._compute_scores(q, k)
        return self._apply_scores(scores, v, combined, training)

    # -- call --------------------------------------------------------------------------------
    def _check_ranks(self, shapes) -> None:
        """query / value / key must be `(batch, length, dim)`: `_split_heads` would otherwise
        fold extra axes into the batch."""
        for name, shape in zip(_INPUT_NAMES, shapes, strict=False):
            check_rank(self, name, shape)

    def _check_masks(self, query, key, mask, attention_mask) -> None:
        """Static shapes of the masks against the inputs', before any mask is combined."""
        owner = type(self).__name__
        query_shape, key_shape = query.shape[:2], key.shape[:2]
        if isinstance(mask, list | tuple):
            for name, m, expected, layout in (("mask[0]", mask[0], query_shape, "(batch, T)"),
                                              ("mask[1]", mask[1] if len(mask) > 1 else None,
                                               key_shape, "(batch, S)")):
                masking.check_mask_shape(owner, name, m, expected, layout)
        else:
            masking.check_mask_shape(owner, "mask", mask, query_shape, "(batch, T)")
        masking.check_mask_shape(owner, "attention_mask", attention_mask,
                                 query_shape.concatenate(key.shape[1:2]), "(batch, T, S)")

    def _split_heads(self, x: tf.Tensor, head_dim: int) -> tf.Tensor:
        length = tf.shape(x)[1]
        x = tf.reshape(x, [-1, length, self.num_heads, head_dim])
        return tf.transpose(x, [0, 2, 1, 3])

    def _merge_heads(self, x: tf.Tensor) -> tf.Tensor:
        length = tf.shape(x)[2]
        x = tf.transpose(x, [0, 2, 1, 3])
        return tf.reshape(x, [-1, length, self.num_heads * self._head_value_dim])

    def _project(self, query, value, key):
        if not self.use_projections:
            return expand_axes(query, 1), expand_axes(key, 1), expand_axes(value, 1)
        q = self._split_heads(self.query_dense(query), self._head_key_dim)
        k = self._split_heads(self.key_dense(key), self._head_key_dim)
        v = self._split_heads(self.value_dense(value), self._head_value_dim)
        return q, k, v

    def call(self, inputs, mask=None, training=None, return_attention_scores=False,
             attention_mask=None):
        query, value, key = _split_inputs(inputs)
        self._check_ranks([x.shape for x in (inputs if isinstance(inputs, list | tuple)
                                             else [inputs])])
        _check_value_and_key(type(self).__name__, query, value, key)
        self._check_masks(query, key, mask, attention_mask)
        self_attention = not isinstance(inputs, list | tuple) or len(inputs) == 1
        query_mask, value_mask = _split_masks(mask, self_attention)
        q, k, v = self._project(query, value, key)
        heads, weights = self._attend(q, k, v, query_mask, value_mask, attention_mask, training,
                                      return_attention_scores)
        if self.use_projections:
            outputs = self.output_dense(self._merge_heads(heads))
        else:
            outputs = heads[:, 0]
        outputs = masking.apply_sequence_mask(outputs, query_mask)
        if return_attention_scores:
            return outputs, weights
        return outputs

    def compute_mask(self, inputs, mask=None):
        query_mask, _ = _split_masks(mask, True)
        return query_mask

    def compute_output_shape(self, input_shape):
        shapes = _input_shapes(input_shape)
        query_shape = shapes[0]
        if self.use_projections:
            last = self.output_dim or query_shape[-1]
        else:
            last = shapes[min(1, len(shapes) - 1)][-1]
        return query_shape[:-1].concatenate([last])

    def get_prunable_weights(self) -> list:
        return prunable_kernels(self)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            key_dim=self.key_dim,
            value_dim=self.value_dim,
            output_dim=self.output_dim,
            use_projections=self.use_projections,
            dropout=self.dropout,
            use_bias=self.use_bias,
            causal=self.causal,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
        )
        return config
