"""Kernelized linear attention (Katharopoulos et al. 2020; Performer's FAVOR+ features)."""

import numpy as np

from tfrec_attn._keras import keras, tf
from tfrec_attn.layers import masking
from tfrec_attn.layers.base_attention import BaseAttention
from tfrec_attn.layers.prefix_sum import exclusive_prefix_sum
from tfrec_attn.layers.utils import expand_axes
from tfrec_attn.registry import register
from tfrec_attn.validation import check_int, check_positive_int

FEATURE_MAPS = ("elu", "favor")


def orthogonal_gaussian_features(dim: int, num_features: int, seed: int) -> np.ndarray:
    """`(dim, num_features)` Performer projection: blocks of orthogonal directions with
    chi-distributed norms, so each column is marginally `N(0, I)` (lower variance than i.i.d.).

    Hand-written (a few lines of numpy): neither TF nor Keras ships this estimator's matrix.
    """
    rng = np.random.default_rng(seed)
    blocks = []
    for _ in range(-(-num_features // dim)):
        q, r = np.linalg.qr(rng.normal(size=(dim, dim)))
        blocks.append(q * np.sign(np.diag(r)))  # sign fix: Haar-uniform directions
    directions = np.concatenate(blocks, axis=1)[:, :num_features]
    norms = np.linalg.norm(rng.normal(size=(dim, num_features)), axis=0)
    return (directions * norms).astype(np.float32)


@register()
class LinearAttention(BaseAttention):
    """Linear attention: `phi(q) (phi(k)^T v) / (phi(q) . sum_j phi(k_j))`, `O(L * d^2)`.

    Feature maps: `"elu"` (`elu(x) + 1`, Katharopoulos et al.) or `"favor"` (Performer's
    positive random features `exp(w x - |x|^2 / 2) / sqrt(m)` of `x / d^(1/4)`, an unbiased
    estimate of the softmax kernel `exp(q.k / sqrt(d))`; the projection is fixed, drawn from
    `seed` and stored as a non-trainable weight). Padded keys get `phi(k) = 0`. FAVOR+ drops
    constants that cancel in the normalization from the exponents, so a query of any norm
    attends (and int8 keeps its range); in the causal form a key's own norm still enters its
    features, so keys of norm above ~20 (after the key projection) underflow to no weight.

    Causal attention runs chunk by chunk: quadratic inside a chunk of `chunk_size`, plus a
    `(features x value_dim)` state summed over the previous chunks, so memory is
    `O(L * d + (L / chunk_size) * d^2)`, never a `d x d` state per position.
    Dropout (the weights are never formed) drops key features `phi(k)`.
    The dense normalized `phi(q) phi(k)^T` weights are formed only when
    `return_attention_scores=True` or with an explicit `attention_mask` (which is `T x S`
    already). Converts to TFLite builtins (`ELU`/`EXP`, `CUMSUM`, `BATCH_MATMUL`), full-integer
    int8 included: the normalization multiplies by `rsqrt(denominator)` twice, no int8 DIV.

    Args:
        num_heads: int. Number of heads. Defaults to `1`.
        feature_map: `"elu"` or `"favor"`. Defaults to `"elu"`.
        num_features: int. Random features for `"favor"`. Defaults to `64`.
        chunk_size: int. Chunk length of the causal form. Defaults to `64`.
        seed: int. Seed of the `"favor"` projection. Defaults to `0`.
        **kwargs: the other `BaseAttention` arguments (key_dim, dropout, causal, initializers...).

    Call arguments:
        inputs: query `(batch, T, dim)`, `[query, value]` or `[query, value, key]`
            (causal needs `T == S`).
        mask: boolean padding mask `(batch, T)` or `[query_mask, value_mask]`.
        training: bool, for dropout.
        return_attention_scores: bool. Also return the dense `(batch, heads, T, S)` weights.
        attention_mask: optional boolean `(batch, T, S)`.

    Returns:
        `(batch, T, output_dim)`, and the weights when asked.

    Example:
    >>> from tfrec_attn._keras import tf
    >>> layer = LinearAttention(causal=True, chunk_size=3)
    >>> out, w = layer(tf.ones((2, 8, 4)), return_attention_scores=True)
    >>> out.shape, w.shape
    (TensorShape([2, 8, 4]), TensorShape([2, 1, 8, 8]))
    """

    def __init__(self, num_heads: int = 1, feature_map: str = "elu", num_features: int = 64,
                 chunk_size: int = 64, seed: int = 0, **kwargs):
        kwargs.pop("use_projections", None)
        if feature_map not in FEATURE_MAPS:
            raise ValueError(
                f"feature_map must be one of {FEATURE_MAPS}. Received: feature_map={feature_map!r}")
        check_positive_int("num_features", num_features)
        check_positive_int("chunk_size", chunk_size)
        check_int("seed", seed)
        super().__init__(num_heads=num_heads, use_projections=True, **kwargs)
        self.feature_map = feature_map
        self.num_features = num_features
        self.chunk_size = chunk_size
        self.seed = seed

    def build_scores(self, shapes) -> None:
        if self.feature_map != "favor":
            return
        matrix = orthogonal_gaussian_features(self._head_key_dim, self.num_features, self.seed)
        self.random_features = self.add_weight(
            name="random_features", shape=matrix.shape, dtype="float32", trainable=False,
            initializer=keras.initializers.Constant(matrix))

    def _features(self, x: tf.Tensor, is_query: bool, valid: tf.Tensor | None = None
                  ) -> tf.Tensor:
        """`phi(x)` in float32, `(..., key_dim)` -> `(..., features)`; keys (`is_query=False`)
        come as `(batch, heads, S, key_dim)` with `valid` (broadcastable boolean) marking real
        ones.

        FAVOR+ subtracts stabilizers from the exponent that cancel in the normalization, so that
        `exp` neither underflows nor overflows: per query, `|q|^2 / 2` and its largest
        projection (then one feature is `exp(0)`, whatever the query's norm); for non-causal
        keys, the largest exponent over the valid keys of the row and head (one constant for
        every key). Causal keys keep their own exponent: a constant taken over the sequence
        would let later keys change earlier outputs' rounding.
        """
        x = tf.cast(x, tf.float32)
        if self.feature_map == "elu":
            return tf.nn.elu(x) + 1.0
        x = x * float(self._head_key_dim) ** -0.25
        # A 2-D matmul, not a broadcasting (B, H, L, d) x (d, m) one: on AMD EPYC hosts TF 2.20's
        # oneDNN batched matmul of that form aborts after tf.random.set_seed clears its cache.
        flat = tf.reshape(x, [-1, self._head_key_dim])
        projected = tf.reshape(tf.matmul(flat, tf.cast(self.random_features, tf.float32)),
                               tf.concat([tf.shape(x)[:-1], [self.num_features]], axis=0))
        if is_query:  # per-query constants: the norm term and the largest projection
            exponent = projected - tf.stop_gradient(
                tf.reduce_max(projected, axis=-1, keepdims=True))
            return tf.exp(exponent) * float(self.num_features) ** -0.5
        exponent = projected - 0.5 * tf.reduce_sum(tf.square(x), axis=-1, keepdims=True)
        if not self.causal:
            counted = exponent if valid is None else tf.where(valid, exponent, -1e30)
            largest = tf.reduce_max(counted, axis=[-2, -1], keepdims=True)
            largest = tf.where(largest > -1e29, largest, 0.0)  # rows with no valid key
            exponent -= tf.stop_gradient(largest)
        return tf.exp(exponent) * float(self.num_features) ** -0.5

    def _attend(self, q, k, v, query_mask, value_mask, attention_mask, training,
                return_weights: bool):
        same_length = q.shape[2] is None or k.shape[2] is None or q.shape[2] == k.shape[2]
        if self.causal and not same_length:
            raise ValueError("Causal LinearAttention is self-attention: query and key lengths "
                             f"must be equal. Received T={q.shape[2]}, S={k.shape[2]}.")
        q_features = self._features(q, is_query=True)
        if value_mask is not None:
            valid = expand_axes(tf.cast(value_mask, tf.bool), 1, 3)
            k = tf.where(valid, k, tf.zeros_like(k))  # no exp() of padded content
            k_features = tf.where(valid, self._features(k, False, valid), 0.0)
        else:
            k_features = self._features(k, is_query=False)
        k_features = tf.cast(self._dropout_layer(k_features, training=training), tf.float32)
        values = tf.cast(v, tf.float32)
        if return_weights or attention_mask is not None:
            heads, weights = self._quadratic(q_features, k_features, values, query_mask,
                                             attention_mask)
        elif self.causal:
            heads, weights = self._causal_chunked(q_features, k_features, values), None
        else:
            state = tf.matmul(k_features, values, transpose_a=True)  # (B, H, m, dv)
            normalizer = expand_axes(tf.reduce_sum(k_features, axis=2), -1)  # (B, H, m, 1)
            heads = _normalize(tf.matmul(q_features, state), tf.matmul(q_features, normalizer))
            weights = None
        return tf.cast(heads, v.dtype), weights

    def _quadratic(self, q_features, k_features, values, query_mask, attention_mask):
        """The `O(T * S)` reference form, used only when the dense weights are needed."""
        scores = tf.matmul(q_features, k_features, transpose_b=True)
        mask = masking.merge_masks(query_mask, None, attention_mask, self.causal,
                                   tf.shape(scores)[2], tf.shape(scores)[3])
        if mask is not None:
            scores = tf.where(mask, scores, 0.0)
        weights = _normalize(scores, tf.reduce_sum(scores, axis=-1, keepdims=True))
        return tf.matmul(weights, values), weights

    def _causal_chunked(self, q_features, k_features, values):
        """Quadratic within chunks, running `(m, dv)` state across chunks."""
        c = self.chunk_size
        batch, heads, length = tf.shape(values)[0], tf.shape(values)[1], tf.shape(values)[2]
        num_chunks = (length + c - 1) // c
        pad = num_chunks * c - length
        paddings = [[0, 0], [0, 0], [0, pad], [0, 0]]

        def chunks(x):
            return tf.reshape(tf.pad(x, paddings), [batch, heads, num_chunks, c, tf.shape(x)[3]])

        qc, kc, vc = chunks(q_features), chunks(k_features), chunks(values)
        inner = tf.matmul(qc, kc, transpose_b=True) * tf.constant(np.tril(np.ones((c, c))),
                                                                  tf.float32)
        numerator = tf.matmul(inner, vc)
        denominator = tf.reduce_sum(inner, axis=-1, keepdims=True)
        # State of all earlier chunks: one (m, dv) matrix per chunk (not per position).
        state = exclusive_prefix_sum(tf.matmul(kc, vc, transpose_a=True), axis=2)
        normalizer = expand_axes(exclusive_prefix_sum(tf.reduce_sum(kc, axis=3), axis=2), -1)
        numerator += tf.matmul(qc, state)
        denominator += tf.matmul(qc, normalizer)
        heads_out = _normalize(numerator, denominator)
        return tf.reshape(heads_out, [batch, heads, num_chunks * c, -1])[:, :, :length]

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(feature_map=self.feature_map, num_features=self.num_features,
                      chunk_size=self.chunk_size, seed=self.seed)
        return config


def _normalize(numerator: tf.Tensor, denominator: tf.Tensor) -> tf.Tensor:
    """`numerator / denominator`, 0 where no key is visible (denominator 0).

    Computed as `numerator * r * r` with `r = rsqrt(denominator)`, not as a division: in a
    full-integer int8 TFLite file, DIV aborts when its int8 divisor rounds to the zero point
    (rows without keys, or sums under half a quantization step; the int8 `> 0` test does not
    catch them), whereas int8 RSQRT saturates there and the numerator is 0. `r` is 0 on rows
    without keys so that they do not widen its calibrated range.
    """
    visible = denominator > 0.0
    root = tf.where(visible, tf.math.rsqrt(tf.where(visible, denominator, 1.0)), 0.0)
    return numerator * root * root
