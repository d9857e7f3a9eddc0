"""A Transformer encoder block (pre- or post-LN) around tfrec_attn's multi-head attention."""

from tfrec_attn._keras import keras
from tfrec_attn.layers.attention_factory import (
    ATTENTION_KINDS,
    check_attention_option_names,
    make_attention,
)
from tfrec_attn.layers.masking import check_mask_shape
from tfrec_attn.layers.utils import (
    build_sublayer,
    check_rank,
    clone_initializer,
    prunable_kernels,
)
from tfrec_attn.registry import register
from tfrec_attn.validation import (
    check_bool,
    check_optional_positive_int,
    check_positive_float,
    check_positive_int,
    check_rate,
)

# What the block passes to its attention layer itself (and `output_dim`, which the residual
# fixes to the input width): `attention_options` may not set them.
BLOCK_ATTENTION_OPTIONS = frozenset(
    {"num_heads", "dropout", "causal", "kernel_initializer", "name", "dtype", "output_dim"})


@register()
class TransformerEncoderBlock(keras.layers.Layer):
    """Self-attention + position-wise feed-forward, each with a residual and layer norm.

    Padded positions are hidden from every query as keys, so their outputs (which are not
    zeroed) never reach a real position. Not zeroing them keeps layer norms off all-zero rows,
    whose `rsqrt(epsilon)` would ruin int8 quantization ranges.

    Args:
        num_heads: int. Attention heads.
        intermediate_dim: int or None. Feed-forward width; defaults to the input dim.
        dropout: float. Dropout on attention weights, sublayer outputs and the FFN.
        norm_first: bool. Pre-LN (`True`, stabler for deep stacks) or post-LN.
        causal: bool. Causal self-attention.
        activation: feed-forward activation. Defaults to `"gelu"`.
        layer_norm_epsilon: float. Defaults to `1e-3` (Keras' own default): with `1e-6`, an
            all-zero input row (zeroed padding from a caller) gives `rsqrt(1e-6) = 1000` in the
            norm, which takes the whole int8 range of a quantized file and rounds the real rows
            to 0 (tests/optimization/test_layer_tflite_contract.py).
        kernel_initializer: initializer for every kernel.
        attention: str. The self-attention variant, a key of `ATTENTION_KINDS` (`"full"`,
            `"low_rank"`, `"local"`, `"linear"`, `"top_k"`). Defaults to `"full"`.
        attention_options: dict or None. Extra constructor arguments of that variant (e.g.
            `{"window": 8}`); `num_heads`, `dropout`, `causal` and the initializer come from
            the block.
        gated: bool. The LiGR block of eSASRec (Petrov et al., 2025): each residual branch is
            scaled by a learned sigmoid gate of the branch's input,
            `x + sigmoid(x W_g) * f(norm(x))`, and the feed-forward is a gated linear unit,
            `(activation(x W_1) * x V) W_2` (SwiGLU with `activation="silu"`). Defaults to
            `False` (the standard block).

    Call arguments:
        inputs: `(batch, T, dim)`.
        mask: boolean padding mask `(batch, T)`. Pass it explicitly (`mask=...`) in models that
            will be pruned: TFMOT's pruning wrapper drops Keras' implicit mask.
        training: bool, for dropout.
        return_attention_scores: bool. Also return `(batch, heads, T, T)` weights.

    Returns:
        `(batch, T, dim)`, and the attention weights when asked.

    Example:
    >>> from tfrec_attn._keras import tf
    >>> block = TransformerEncoderBlock(num_heads=2, causal=True)
    >>> block(tf.ones((2, 6, 8)), mask=tf.sequence_mask([2, 6], 6)).shape
    TensorShape([2, 6, 8])
    """

    def __init__(
        self,
        num_heads: int = 1,
        intermediate_dim: int | None = None,
        dropout: float = 0.0,
        norm_first: bool = True,
        causal: bool = False,
        activation="gelu",
        layer_norm_epsilon: float = 1e-3,
        kernel_initializer="glorot_uniform",
        attention: str = "full",
        attention_options: dict | None = None,
        gated: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {sorted(ATTENTION_KINDS)}. "
                             f"Received: attention={attention!r}")
        if attention_options is not None and not isinstance(attention_options, dict):
            raise ValueError("attention_options must be a dict or None. "
                             f"Received: attention_options={attention_options!r}")
        reserved = set(attention_options or {}) & BLOCK_ATTENTION_OPTIONS
        if reserved:
            raise ValueError(
                f"attention_options must not set {sorted(reserved)}: the block sets them. "
                "Pass them to TransformerEncoderBlock instead.")
        check_attention_option_names(attention, attention_options, BLOCK_ATTENTION_OPTIONS)
        check_positive_int("num_heads", num_heads)
        for name, flag in (("norm_first", norm_first), ("causal", causal), ("gated", gated)):
            check_bool(name, flag)
        check_positive_float("layer_norm_epsilon", layer_norm_epsilon)
        check_optional_positive_int("intermediate_dim", intermediate_dim)
        check_rate("dropout", dropout)
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout
        self.norm_first = norm_first
        self.causal = causal
        self.activation = keras.activations.get(activation)
        self.layer_norm_epsilon = layer_norm_epsilon
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.attention_kind = attention
        self.attention_options = dict(attention_options) if attention_options else None
        self.gated = gated
        self.supports_masking = True

    def build(self, input_shape):
        check_rank(self, "inputs", input_shape)
        dim = input_shape[-1]
        if dim % self.num_heads:
            raise ValueError(
                f"The input dim ({dim}) must be divisible by num_heads ({self.num_heads})."
            )
        policy = self.dtype_policy
        self.attention = make_attention(
            self.attention_kind, num_heads=self.num_heads, dropout=self.dropout,
            causal=self.causal, kernel_initializer=clone_initializer(self.kernel_initializer),
            dtype=policy, name="self_attention", **(self.attention_options or {}),
        )
        build_sublayer(self.attention, input_shape)
        self.attention_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=policy, name="attention_norm")
        build_sublayer(self.attention_norm, input_shape)
        self.ffn_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=policy, name="ffn_norm")
        build_sublayer(self.ffn_norm, input_shape)
        width = self.intermediate_dim or dim
        self.ffn_inner = keras.layers.Dense(
            width, activation=self.activation, dtype=policy, name="ffn_inner",
            kernel_initializer=clone_initializer(self.kernel_initializer))
        build_sublayer(self.ffn_inner, input_shape)
        self.ffn_outer = keras.layers.Dense(
            dim, dtype=policy, name="ffn_outer",
            kernel_initializer=clone_initializer(self.kernel_initializer))
        build_sublayer(self.ffn_outer, input_shape[:-1] + (width,) if isinstance(input_shape, tuple)
                       else input_shape[:-1].concatenate([width]))
        if self.gated:
            self.ffn_value = keras.layers.Dense(
                width, dtype=policy, name="ffn_value",
                kernel_initializer=clone_initializer(self.kernel_initializer))
            build_sublayer(self.ffn_value, input_shape)
            self.attention_gate, self.ffn_gate = (
                keras.layers.Dense(dim, activation="sigmoid", dtype=policy, name=name,
                                   kernel_initializer=clone_initializer(self.kernel_initializer))
                for name in ("attention_gate", "ffn_gate"))
            build_sublayer(self.attention_gate, input_shape)
            build_sublayer(self.ffn_gate, input_shape)
        self.attention_dropout = keras.layers.Dropout(self.dropout, dtype=policy)
        self.ffn_dropout = keras.layers.Dropout(self.dropout, dtype=policy)
        super().build(input_shape)

    def _sublayer(self, x, norm, fn, gate):
        """Residual around `fn` with the norm before (pre-LN) or after (post-LN), the branch
        scaled by `gate(x)` in a gated block."""
        branch = fn(norm(x)) if self.norm_first else fn(x)
        if self.gated:
            branch = gate(x) * branch
        return x + branch if self.norm_first else norm(x + branch)

    def call(self, inputs, mask=None, training=None, return_attention_scores=False):
        check_rank(self, "inputs", inputs.shape)
        check_mask_shape(type(self).__name__, "mask", mask, inputs.shape[:2], "(batch, T)")
        weights = []

        def attend(x):
            # Weights only when asked: local/linear attention never form them otherwise.
            out = self.attention(x, mask=mask, training=training,
                                 return_attention_scores=return_attention_scores)
            if return_attention_scores:
                out, w = out
                weights.append(w)
            return self.attention_dropout(out, training=training)

        def feed_forward(x):
            hidden = self.ffn_inner(x)
            if self.gated:
                hidden = hidden * self.ffn_value(x)
            return self.ffn_dropout(self.ffn_outer(hidden), training=training)

        x = self._sublayer(inputs, self.attention_norm, attend,
                           self.attention_gate if self.gated else None)
        x = self._sublayer(x, self.ffn_norm, feed_forward, self.ffn_gate if self.gated else None)
        if return_attention_scores:
            return x, weights[0]
        return x

    def compute_mask(self, inputs, mask=None):
        return mask

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_prunable_weights(self) -> list:
        return prunable_kernels(self)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            intermediate_dim=self.intermediate_dim,
            dropout=self.dropout,
            norm_first=self.norm_first,
            causal=self.causal,
            activation=keras.activations.serialize(self.activation),
            layer_norm_epsilon=self.layer_norm_epsilon,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            attention=self.attention_kind,
            attention_options=self.attention_options,
            gated=self.gated,
        )
        return config
