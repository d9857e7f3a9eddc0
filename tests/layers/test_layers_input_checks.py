"""Inputs and masks of the wrong static shape fail with a ValueError naming the argument, and
constructor arguments of the wrong type fail like out-of-range ones do."""

import re

import pytest

from tfrec_attn._keras import keras, tf
from tfrec_attn.layers import (
    AdditiveAttention,
    GraphAttention,
    HistoryTopK,
    ItemEmbedding,
    LastPosition,
    LinearAttention,
    LocalAttention,
    LowRankAttention,
    MultiHeadAttention,
    MultimodalFusion,
    PaddingMask,
    PositionEmbedding,
    ScaledDotProductAttention,
    SelfAttentionPooling,
    SinusoidalPositionEmbedding,
    TargetAttention,
    TopKAttention,
    TransformerEncoderBlock,
)

ATTENTION = {
    "mha": lambda: MultiHeadAttention(num_heads=2),
    "additive": lambda: AdditiveAttention(),
    "dot": lambda: ScaledDotProductAttention(),
    "local": lambda: LocalAttention(window=2),
    "linear": lambda: LinearAttention(),
    "low_rank": lambda: LowRankAttention(max_length=8, projection_length=2),
    "top_k": lambda: TopKAttention(k=2),
    "target": lambda: TargetAttention(hidden_units=(4,)),
}
SEQUENCE_LAYERS = {
    **ATTENTION,
    "pooling": lambda: SelfAttentionPooling(num_heads=2),
    "encoder": lambda: TransformerEncoderBlock(num_heads=2),
}
ATTENTION_NAMES = {type(make()).__name__ for make in ATTENTION.values()}
BAD_RANKS = [(2, 3, 5, 8), (2, 8)]


@pytest.mark.parametrize("shape", BAD_RANKS, ids=["rank4", "rank2"])
@pytest.mark.parametrize("make", SEQUENCE_LAYERS.values(), ids=SEQUENCE_LAYERS.keys())
def test_query_of_wrong_rank_raises(make, shape):
    layer = make()
    argument = "query" if type(layer).__name__ in ATTENTION_NAMES else "inputs"
    message = (f"{type(layer).__name__} expects {argument} of rank 3 (batch, length, dim). "
               f"Received: shape {tuple(shape)}")
    with pytest.raises(ValueError, match=re.escape(message)):
        layer(tf.ones(shape))


@pytest.mark.parametrize("make", ATTENTION.values(), ids=ATTENTION.keys())
def test_value_of_wrong_rank_raises_naming_value(make):
    with pytest.raises(ValueError, match=r"expects value of rank 3"):
        make()([tf.ones((2, 4, 8)), tf.ones((2, 4, 2, 8))])


def test_rank_checked_on_later_calls_too():
    """Built on rank 3, a rank-4 call must not fold its extra axis into the batch."""
    layer = MultiHeadAttention(num_heads=2)
    layer(tf.ones((2, 3, 8)))
    with pytest.raises(ValueError, match=r"query of rank 3"):
        layer(tf.ones((2, 3, 5, 8)))


BAD_MASKS = {
    "longer": ((2, 6), r"mask of shape \(2, 5\)"),
    "rank1": ((2,), r"mask of shape \(2, 5\)"),
    "batch": ((3, 5), r"mask of shape \(2, 5\)"),
}


@pytest.mark.parametrize("mask_shape, message", BAD_MASKS.values(), ids=BAD_MASKS.keys())
@pytest.mark.parametrize("make", SEQUENCE_LAYERS.values(), ids=SEQUENCE_LAYERS.keys())
def test_padding_mask_of_wrong_shape_raises(make, mask_shape, message):
    with pytest.raises(ValueError, match=message + r".*Received: shape "
                       + re.escape(str(mask_shape))):
        make()(tf.ones((2, 5, 8)), mask=tf.ones(mask_shape, tf.bool))


@pytest.mark.parametrize("make", ATTENTION.values(), ids=ATTENTION.keys())
def test_value_mask_of_wrong_shape_raises_naming_it(make):
    with pytest.raises(ValueError, match=r"mask\[1\] of shape \(2, 4\)"):
        make()([tf.ones((2, 4, 8)), tf.ones((2, 4, 8))],
               mask=[None, tf.ones((2, 5), tf.bool)])


