"""Layer cases for the contract suite: one `LayerCase` a variant, and the helpers the tests share.

A new attention variant is covered by every contract test (shapes, padding, causality,
serialization, SavedModel, mixed precision, pruning) by adding one line to `ATTENTION_CASES`.

Inputs are left-padded, like the histories the models feed: the most recent item is last.

Example:
>>> case = next(c for c in ATTENTION_CASES if c.name == "mha_self")
>>> inputs, mask = case.sample(seed=0)
>>> case.make()(inputs, mask=mask).shape
TensorShape([3, 6, 8])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from tfrec_attn._keras import keras, tf
from tfrec_attn.layers import (
    AdditiveAttention,
    BaseAttention,
    LinearAttention,
    LocalAttention,
    LowRankAttention,
    MultiHeadAttention,
    PaddingMask,
    PositionEmbedding,
    ScaledDotProductAttention,
    SelfAttentionPooling,
    SinusoidalPositionEmbedding,
    TargetAttention,
    TopKAttention,
    TransformerEncoderBlock,
)

BATCH = 3
DIM = 8
QUERY_LENGTH = 6
VALUE_LENGTH = 5
# Real (non-padded) lengths per example: full, partial and a single item.
QUERY_LENGTHS = (6, 4, 1)
VALUE_LENGTHS = (5, 2, 3)


def left_padding_mask(lengths, total: int) -> np.ndarray:
    """Boolean `(batch, total)`, `True` for the last `length` positions of each row.

    >>> left_padding_mask([2, 0], 3).astype(int).tolist()
    [[0, 1, 1], [0, 0, 0]]
    """
    return np.arange(total)[None, :] >= total - np.asarray(lengths)[:, None]


def self_attention_inputs(rng: np.random.Generator):
    """`(x (batch, T, dim), mask (batch, T))`, with padded positions holding zeros."""
    mask = left_padding_mask(QUERY_LENGTHS, QUERY_LENGTH)
    x = rng.normal(size=(BATCH, QUERY_LENGTH, DIM)).astype(np.float32)
    return x * mask[..., None], mask


def cross_attention_inputs(rng: np.random.Generator):
    """`([query, value], [query_mask, value_mask])` with `T != S`."""
    query, query_mask = self_attention_inputs(rng)
    value_mask = left_padding_mask(VALUE_LENGTHS, VALUE_LENGTH)
    value = rng.normal(size=(BATCH, VALUE_LENGTH, DIM)).astype(np.float32) * value_mask[..., None]
    return [query, value], [query_mask, value_mask]


@dataclasses.dataclass(frozen=True)
class LayerCase:
    """One layer configuration the contract suite runs over.

    Attributes:
        name: test id.
        cls: the layer class.
        kwargs: constructor arguments.
        input_fn: `rng -> (inputs, mask)`; a list of inputs means `[query, value]` and then
            `mask` is `[query_mask, value_mask]`.
        heads: number of heads in the returned attention weights.
        causal: the layer is causal (output at `t` depends only on inputs `<= t`).
        returns_scores: the layer accepts `return_attention_scores=True`.
        pooled: the output has no time axis (the layer pools over the sequence).
        masks_keys: the padding mask hides positions from other positions (False: the layer
            is position-wise and only passes the mask through).
        zeroes_padding: outputs at padded query positions are exactly zero.
        exact_keys: the weights have one column per input key (False: only projected keys).
        projected_keys: extra weight columns after the input keys, for projected summaries
            (`LowRankAttention`'s `projection_length`); 0 for the usual `(.., T, S)` weights.
    """

    name: str
    cls: type
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    input_fn: Callable = self_attention_inputs
    heads: int = 1
    causal: bool = False
    returns_scores: bool = True
    pooled: bool = False
    masks_keys: bool = True
    zeroes_padding: bool = True
    exact_keys: bool = True
    projected_keys: int = 0

    def __str__(self) -> str:
        return self.name

    @property
    def cross(self) -> bool:
        return self.input_fn is cross_attention_inputs

    def make(self, **overrides) -> keras.layers.Layer:
        return self.cls(**{**self.kwargs, **overrides})

    def sample(self, seed: int = 0):
        """Deterministic `(inputs, mask)` as numpy arrays (lists for cross-attention)."""
        return self.input_fn(np.random.default_rng(seed))

    def query_mask(self, mask) -> np.ndarray | None:
        """Which output positions are real, or None when the output is pooled."""
        if self.pooled:
            return None
        return mask[0] if self.cross else mask

    def key_mask(self, mask) -> np.ndarray:
        return mask[1] if self.cross else mask

    def score_shape(self) -> tuple:
        queries = 1 if self.pooled else QUERY_LENGTH
        keys = VALUE_LENGTH if self.cross else QUERY_LENGTH
        return (BATCH, self.heads, queries, keys * self.exact_keys + self.projected_keys)

    def score_key_mask(self, mask) -> np.ndarray | None:
        """`(batch, keys)`: False for weight columns that must be 0 (padded input keys);
        None when the weights have no per-input-key columns."""
        if not self.exact_keys:
            return None
        key_mask = self.key_mask(mask)
        projected = np.ones((key_mask.shape[0], self.projected_keys), bool)
        return np.concatenate([key_mask, projected], axis=1)


ATTENTION_CASES = (
    LayerCase("sdpa", ScaledDotProductAttention),
    LayerCase("sdpa_causal", ScaledDotProductAttention, {"causal": True}, causal=True),
    LayerCase("mha_self", MultiHeadAttention, {"num_heads": 2, "key_dim": 4}, heads=2),
    LayerCase("mha_cross", MultiHeadAttention, {"num_heads": 2, "key_dim": 4},
              input_fn=cross_attention_inputs, heads=2),
    # the base class, usable as it is (multi-head attention; subclasses override its hooks)
    LayerCase("base", BaseAttention, {"num_heads": 2, "key_dim": 4}, heads=2),
    LayerCase("additive", AdditiveAttention, {"num_heads": 2, "key_dim": 4}, heads=2),
    LayerCase("pooling", SelfAttentionPooling, {"num_heads": 2}, heads=2, pooled=True),
    LayerCase("encoder_pre_ln", TransformerEncoderBlock,
              {"num_heads": 2, "intermediate_dim": 16}, heads=2, zeroes_padding=False),
    LayerCase("encoder_pre_ln_causal", TransformerEncoderBlock,
              {"num_heads": 2, "causal": True}, heads=2, causal=True, zeroes_padding=False),
    LayerCase("encoder_post_ln_causal", TransformerEncoderBlock,
              {"num_heads": 2, "norm_first": False, "causal": True}, heads=2, causal=True,
              zeroes_padding=False),
    LayerCase("encoder_gated_causal", TransformerEncoderBlock,
              {"num_heads": 2, "causal": True, "gated": True}, heads=2, causal=True,
              zeroes_padding=False),
    LayerCase("low_rank", LowRankAttention,
              {"num_heads": 2, "key_dim": 4, "max_length": QUERY_LENGTH, "projection_length": 3},
              heads=2, exact_keys=False, projected_keys=3),
    LayerCase("low_rank_causal", LowRankAttention,
              {"num_heads": 2, "max_length": QUERY_LENGTH, "projection_length": 3,
               "block_size": 4, "causal": True}, heads=2, causal=True, projected_keys=3),
    LayerCase("local", LocalAttention, {"num_heads": 2, "key_dim": 4, "window": 2,
                                        "num_global": 1}, heads=2),
    LayerCase("local_causal", LocalAttention, {"num_heads": 2, "window": 4, "num_global": 1,
                                               "causal": True}, heads=2, causal=True),
    LayerCase("linear", LinearAttention, {"num_heads": 2, "key_dim": 4}, heads=2),
    LayerCase("linear_causal", LinearAttention, {"num_heads": 2, "key_dim": 4, "chunk_size": 4,
                                                 "causal": True}, heads=2, causal=True),
    LayerCase("linear_favor_causal", LinearAttention,
              {"num_heads": 2, "feature_map": "favor", "num_features": 16, "chunk_size": 4,
               "causal": True}, heads=2, causal=True),
    LayerCase("top_k", TopKAttention, {"num_heads": 2, "k": 2}, heads=2),
    LayerCase("top_k_causal", TopKAttention, {"num_heads": 2, "k": 2, "causal": True}, heads=2,
              causal=True),
    LayerCase("encoder_local_causal", TransformerEncoderBlock,
              {"num_heads": 2, "causal": True, "attention": "local",
               "attention_options": {"window": 2}}, heads=2, causal=True, zeroes_padding=False),
    LayerCase("target", TargetAttention, {"hidden_units": (8, 4)},
              input_fn=cross_attention_inputs),
    LayerCase("position", PositionEmbedding, {"max_length": 10}, returns_scores=False,
              masks_keys=False),
    LayerCase("sinusoidal", SinusoidalPositionEmbedding, {"max_length": 10},
              returns_scores=False, masks_keys=False),
)

# Cases with the class and weights of another case (only `causal` or the norm order differ). The
# checks dominated by tracing and saving (SavedModel, `.keras`, h5, pruning) run them in the slow
# suite only; the case named here runs those checks in the fast suite.
SAME_STRUCTURE_AS = {
    "sdpa_causal": "sdpa",
    "encoder_pre_ln_causal": "encoder_pre_ln",
    "encoder_post_ln_causal": "encoder_pre_ln",
    "low_rank_causal": "low_rank",
    "local_causal": "local",
    "top_k_causal": "top_k",
    "linear_causal": "linear",  # elu features, chunked prefix sums: SASRec's linear blocks
}


# -- generic helpers ---------------------------------------------------------------------------
def as_list(x) -> list:
    return list(x) if isinstance(x, list | tuple) else [x]


def unlist(items: list, cross: bool):
    return items if cross else items[0]


def call(case: LayerCase, layer, inputs, mask=None, **kwargs):
    """Calls `layer` on numpy inputs/masks, converting them to tensors."""
    tensors = unlist([tf.constant(x) for x in as_list(inputs)], case.cross)
    if mask is not None:
        mask = unlist([tf.constant(m) for m in as_list(mask)], case.cross)
    return layer(tensors, mask=mask, **kwargs)


def input_shapes(case: LayerCase, inputs):
    shapes = [tf.TensorShape(x.shape) for x in as_list(inputs)]
    return unlist(shapes, case.cross)


def perturb_padding(inputs, mask, seed: int = 1):
    """The inputs with new random content at every padded position (same structure)."""
    rng = np.random.default_rng(seed)
    out = []
    for x, m in zip(as_list(inputs), as_list(mask), strict=True):
        noise = rng.normal(scale=5.0, size=x.shape).astype(x.dtype)
        out.append(np.where(m[..., None], x, noise))
    return out if isinstance(inputs, list) else out[0]


def perturb_after(inputs, t: int, seed: int = 2):
    """The inputs with new random content at every position after `t` (self-attention only)."""
    rng = np.random.default_rng(seed)
    out = inputs.copy()
    out[:, t + 1:] = rng.normal(scale=5.0, size=out[:, t + 1:].shape)
    return out


def ids_from_mask(mask, seed: int = 3) -> list[np.ndarray]:
    """Item ids `>= 2` at real positions and `0` (padding) elsewhere, one array per mask."""
    rng = np.random.default_rng(seed)
    return [np.where(m, rng.integers(2, 50, size=m.shape), 0).astype(np.int32)
            for m in as_list(mask)]


def build_model(case: LayerCase, layer, project: bool = False,
                return_scores: bool = False) -> keras.Model:
    """Functional model `[*float sequences, *item ids] -> layer output (, attention weights)`.

    The padding mask is computed from the ids by `PaddingMask` and passed explicitly
    (`layer(x, mask=padding)`), as models that get pruned must. With `project`, each float input
    first goes through a `Dense`, so the model has a prunable kernel whatever the layer.
    """
    lengths = [QUERY_LENGTH, VALUE_LENGTH] if case.cross else [QUERY_LENGTH]
    floats = [keras.Input((n, DIM), name=f"x{i}") for i, n in enumerate(lengths)]
    ids = [keras.Input((n,), dtype="int32", name=f"ids{i}") for i, n in enumerate(lengths)]
    masks = [PaddingMask(name=f"padding{i}")(i_) for i, i_ in enumerate(ids)]
    hidden = [keras.layers.Dense(DIM, name=f"project{i}")(f) for i, f in enumerate(floats)]
    inputs = unlist(hidden if project else floats, case.cross)
    mask = unlist(masks, case.cross)
    if return_scores:
        outputs, scores = layer(inputs, mask=mask, return_attention_scores=True)
        outputs = {"output": outputs, "scores": scores}
    else:
        outputs = layer(inputs, mask=mask)
    return keras.Model(floats + ids, outputs)


def model_feed(case: LayerCase, inputs, mask) -> list[np.ndarray]:
    """The feed for `build_model`: float inputs, then ids consistent with `mask`."""
    return as_list(inputs) + ids_from_mask(mask)


def copy_keras_mha_weights(source: keras.layers.MultiHeadAttention, target) -> None:
    """Copies a built `keras.layers.MultiHeadAttention` into a built tfrec_attn one.

    Keras' einsum kernels `(dim, heads, key_dim)` and biases `(heads, key_dim)` become our Dense
    `(dim, heads * key_dim)` / `(heads * key_dim,)`; the output kernel `(heads, key_dim, dim)`
    becomes `(heads * key_dim, dim)`.
    """
    pairs = [
        (source._query_dense, target.query_dense),
        (source._key_dense, target.key_dense),
        (source._value_dense, target.value_dense),
        (source._output_dense, target.output_dense),
    ]
    for src, dst in pairs:
        for src_weight, dst_weight in zip(src.weights, dst.weights, strict=True):
            dst_weight.assign(np.reshape(src_weight.numpy(), dst_weight.shape))


def sparsity(weight) -> float:
    """Fraction of exact zeros in a weight."""
    value = np.asarray(weight)
    return float(np.mean(value == 0.0))
