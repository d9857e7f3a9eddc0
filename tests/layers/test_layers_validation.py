"""Bad constructor arguments fail up front with a ValueError naming the argument."""

import numpy as np
import pytest

from tfrec_attn.layers import (
    AdditiveAttention,
    BaseAttention,
    GraphAttention,
    HistoryTopK,
    ItemEmbedding,
    MultiHeadAttention,
    MultimodalFusion,
    PositionEmbedding,
    ScaledDotProductAttention,
    SelfAttentionPooling,
    SinusoidalPositionEmbedding,
    TransformerEncoderBlock,
)

BAD_ARGUMENTS = [
    (MultiHeadAttention, {"num_heads": 0}, "num_heads"),
    (AdditiveAttention, {"num_heads": 0}, "num_heads"),
    (SelfAttentionPooling, {"num_heads": 0}, "num_heads"),
    (TransformerEncoderBlock, {"num_heads": 0}, "num_heads"),
    (MultiHeadAttention, {"key_dim": 0}, "key_dim"),
    (ScaledDotProductAttention, {"dropout": 1.5}, "dropout"),
    (MultiHeadAttention, {"dropout": 1.5}, "dropout"),
    (AdditiveAttention, {"dropout": -0.1}, "dropout"),
    (SelfAttentionPooling, {"dropout": 1.5}, "dropout"),
    (TransformerEncoderBlock, {"dropout": 1.5}, "dropout"),
    (SelfAttentionPooling, {"num_queries": 0}, "num_queries"),
    (TransformerEncoderBlock, {"intermediate_dim": 0}, "intermediate_dim"),
    (PositionEmbedding, {"max_length": 0}, "max_length"),
    (SinusoidalPositionEmbedding, {"max_length": 0}, "max_length"),
    (HistoryTopK, {"k": 0}, "k"),
    (ItemEmbedding, {"vocab_size": 0, "dim": 4}, "vocab_size"),
    (ItemEmbedding, {"vocab_size": 10, "dim": 0}, "dim"),
    # flags: a string such as "no" would read as true
    (MultiHeadAttention, {"causal": "no"}, "causal"),
    (MultiHeadAttention, {"use_bias": "false"}, "use_bias"),
    (ScaledDotProductAttention, {"causal": 1}, "causal"),
    (BaseAttention, {"use_projections": "yes"}, "use_projections"),
    (TransformerEncoderBlock, {"norm_first": "no"}, "norm_first"),
    (TransformerEncoderBlock, {"causal": "no"}, "causal"),
    (GraphAttention, {"add_self_loops": "no"}, "add_self_loops"),
    (GraphAttention, {"concat_heads": None}, "concat_heads"),
    (MultimodalFusion, {"use_bias": "no"}, "use_bias"),
    (HistoryTopK, {"exclude_history": "no"}, "exclude_history"),
    (ItemEmbedding, {"vocab_size": 10, "dim": 4, "scale_by_dim": "no"}, "scale_by_dim"),
    # numbers
    (TransformerEncoderBlock, {"layer_norm_epsilon": -1.0}, "layer_norm_epsilon"),
    (ItemEmbedding, {"vocab_size": 10, "dim": 4, "l2": -1.0}, "l2"),
    (ItemEmbedding, {"vocab_size": 10, "dim": 4, "l2": "x"}, "l2"),
    (GraphAttention, {"negative_slope": "a"}, "negative_slope"),
    (SinusoidalPositionEmbedding, {"max_length": 5, "base": 0.0}, "base"),
    # an attention option the variant does not take, named when the block is made
    (TransformerEncoderBlock, {"attention": "local", "attention_options": {"windw": 3}},
     "windw"),
]


@pytest.mark.parametrize(
    "cls, kwargs, argument", BAD_ARGUMENTS,
    ids=[f"{cls.__name__}-{next(iter(kw))}" for cls, kw, _ in BAD_ARGUMENTS],
)
def test_bad_argument_raises_value_error_naming_it(cls, kwargs, argument):
    with pytest.raises(ValueError, match=rf"\b{argument}\b"):
        cls(**kwargs)


def test_transformer_encoder_block_rejects_indivisible_dim():
    block = TransformerEncoderBlock(num_heads=3)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        block.build((None, 4, 8))


def test_item_embedding_takes_no_l2_as_none():
    """`l2=None` reads as no penalty (as 0), as before the l2 check."""
    layer = ItemEmbedding(10, 4, l2=None)
    layer(np.array([[2, 3]]))
    assert layer.losses == []