@pytest.mark.parametrize("attention_mask_shape", [(2, 5, 6), (2, 5), (1, 5, 5)])
def test_attention_mask_of_wrong_shape_raises(attention_mask_shape):
    with pytest.raises(ValueError, match=r"attention_mask of shape \(2, 5, 5\)"):
        MultiHeadAttention(num_heads=2)(tf.ones((2, 5, 8)),
                                        attention_mask=tf.ones(attention_mask_shape, tf.bool))


@pytest.mark.parametrize("inputs", [
    [tf.ones((2, 3, 8)), tf.ones((2, 5, 6))],  # key = value, 6 wide
    [tf.ones((2, 3, 8)), tf.ones((2, 5, 8)), tf.ones((2, 5, 6))],
], ids=["query_value", "query_value_key"])
def test_dot_product_of_different_query_and_key_widths_raises_naming_both(inputs):
    """Without projections the logits are raw `q . k`: a ValueError, not a BatchMatMul error."""
    message = r"ScaledDotProductAttention .* Received: query dim 8, key dim 6"
    with pytest.raises(ValueError, match=message):
        ScaledDotProductAttention()(inputs)


def test_dot_product_values_may_be_wider_than_queries_and_keys():
    query, value, key = tf.ones((2, 3, 8)), tf.ones((2, 5, 6)), tf.ones((2, 5, 8))
    assert ScaledDotProductAttention()([query, value, key]).shape == (2, 3, 6)


@pytest.mark.parametrize("make", ATTENTION.values(), ids=ATTENTION.keys())
def test_key_and_value_of_different_lengths_raise_naming_both(make):
    """A key has one row per value: a ValueError naming both shapes, not a BatchMatMul one."""
    query, value, key = tf.ones((2, 3, 8)), tf.ones((2, 7, 8)), tf.ones((2, 6, 8))
    with pytest.raises(ValueError, match=r"the key's length must equal the value's\. Received: "
                                         r"value shape \(2, 7, 8\), key shape \(2, 6, 8\)"):
        make()([query, value, key])


@pytest.mark.parametrize("make", ATTENTION.values(), ids=ATTENTION.keys())
def test_query_of_another_batch_size_raises(make):
    with pytest.raises(ValueError, match=r"the query's batch size must equal the value's"):
        make()([tf.ones((3, 3, 8)), tf.ones((2, 5, 8))])


@pytest.mark.parametrize("adjacency, mask, message", [
    ((2, 4, 4), None, r"adjacency of shape \(2, 5, 5\) \(batch, N, N\)\. Received: shape "
                      r"\(2, 4, 4\)"),
    ((2, 5, 5), (2, 4), r"mask of shape \(2, 5\) \(batch, N\)\. Received: shape \(2, 4\)"),
], ids=["adjacency", "mask"])
def test_graph_attention_names_an_adjacency_or_mask_of_the_wrong_shape(adjacency, mask, message):
    with pytest.raises(ValueError, match=message):
        GraphAttention()([tf.ones((2, 5, 8)), tf.ones(adjacency)],
                         mask=None if mask is None else tf.ones(mask, tf.bool))


def test_history_top_k_refuses_more_items_than_scored():
    with pytest.raises(ValueError, match=r"HistoryTopK: k=10 is more than the 5 scored items"):
        HistoryTopK(k=10)([tf.ones((1, 5)), tf.constant([[2, 3]], tf.int64)])
    with pytest.raises(ValueError, match=r"k=6 is more than the 5"):
        HistoryTopK(k=2).select(tf.ones((1, 5)), tf.constant([[2]], tf.int64), k=6)


def test_last_position_names_an_input_of_the_wrong_rank():
    with pytest.raises(ValueError, match=r"LastPosition expects inputs of rank 3"):
        LastPosition()(tf.ones((2, 8)))


@pytest.mark.parametrize("make", SEQUENCE_LAYERS.values(), ids=SEQUENCE_LAYERS.keys())
def test_unknown_batch_and_length_still_work(make):
    """Checks use static shapes only: a functional model over `(None, None, 8)` still runs."""
    x = keras.Input((None, 8))
    mask = keras.Input((None,), dtype="bool")
    model = keras.Model([x, mask], make()(x, mask=mask))
    assert model([tf.ones((2, 5, 8)), tf.ones((2, 5), tf.bool)]).shape[0] == 2


