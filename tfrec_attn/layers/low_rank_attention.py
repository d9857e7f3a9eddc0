"""Linformer-style low-rank attention: keys and values projected along the sequence axis."""

import numpy as np

from tfrec_attn._keras import tf
from tfrec_attn.layers import masking
from tfrec_attn.layers.base_attention import BaseAttention
from tfrec_attn.layers.local_attention import band_selection
from tfrec_attn.layers.prefix_sum import exclusive_prefix_sum
from tfrec_attn.layers.utils import clone_initializer, expand_axes
from tfrec_attn.registry import register
from tfrec_attn.validation import check_optional_positive_int


@register()
class LowRankAttention(BaseAttention):
    """Linformer attention (Wang et al. 2020): `softmax(q (E^T k)^T) (F^T v)`, `O(L * r)`.

    Learned `E`, `F` of shape `(max_length, projection_length)` project the `S` keys and values
    to `r = projection_length` summaries. Padded keys/values are zeroed before projecting, so
    padded content cannot leak. A length `S < max_length` uses the last `S` rows of `E`/`F`
    (right-aligned, like left-padded histories); `S > max_length` raises a `ValueError` (eager
    or static shapes; in a graph with a dynamic length, the projection's matmul fails).

    A projection mixes every position, so plain Linformer cannot be causal. With `causal=True`
    the layer runs a blockwise form instead: the sequence is split (right-aligned) into blocks
    of `block_size`; each query attends exactly and causally inside its block, plus to the `r`
    low-rank summaries (`E`/`F` projections) of all strictly earlier blocks (prefix sums of
    per-block projections): `O(L * (block_size + r))`.

    Attention weights: non-causal, over the projected keys, `(batch, heads, T, r)`; causal,
    `(batch, heads, T, S + r)`: weights on the exact keys of the query's block, then on the
    `r` summaries. An explicit `attention_mask` is not supported (a per-key mask cannot be
    applied to keys summed together); use `LocalAttention` or `LinearAttention` for that.
    Converts to TFLite builtins.

    Args:
        num_heads: int. Number of heads. Defaults to `1`.
        max_length: int. The longest sequence (rows of `E`/`F`). Required.
        projection_length: int. Summaries `r`. Defaults to `32`.
        block_size: int or None. Block length of the causal form; defaults to
            `2 * projection_length` (fewer, larger matmuls than blocks of `r`: ~15% faster at
            L=2048 on CPU, and more of each query's attention is exact).
        **kwargs: the other `BaseAttention` arguments (key_dim, dropout, causal, initializers...).

    Call arguments:
        inputs: query `(batch, T, dim)`, `[query, value]` or `[query, value, key]`
            (`S <= max_length`; causal needs `T == S`).
        mask: boolean padding mask `(batch, T)` or `[query_mask, value_mask]`.
        training: bool, for dropout.
        return_attention_scores: bool. Also return the weights described above.
        attention_mask: not supported (must be `None`).

    Returns:
        `(batch, T, output_dim)`, and the weights when asked.

    Example:
    >>> from tfrec_attn._keras import tf
    >>> layer = LowRankAttention(max_length=10, projection_length=4)
    >>> out, w = layer(tf.ones((2, 6, 8)), return_attention_scores=True)
    >>> out.shape, w.shape
    (TensorShape([2, 6, 8]), TensorShape([2, 1, 6, 4]))
    """

    def __init__(self, num_heads: int = 1, max_length: int | None = None,
                 projection_length: int = 32, block_size: int | None = None, **kwargs):
        kwargs.pop("use_projections", None)
        for name, value in (("max_length", max_length),
                            ("projection_length", projection_length)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive int. Received: {name}={value!r}")
        check_optional_positive_int("block_size", block_size)
        super().__init__(num_heads=num_heads, use_projections=True, **kwargs)
        self.max_length = max_length
        self.projection_length = projection_length
        self.block_size = block_size

    def build_scores(self, shapes) -> None:
        shape = (self.max_length, self.projection_length)
        self.key_projection = self.add_weight(
            name="key_projection", shape=shape,
            initializer=clone_initializer(self.kernel_initializer))
        self.value_projection = self.add_weight(
            name="value_projection", shape=shape,
            initializer=clone_initializer(self.kernel_initializer))

    def _projections(self, length, dtype):
        """The last `length` rows of `E` and `F` (right-aligned), in `dtype`."""
        start = self.max_length - length
        return (tf.cast(self.key_projection[start:], dtype),
                tf.cast(self.value_projection[start:], dtype))

    def _attend(self, q, k, v, query_mask, value_mask, attention_mask, training,
                return_weights: bool):
        if attention_mask is not None:
            raise ValueError(
                "LowRankAttention does not support attention_mask: its keys are summed along "
                "the sequence, so a per-key mask cannot be applied. Use LocalAttention or "
                "LinearAttention.")
        if k.shape[2] is not None and k.shape[2] > self.max_length:
            raise ValueError(
                f"The key length ({k.shape[2]}) exceeds max_length ({self.max_length}). "
                "Build LowRankAttention with a larger max_length.")
        if value_mask is not None:
            valid = expand_axes(tf.cast(value_mask, tf.bool), 1, 3)
            k = tf.where(valid, k, tf.zeros_like(k))
            v = tf.where(valid, v, tf.zeros_like(v))
        if self.causal:
            return self._causal_blocks(q, k, v, query_mask, value_mask, training, return_weights)
        e, f = self._projections(tf.shape(k)[2], k.dtype)
        keys = tf.matmul(expand_axes(e, 0, 0), k, transpose_a=True)  # (B, H, r, d)
        values = tf.matmul(expand_axes(f, 0, 0), v, transpose_a=True)
        keep = None if query_mask is None else expand_axes(tf.cast(query_mask, tf.bool), 1, 3)
        if value_mask is not None:  # a row without a valid key: zero weight on its summaries
            any_key = expand_axes(tf.reduce_any(tf.cast(value_mask, tf.bool), axis=-1), 1, 2, 3)
            keep = any_key if keep is None else tf.logical_and(keep, any_key)
        heads, weights = self._apply_scores(self._compute_scores(q, keys), values, keep, training)
        return heads, weights

    def _causal_blocks(self, q, k, v, query_mask, value_mask, training, return_weights):
        if q.shape[2] is not None and k.shape[2] is not None and q.shape[2] != k.shape[2]:
            raise ValueError("Causal LowRankAttention is self-attention: query and key lengths "
                             f"must be equal. Received T={q.shape[2]}, S={k.shape[2]}.")
        size = self.block_size or 2 * self.projection_length
        r = self.projection_length
        batch, heads, length = tf.shape(q)[0], tf.shape(q)[1], tf.shape(q)[2]
        num_blocks = (length + size - 1) // size
        padded = num_blocks * size
        pad = padded - length  # on the left: blocks end at the most recent item

        def blocks(x):
            x = tf.pad(x, [[0, 0]] * (x.shape.rank - 2) + [[pad, 0], [0, 0]])
            shape = tf.concat([tf.shape(x)[:-2], [num_blocks, size, tf.shape(x)[-1]]], 0)
            return tf.reshape(x, shape)

        e, f = self._projections(length, k.dtype)
        e_blocks, f_blocks = blocks(e), blocks(f)  # (nb, size, r), padded rows are zero
        k_blocks, v_blocks, q_blocks = blocks(k), blocks(v), blocks(q)  # (B, H, nb, size, d)
        # Summaries of every strictly earlier block: exclusive prefix sums of block projections.
        keys = exclusive_prefix_sum(tf.matmul(e_blocks, k_blocks, transpose_a=True), axis=2)
        values = exclusive_prefix_sum(tf.matmul(f_blocks, v_blocks, transpose_a=True), axis=2)
        ones = tf.ones([batch, length, 1], tf.float32)
        k_valid = blocks(ones if value_mask is None
                         else expand_axes(tf.cast(value_mask, tf.float32), 2))
        q_valid = blocks(ones if query_mask is None
                         else expand_axes(tf.cast(query_mask, tf.float32), 2))
        earlier = tf.cumsum(tf.reduce_max(k_valid, axis=[2, 3]), axis=1, exclusive=True) > 0.5
        inner_keep = tf.logical_and(tf.constant(np.tril(np.ones((size, size), bool))),
                                    tf.transpose(k_valid, [0, 1, 3, 2]) > 0.5)  # (B, nb, s, s)
        summary_keep = tf.tile(expand_axes(earlier, 2, 3), [1, 1, size, r])
        keep = tf.logical_and(tf.concat([inner_keep, summary_keep], axis=-1), q_valid > 0.5)
        logits = tf.concat([self._compute_scores(q_blocks, k_blocks),
                            self._compute_scores(q_blocks, keys)], axis=-1)
        weights = masking.masked_softmax(logits, expand_axes(keep, 1))
        dropped = tf.cast(self._dropout_layer(weights, training=training), v.dtype)
        out = tf.matmul(dropped[..., :size], v_blocks) + tf.matmul(dropped[..., size:], values)
        out = tf.reshape(out, [batch, heads, padded, -1])[:, :, pad:]
        if not return_weights:
            return out, None
        exact = tf.matmul(weights[..., :size], band_selection(num_blocks, size, 1, 0, padded))
        exact = tf.reshape(exact, [batch, heads, padded, padded])[:, :, pad:, pad:]
        summaries = tf.reshape(weights[..., size:], [batch, heads, padded, r])[:, :, pad:]
        return out, tf.concat([exact, summaries], axis=-1)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(max_length=self.max_length, projection_length=self.projection_length,
                      block_size=self.block_size)
        return config
