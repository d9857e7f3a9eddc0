"""Target attention: the activation unit of Deep Interest Network (Zhou et al., KDD 2018)."""

from tfrec_attn._keras import keras, tf
from tfrec_attn.layers.base_attention import BaseAttention
from tfrec_attn.layers.utils import build_sublayer, clone_initializer, expand_axes
from tfrec_attn.registry import register
from tfrec_attn.validation import check_choice, check_positive_int_tuple

NORMALIZATIONS = ("softmax", "none")
# BaseAttention arguments that have one meaning only here: the scores come from the MLP over the
# raw vectors, and the output is the weighted sum of the raw values.
_FIXED = {"num_heads": 1, "key_dim": None, "value_dim": None, "output_dim": None,
          "use_projections": False}


@register()
class TargetAttention(BaseAttention):
    """DIN's activation unit: each candidate weighs the history by `MLP([q, k, q - k, q * k])`.

    The score of candidate `q` for history item `k` is a small dense MLP (`hidden_units`,
    `activation`, then one linear unit) over the concatenation `[q, k, q - k, q * k]`; the output
    is the weighted sum of the values. No projections: query and keys must have the same size,
    and the output has the values' size. Only the scoring (and, for `normalize="none"`, the
    weighting) differ from `BaseAttention`; masks, dropout and the weighted sum are the base's.

    Memory grows as `T * S * 4 * dim` (one MLP input per candidate/history pair), so it is meant
    for a few candidates over a history, as in DIN.

    Args:
        hidden_units: tuple of positive ints. Hidden layer sizes of the score MLP.
            Defaults to `(80, 40)` (the DIN paper's).
        activation: activation of the hidden layers (any Keras activation). Defaults to
            `"sigmoid"` (DeepCTR's `LocalActivationUnit` default; DIN's Dice has weights).
        normalize: `"softmax"` (masked softmax over the history, weights sum to one) or
            `"none"` (DIN's original: the raw scores weigh the values, so the interest keeps the
            intensity of the match; padded keys get exactly 0). Defaults to `"softmax"`.
        dropout: float. Dropout on the attention weights.
        use_bias: bool. Whether the MLP layers use biases.
        causal: bool. End-aligned causal mask (query `i` sees keys `j <= i + S - T`).
        kernel_initializer / bias_initializer: initializers of the MLP layers.

    Call arguments:
        inputs: `[query, value]` with query `(batch, T, dim)` (one or more candidates) and value
            `(batch, S, dim)`; `[query, value, key]` scores against `key` instead; a single
            tensor attends over itself.
        mask: `[query_mask, value_mask]` boolean padding masks (`(batch, T)`, `(batch, S)`).
        training: bool, for dropout.
        return_attention_scores: bool. Also return the `(batch, 1, T, S)` weights.
        attention_mask: optional boolean `(batch, T, S)`.

    Returns:
        `(batch, T, value_dim)`, and the `(batch, 1, T, S)` weights when asked.

    Example:
    >>> from tfrec_attn._keras import tf
    >>> layer = TargetAttention(hidden_units=(8, 4), normalize="none")
    >>> candidates, history = tf.ones((2, 1, 6)), tf.ones((2, 5, 6))
    >>> outputs, weights = layer([candidates, history], mask=[None, tf.sequence_mask([2, 5], 5)],
    ...                          return_attention_scores=True)
    >>> outputs.shape, weights.shape, float(weights[0, 0, 0, 3]) == 0.0  # a padded key
    (TensorShape([2, 1, 6]), TensorShape([2, 1, 1, 5]), True)
    """

    def __init__(self, hidden_units=(80, 40), activation="sigmoid", normalize: str = "softmax",
                 **kwargs):
        for name, fixed in _FIXED.items():
            value = kwargs.pop(name, fixed)
            if value != fixed:
                raise ValueError(f"TargetAttention scores raw vectors with its MLP: {name} must "
                                 f"be {fixed!r}. Received: {name}={value!r}")
        super().__init__(**_FIXED, **kwargs)
        self.hidden_units = check_positive_int_tuple("hidden_units", hidden_units)
        check_choice("normalize", normalize, NORMALIZATIONS)
        self.activation = keras.activations.get(activation)
        self.normalize = normalize

    def build_scores(self, shapes) -> None:
        query_dim = shapes[0][-1]
        key_dim = shapes[-1][-1]
        if query_dim != key_dim:
            raise ValueError("TargetAttention compares queries and keys element-wise: their last "
                             f"dimensions must match. Received: query dim {query_dim}, key dim "
                             f"{key_dim}")
        units = [*self.hidden_units, 1]
        names = [f"score_hidden_{i}" for i in range(len(self.hidden_units))] + ["score_output"]
        input_dim = 4 * query_dim
        self._score_layer_names = names
        for i, (name, size) in enumerate(zip(names, units, strict=True)):
            layer = keras.layers.Dense(
                size, activation=self.activation if i < len(self.hidden_units) else None,
                use_bias=self.use_bias,
                kernel_initializer=clone_initializer(self.kernel_initializer),
                bias_initializer=clone_initializer(self.bias_initializer),
                dtype=self.dtype_policy, name=name)
            build_sublayer(layer, (None, None, None, input_dim))
            setattr(self, name, layer)  # attributes, so quantize configs address `score_hidden_0`
            input_dim = size

    def _compute_scores(self, query, key):
        # (B, 1, T, d) / (B, 1, S, d) -> (B, T, 1, d) / (B, 1, S, d): rank-4 broadcasts, which
        # every TFLite kernel supports.
        q = expand_axes(query[:, 0], 2)
        k = expand_axes(key[:, 0], 1)
        difference, product = q - k, q * k
        shape = tf.shape(difference)
        hidden = tf.concat([tf.broadcast_to(q, shape), tf.broadcast_to(k, shape), difference,
                            product], axis=-1)  # (B, T, S, 4d)
        for name in self._score_layer_names:
            hidden = getattr(self, name)(hidden)
        return expand_axes(hidden[:, :, :, 0], 1)  # (B, 1, T, S)

    def _apply_scores(self, scores, value, mask, training):
        if self.normalize == "softmax":
            return super()._apply_scores(scores, value, mask, training)
        weights = tf.cast(scores, tf.float32)
        if mask is not None:
            weights = weights * tf.cast(mask, tf.float32)  # padded keys: exactly 0
        dropped = self._dropout_layer(tf.cast(weights, value.dtype), training=training)
        return tf.matmul(dropped, value), weights

    def get_prunable_weights(self) -> list:
        # The one-unit score layer is a vector that only forms the logits: like additive
        # attention's score vector, pruning it saves nothing and hurts quality.
        return [getattr(self, name).kernel for name in self._score_layer_names[:-1]]

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(hidden_units=list(self.hidden_units),
                      activation=keras.activations.serialize(self.activation),
                      normalize=self.normalize)
        return config