@pytest.mark.parametrize("cls", [PositionEmbedding, SinusoidalPositionEmbedding])
def test_position_embedding_rejects_longer_sequences(cls):
    with pytest.raises(ValueError,
                       match=r"sequence length \(5\) exceeds max_length \(2, the model.s max_len"):
        cls(max_length=2)(tf.ones((2, 5, 8)))
    assert cls(max_length=5)(tf.ones((2, 5, 8))).shape == (2, 5, 8)


@pytest.mark.parametrize("length", [3, 7])
@pytest.mark.parametrize("cls", [PositionEmbedding, SinusoidalPositionEmbedding])
def test_position_embedding_rejects_longer_sequences_known_at_run_time(cls, length):
    """A length unknown when the graph is built (a `(None, None)` signature) is checked when it
    runs, naming max_length, not by a shape error of the sliced table."""
    layer = cls(max_length=2)
    add = tf.function(layer, input_signature=[tf.TensorSpec([None, None, 8], tf.float32)])
    assert add(tf.ones((1, 2, 8))).shape == (1, 2, 8)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"longer than max_length=2 \(max_len of the model\)"):
        add(tf.ones((1, length, 8)))


BAD_TYPES = [
    (MultiHeadAttention, {"num_heads": True}, "num_heads"),
    (AdditiveAttention, {"key_dim": True}, "key_dim"),
    (MultiHeadAttention, {"dropout": "0.1"}, "dropout"),
    (ScaledDotProductAttention, {"dropout": "0.1"}, "dropout"),
    (LinearAttention, {"dropout": "0.1"}, "dropout"),
    (SelfAttentionPooling, {"num_heads": True}, "num_heads"),
    (SelfAttentionPooling, {"num_queries": "2"}, "num_queries"),
    (SelfAttentionPooling, {"dropout": "0.1"}, "dropout"),
    (TransformerEncoderBlock, {"num_heads": True}, "num_heads"),
    (TransformerEncoderBlock, {"dropout": "0.1"}, "dropout"),
    (TransformerEncoderBlock, {"intermediate_dim": "8"}, "intermediate_dim"),
    (LowRankAttention, {"max_length": 8, "block_size": True}, "block_size"),
    # A bool is an int to `isinstance`: every integer argument must still refuse one.
    (LinearAttention, {"seed": True}, "seed"),
    (LinearAttention, {"seed": 1.0}, "seed"),
    (LinearAttention, {"num_features": True}, "num_features"),
    (LinearAttention, {"chunk_size": True}, "chunk_size"),
    (TopKAttention, {"k": True}, "k"),
    (ItemEmbedding, {"dim": 4, "vocab_size": True}, "vocab_size"),
    (ItemEmbedding, {"vocab_size": 10, "dim": True}, "dim"),
    (ItemEmbedding, {"vocab_size": 10, "dim": 4.0}, "dim"),
    (PositionEmbedding, {"max_length": True}, "max_length"),
    (SinusoidalPositionEmbedding, {"max_length": True}, "max_length"),
    (HistoryTopK, {"k": True}, "k"),
    (HistoryTopK, {"first_item_id": True}, "first_item_id"),
    (HistoryTopK, {"first_item_id": "2"}, "first_item_id"),
    (PaddingMask, {"pad_id": True}, "pad_id"),
    (PaddingMask, {"pad_id": 0.0}, "pad_id"),
    (GraphAttention, {"version": True}, "version"),
    (GraphAttention, {"version": 2.0}, "version"),
    (GraphAttention, {"num_heads": True}, "num_heads"),
    (MultimodalFusion, {"num_heads": True}, "num_heads"),
]


@pytest.mark.parametrize("cls, kwargs, argument", BAD_TYPES,
                         ids=[f"{c.__name__}-{list(k)[-1]}" for c, k, _ in BAD_TYPES])
def test_wrongly_typed_argument_raises_value_error(cls, kwargs, argument):
    with pytest.raises(ValueError, match=rf"{argument} must be .* Received: {argument}="):
        cls(**kwargs)
