"""Sliding-window (local) attention with optional global positions, computed blockwise."""

import numpy as np

from tfrec_attn._keras import tf
from tfrec_attn.layers import masking
from tfrec_attn.layers.base_attention import BaseAttention
from tfrec_attn.layers.utils import expand_axes
from tfrec_attn.registry import register


def _pad_left(x: tf.Tensor, amount, axis: int) -> tf.Tensor:
    paddings = [[0, 0]] * x.shape.rank
    paddings[axis] = [amount, 0]
    return tf.pad(x, paddings)


def band_selection(num_blocks, block: int, span: int, first_offset: int, length) -> tf.Tensor:
    """`(num_blocks, span * block, length)` one-hot: block `b`'s column `c` -> position
    `(b + first_offset) * block + c` (all-zero when outside `[0, length)`).

    Used only to scatter block weights into a dense matrix (or gather a dense mask's band).
    """
    starts = (tf.range(num_blocks) + first_offset) * block
    positions = expand_axes(starts, 1) + expand_axes(tf.range(span * block), 0)
    return tf.one_hot(positions, length, dtype=tf.float32)


@register()
class LocalAttention(BaseAttention):
    """Sliding-window attention: each query sees the keys within `window` positions.

    Non-causal, query `i` sees keys `|i - j| <= window`; causal, keys `i - window <= j <= i`.
    The last `num_global` positions are global (histories are left-padded, so they are the
    most recent items, the ones a recommender reads its prediction from): every query also sees
    them (causal: only those not in its future) and they see every key (causal: the past).

    Cost is `O(L * window)` time and memory: the sequence is padded (on the left) to a multiple
    of `window` and split into blocks of `window` queries; each block attends to itself and its
    neighbour blocks (causal: the previous one) and is masked to the exact band. The dense
    `(batch, heads, T, S)` weights are scattered only when `return_attention_scores=True`.
    Self-attention only (`T == S`, e.g. `[query, value]` of equal lengths). An explicit
    `attention_mask` is honoured (its band is gathered; it is `O(T * S)` already).
    Converts to TFLite builtins.

    Args:
        num_heads: int. Number of heads. Defaults to `1`.
        window: int. Positions each query sees on each side (causal: before it). Defaults
            to `16`.
        num_global: int. Number of most recent (last) positions that attend and are attended
            globally. Defaults to `0`.
        **kwargs: the other `BaseAttention` arguments (key_dim, dropout, causal, initializers...).

    Call arguments:
        inputs: query `(batch, T, dim)`, or `[query, value]` / `[query, value, key]` with
            `S == T`.
        mask: boolean padding mask `(batch, T)` or `[query_mask, value_mask]`.
        training: bool, for dropout.
        return_attention_scores: bool. Also return dense `(batch, heads, T, S)` weights
            (exactly 0 outside the band and the global rows/columns).
        attention_mask: optional boolean `(batch, T, S)`.

    Returns:
        `(batch, T, output_dim)`, and the weights when asked.

    Example:
    >>> from tfrec_attn._keras import tf
    >>> layer = LocalAttention(window=2, causal=True)
    >>> out, w = layer(tf.ones((2, 8, 4)), return_attention_scores=True)
    >>> out.shape, w.shape
    (TensorShape([2, 8, 4]), TensorShape([2, 1, 8, 8]))
    >>> (w.numpy()[0, 0, 7] > 0).astype(int).tolist()  # the last query sees 2 back + itself
    [0, 0, 0, 0, 0, 1, 1, 1]
    """

    def __init__(self, num_heads: int = 1, window: int = 16, num_global: int = 0, **kwargs):
        kwargs.pop("use_projections", None)
        if not isinstance(window, int) or isinstance(window, bool) or window <= 0:
            raise ValueError(f"window must be a positive int. Received: window={window!r}")
        if not isinstance(num_global, int) or isinstance(num_global, bool) or num_global < 0:
            raise ValueError(
                f"num_global must be a non-negative int. Received: num_global={num_global!r}")
        super().__init__(num_heads=num_heads, use_projections=True, **kwargs)
        self.window = window
        self.num_global = num_global

    # -- masks ---------------------------------------------------------------------------------
    def _band(self) -> np.ndarray:
        """Boolean `(window, span * window)`: query offset `r` sees block column `c`."""
        w = self.window
        span = 2 if self.causal else 3
        rel = np.arange(span * w)[None, :] - w - np.arange(w)[:, None]  # key - query
        upper = 0 if self.causal else w
        return (rel >= -w) & (rel <= upper)

    def _global_key_mask(self, length, num_global) -> tf.Tensor:
        """`(L, G)`: query `i` may use global key `j` (not already in its band, not future)."""
        rows = expand_axes(tf.range(length), 1)
        cols = expand_axes(length - num_global + tf.range(num_global), 0)
        rel = cols - rows
        in_band = tf.logical_and(rel >= -self.window, rel <= (0 if self.causal else self.window))
        keep = tf.logical_not(in_band)
        if self.causal:
            keep = tf.logical_and(keep, rel <= 0)
        return keep

    # -- attention -----------------------------------------------------------------------------
    def _attend(self, q, k, v, query_mask, value_mask, attention_mask, training,
                return_weights: bool):
        if q.shape[2] is not None and k.shape[2] is not None and q.shape[2] != k.shape[2]:
            raise ValueError(
                "LocalAttention is self-attention: query and key lengths must be equal. "
                f"Received T={q.shape[2]}, S={k.shape[2]}.")
        w = self.window
        span = 2 if self.causal else 3
        batch, heads, length = tf.shape(q)[0], tf.shape(q)[1], tf.shape(q)[2]
        num_blocks = (length + w - 1) // w
        padded = num_blocks * w
        pad = padded - length
        ones = tf.ones([batch, length], tf.float32)
        q_valid = ones if query_mask is None else tf.cast(query_mask, tf.float32)
        k_valid = ones if value_mask is None else tf.cast(value_mask, tf.float32)
        q, k, v = (_pad_left(x, pad, 2) for x in (q, k, v))
        q_valid, k_valid = _pad_left(q_valid, pad, 1), _pad_left(k_valid, pad, 1)
        dense_mask = None
        if attention_mask is not None:
            dense_mask = _pad_left(_pad_left(tf.cast(attention_mask, tf.float32), pad, 1), pad, 2)

        def blocks(x, extra):  # (B, H?, Lp, ...) -> neighbourhood (B, H?, nb, span*w, ...)
            axis = 2 if extra else 1
            paddings = [[0, 0]] * x.shape.rank
            paddings[axis] = [w, w]
            x = tf.pad(x, paddings)
            shape = tf.concat([tf.shape(x)[:axis], [num_blocks + 2, w], tf.shape(x)[axis + 1:]], 0)
            x = tf.reshape(x, shape)
            parts = [x[:, :, i:num_blocks + i] if extra else x[:, i:num_blocks + i]
                     for i in range(span)]
            return tf.concat(parts, axis=axis + 1)

        q_blocks = tf.reshape(q, [batch, heads, num_blocks, w, -1])
        logits = self._compute_scores(q_blocks, blocks(k, True))  # (B, H, nb, w, span*w)
        keep = tf.logical_and(tf.constant(self._band()[None, None]),
                              expand_axes(blocks(k_valid, False), 2) > 0.5)
        keep = tf.logical_and(keep, tf.reshape(q_valid, [batch, num_blocks, w, 1]) > 0.5)
        selection = None
        if dense_mask is not None or return_weights:
            selection = band_selection(num_blocks, w, span, -1, padded)
        if dense_mask is not None:
            rows = tf.reshape(dense_mask, [batch, num_blocks, w, padded])
            band = tf.matmul(rows, selection, transpose_b=True) > 0.5
            keep = tf.logical_and(keep, band)
        keep = expand_axes(keep, 1)  # (B, 1, nb, w, span*w)
        values = blocks(v, True)
        local_width = span * w
        g = self.num_global
        if g:
            k_global, v_global = k[:, :, -g:], v[:, :, -g:]
            num_global = tf.shape(k_global)[2]
            g_logits = tf.reshape(self._compute_scores(q, k_global),
                                  [batch, heads, num_blocks, w, num_global])
            g_keep = expand_axes(self._global_key_mask(padded, num_global), 0)
            g_keep = tf.logical_and(g_keep, expand_axes(k_valid[:, -g:], 1) > 0.5)
            g_keep = tf.logical_and(g_keep, expand_axes(q_valid, 2) > 0.5)
            if dense_mask is not None:
                g_keep = tf.logical_and(g_keep, dense_mask[:, :, -g:] > 0.5)
            logits = tf.concat([logits, g_logits], axis=-1)
            g_keep = tf.reshape(g_keep, [batch, 1, num_blocks, w, num_global])
            keep = tf.concat([keep, g_keep], axis=-1)
        weights = masking.masked_softmax(logits, keep)
        dropped = tf.cast(self._dropout_layer(weights, training=training), v.dtype)
        heads_out = tf.matmul(dropped[..., :local_width], values)
        heads_out = tf.reshape(heads_out, [batch, heads, padded, -1])
        if g:
            g_weights = tf.reshape(dropped[..., local_width:], [batch, heads, padded, -1])
            heads_out += tf.matmul(g_weights, v_global)
            rows_out, rows_weights = self._global_rows(q, k, v, q_valid, k_valid, dense_mask,
                                                       training)
            heads_out = tf.concat([heads_out[:, :, :padded - num_global], rows_out], axis=2)
        heads_out = heads_out[:, :, pad:]
        if not return_weights:
            return heads_out, None
        dense = tf.matmul(weights[..., :local_width], selection)  # (B, H, nb, w, Lp)
        dense = tf.reshape(dense, [batch, heads, padded, padded])
        if g:
            g_dense = tf.reshape(weights[..., local_width:], [batch, heads, padded, -1])
            dense += _pad_left(g_dense, padded - num_global, 3)
            dense = tf.concat([dense[:, :, :padded - num_global], rows_weights], axis=2)
        return heads_out, dense[:, :, pad:, pad:]

    def _global_rows(self, q, k, v, q_valid, k_valid, dense_mask, training):
        """The last `num_global` queries attend to every (visible) key: `O(L * num_global)`."""
        g = self.num_global
        q_global = q[:, :, -g:]
        length, num_global = tf.shape(k)[2], tf.shape(q_global)[2]
        keep = tf.logical_and(expand_axes(k_valid, 1, 2) > 0.5,
                              expand_axes(q_valid[:, -g:], 1, 3) > 0.5)
        if self.causal:
            keep = tf.logical_and(keep, expand_axes(masking.causal_mask(num_global, length), 1))
        if dense_mask is not None:
            keep = tf.logical_and(keep, expand_axes(dense_mask[:, -g:, :], 1) > 0.5)
        weights = masking.masked_softmax(self._compute_scores(q_global, k), keep)
        dropped = tf.cast(self._dropout_layer(weights, training=training), v.dtype)
        return tf.matmul(dropped, v), weights

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(window=self.window, num_global=self.num_global)
        return config
