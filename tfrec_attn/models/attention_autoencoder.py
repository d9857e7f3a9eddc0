"""Attention autoencoder for collaborative filtering: a user's item set -> catalogue scores.

A denoising autoencoder in the spirit of Mult-DAE (Liang et al., 2018) whose encoder is a set
Transformer: the input items are corrupted (`ItemDropout`), embedded (`ItemEmbedding`), mixed by
non-causal `TransformerEncoderBlock`s and pooled by `SelfAttentionPooling` into a code of
`bottleneck` vectors; the decoder maps the code back to the embedding space and scores every
item against the (tied) item table. Training maximizes the multinomial log-likelihood of the
user's whole item set.

Training path: a plain functional `keras.Model` compiled with `multinomial_loss()` (Mult-DAE's
multinomial log-likelihood of the multi-hot target), so `model.fit` takes the
`(items, multi_hot)` batches of `data.item_sets.make_item_set_dataset` and TFMOT prunes /
quantizes the model itself. No TFRS task is used: `tasks.Retrieval`'s in-batch softmax is not a
multinomial over a multi-hot target, and `tasks.Ranking` would only wrap the same Keras loss
(while a `tfrs.Model` would need SASRec's tower swapping to be pruned or quantized).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tfrec_attn._keras import keras, tf
from tfrec_attn.data.item_sets import item_set
from tfrec_attn.data.sequences import pad_left
from tfrec_attn.data.vocabulary import FIRST_ITEM_ID, OOV_ID
from tfrec_attn.layers import (
    HistoryTopK,
    ItemDropout,
    ItemEmbedding,
    PaddingMask,
    PositionEmbedding,
    SelfAttentionPooling,
    TransformerEncoderBlock,
    top_k_outputs,
)
from tfrec_attn.registry import register
from tfrec_attn.validation import (
    check_heads_divide,
    check_optional_positive_int,
    check_positive_ints,
    check_rate,
)

RECOMMEND_BATCH = 1024  # users scored per call by `recommend_from_item_sets`


@dataclasses.dataclass
class AttentionAutoencoderConfig:
    """Hyper-parameters of the attention autoencoder.

    Args:
        vocab_size: number of item ids including padding (0) and OOV (1).
        max_len: most items of a user the model reads (the most recent ones).
        dim: embedding, hidden and code size.
        num_heads: attention heads of the blocks and the pooling.
        num_blocks: non-causal Transformer blocks (0: the pooling reads the embeddings).
        corruption: probability of dropping each input item while training (`ItemDropout`);
            Mult-DAE uses 0.5.
        bottleneck: learned pooling queries; the code is `bottleneck * dim` values.
        dropout: dropout in the blocks, on the embeddings and on the attention pooling.
        ffn_dim: feed-forward width of the blocks; `None` means `dim`.
        decoder_activation: activation of the decoder's hidden layer; `None` (linear, the
            default) learned faster than Mult-DAE's `"tanh"` on the synthetic data.
        tied: score items against the input embedding table (`ItemEmbedding(mode="score")`);
            `False` uses a separate `Dense(vocab_size)` output layer.
        positional: add a learned (recency) position embedding; off by default, as a set has
            no order.
        l2: L2 penalty on looked-up embeddings.
    """

    vocab_size: int
    max_len: int = 50
    dim: int = 64
    num_heads: int = 1
    num_blocks: int = 1
    corruption: float = 0.5
    bottleneck: int = 1
    dropout: float = 0.1
    ffn_dim: int | None = None
    decoder_activation: str | None = None
    tied: bool = True
    positional: bool = False
    l2: float = 0.0

    def __post_init__(self):
        check_positive_ints(self, ("vocab_size", "max_len", "dim", "num_heads", "bottleneck"))
        if self.vocab_size <= FIRST_ITEM_ID:
            raise ValueError(f"vocab_size must exceed {FIRST_ITEM_ID} (padding and OOV ids). "
                             f"Received: vocab_size={self.vocab_size}")
        if isinstance(self.num_blocks, bool) or not isinstance(self.num_blocks, int) \
                or self.num_blocks < 0:
            raise ValueError("num_blocks must be a non-negative int. "
                             f"Received: num_blocks={self.num_blocks!r}")
        check_rate("corruption", self.corruption)
        check_rate("dropout", self.dropout)
        check_optional_positive_int("ffn_dim", self.ffn_dim)
        check_heads_divide(self.dim, self.num_heads)
        if self.l2 < 0:
            raise ValueError(f"l2 must be non-negative. Received: l2={self.l2}")
        keras.activations.get(self.decoder_activation)  # raises ValueError on unknown names

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def build_attention_autoencoder(config: AttentionAutoencoderConfig | dict) -> keras.Model:
    """Item set ids `(batch, max_len)` (0 = padding, any order) -> logits `(batch, vocab_size)`.

    A functional model: TFMOT can prune and quantize it, `model.save` / SavedModel reload it.
    The padding mask is derived from the *corrupted* ids (dropped items are padding) and passed
    explicitly to every block and to the pooling. Without `positional` the scores do not depend
    on the order of the items or where the padding sits. The tied `item_embedding` layer is
    called twice (ids in, scores out); a pruning wrapper on it therefore advances its step twice
    per training batch (its sparsity schedule runs one step ahead).

    Example:
    >>> model = build_attention_autoencoder(AttentionAutoencoderConfig(20, max_len=4, dim=8))
    >>> model(tf.constant([[0, 2, 5, 7]], tf.int64)).shape
    TensorShape([1, 20])
    """
    if isinstance(config, dict):
        config = AttentionAutoencoderConfig(**config)
    items = keras.Input((config.max_len,), dtype="int64", name="items")
    corrupted = ItemDropout(config.corruption, name="item_dropout")(items)
    padding = PaddingMask(name="padding_mask")(corrupted)
    embedding = ItemEmbedding(config.vocab_size, config.dim, scale_by_dim=True, l2=config.l2,
                              name="item_embedding")
    x = embedding(corrupted)
    if config.positional:
        x = PositionEmbedding(config.max_len, name="position_embedding")(x)
    x = keras.layers.Dropout(config.dropout, name="embedding_dropout")(x)
    for i in range(config.num_blocks):
        x = TransformerEncoderBlock(
            num_heads=config.num_heads, intermediate_dim=config.ffn_dim, dropout=config.dropout,
            causal=False, name=f"block_{i}")(x, mask=padding)
    if config.num_blocks:
        x = keras.layers.LayerNormalization(epsilon=1e-6, name="final_norm")(x)
    code = SelfAttentionPooling(num_heads=config.num_heads, num_queries=config.bottleneck,
                                dropout=config.dropout, name="pooling")(x, mask=padding)
    if config.bottleneck > 1:
        code = keras.layers.Flatten(name="flatten_code")(code)
    hidden = keras.layers.Dense(config.dim, activation=config.decoder_activation,
                                name="decoder")(code)
    if config.tied:
        logits = embedding(hidden, mode="score")
    else:
        logits = keras.layers.Dense(config.vocab_size, name="output_scores")(hidden)
    return keras.Model(items, logits, name="attention_autoencoder")


@register()
class MultinomialLoss(keras.losses.Loss):
    """Mult-DAE's loss: `-sum_i y_i log softmax(logits)_i` per user (`y` the multi-hot of the
    user's items, not normalized, as in Liang et al., 2018), averaged over the batch.

    Hand-written with `log_softmax`: Keras' `CategoricalCrossentropy(from_logits=True)` gives
    the same value but TF's fused `softmax_cross_entropy_with_logits` backpropagates
    `softmax - y`, the gradient only when `y` sums to 1: with multi-hot targets the training
    loss of this model rose from 64 to 285 in 8 epochs on synthetic sets.

    Example:
    >>> loss = MultinomialLoss()
    >>> round(float(loss([[0.0, 1.0, 1.0]], [[0.0, 0.0, 0.0]])), 4)  # 2 * log(3)
    2.1972
    """

    def __init__(self, name: str = "multinomial_nll", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        log_probs = tf.nn.log_softmax(tf.cast(y_pred, tf.float32), axis=-1)
        return -tf.reduce_sum(tf.cast(y_true, tf.float32) * log_probs, axis=-1)


def multinomial_loss() -> MultinomialLoss:
    """The training loss of `build_attention_autoencoder` models (`MultinomialLoss`)."""
    return MultinomialLoss()


def build_topk_autoencoder(model: keras.Model, k: int = 10,
                           exclude_history: bool = True) -> keras.Model:
    """Items `(batch, max_len)` -> `{"item_ids": (batch, k) int64, "scores": (batch, k)}`.

    The serving graph (input items, padding and OOV never returned), sharing `model`'s layers;
    `export.convert_to_tflite` converts it as it is.

    Example:
    >>> model = build_attention_autoencoder(AttentionAutoencoderConfig(20, max_len=4, dim=8))
    >>> build_topk_autoencoder(model, k=3)(tf.constant([[0, 2, 5, 7]]))["item_ids"].shape
    TensorShape([1, 3])
    """
    outputs = top_k_outputs(model.output, model.input, k=k, exclude_history=exclude_history)
    return keras.Model(model.input, outputs, name="attention_autoencoder_topk")


def _item_set_rows(histories, vocab_size: int) -> list[np.ndarray]:
    """One int64 array of distinct ids per user, as `export.read_item_sets` reads a request:
    ids outside `[0, vocab_size)` become OOV (1), padding (0) is dropped, repeats collapse to
    the most recent occurrence. Non-integer ids are refused (a float would be truncated)."""
    rows = []
    for user, history in enumerate(histories):
        row = np.asarray(history).ravel()
        if row.size and (row.dtype.kind not in "iu"):
            raise ValueError(f"histories must hold integer item ids. Received dtype {row.dtype} "
                             f"for user {user}")
        row = row.astype(np.int64)
        row = np.where((row < 0) | (row >= vocab_size), OOV_ID, row)
        rows.append(item_set(row[row != 0]))
    return rows


def recommend_from_item_sets(model: keras.Model, histories, k: int = 10) -> dict[str, np.ndarray]:
    """Top-`k` items for each user, never one of the user's input items.

    The same answer as the exported model's `serving_default` (`export.export_autoencoder`):
    ids outside `[0, vocab_size)` are read as OOV (1), and when a user leaves fewer than `k`
    eligible items (real ids not in the history), the slots left over hold id `-1` with score
    `-inf` (after the eligible items); padding, OOV and the user's items are never returned.

    Args:
        model: from `build_attention_autoencoder` (trained), or any functional model from
            left-padded ids `(batch, T)` to catalogue scores `(batch, vocab)`, `vocab` fixed.
        histories: one array of integer item ids per user (chronological or a set), or an
            `(n, T)` int array padded with 0. The model reads the most recent `max_len` items;
            every item of the history is excluded, including those beyond `max_len`.
        k: how many items to return, at most the number of real items (`vocab - 2`).

    Returns:
        `{"item_ids": int64 (n, k), "scores": float32 (n, k)}`, best first.

    Example:
    >>> model = build_attention_autoencoder(AttentionAutoencoderConfig(12, max_len=4, dim=8))
    >>> out = recommend_from_item_sets(model, [np.array([2, 3, 4, 5, 6])], k=3)
    >>> out["item_ids"].shape, bool(np.isin(out["item_ids"], [0, 1, 2, 3, 4, 5, 6]).any())
    ((1, 3), False)
    >>> out = recommend_from_item_sets(model, [np.arange(2, 11)], k=3)  # one item left: 11
    >>> out["item_ids"].tolist(), bool(np.isinf(out["scores"][0, 1:]).all())
    ([[11, -1, -1]], True)
    """
    vocab_size = model.output_shape[-1] if isinstance(model.output_shape, tuple) else None
    if vocab_size is None:
        raise ValueError("model must output catalogue scores (batch, vocab) with a fixed vocab. "
                         f"Received output shape {model.output_shape}")
    items = vocab_size - FIRST_ITEM_ID
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= items:
        raise ValueError(f"k must be a positive int of at most {items} (the number of real "
                         f"items). Received: k={k!r}")
    rows = _item_set_rows(histories, vocab_size)
    if not rows:
        raise ValueError("histories is empty: give at least one user's item ids.")
    full = pad_left(rows, max(1, max((len(r) for r in rows), default=1)))
    max_len = model.input.shape[1]
    inputs = full if max_len is None else pad_left(rows, max_len)
    top_k = HistoryTopK(k=int(k), mark_unfilled=True)
    ids, scores = [], []
    for start in range(0, len(rows), RECOMMEND_BATCH):  # bounded memory: (batch, vocab) scores
        batch = slice(start, start + RECOMMEND_BATCH)
        batch_scores = model(tf.constant(inputs[batch]), training=False)
        batch_ids, batch_top = top_k([batch_scores, tf.constant(full[batch])])
        ids.append(batch_ids.numpy())
        scores.append(batch_top.numpy())
    return {"item_ids": np.concatenate(ids), "scores": np.concatenate(scores)}
