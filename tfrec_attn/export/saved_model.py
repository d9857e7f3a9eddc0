"""SavedModel export of the sequential recommender with TF Serving signatures."""

import json
import os
from pathlib import Path

import numpy as np

from tfrec_attn._keras import keras, tf
from tfrec_attn.export.module_export import reject_pruning_wrappers
from tfrec_attn.export.versioning import (
    atomic_version_dir,
    check_keep,
    check_version,
    keep_latest,
    next_version,
)
from tfrec_attn.layers import HistoryTopK, ItemEmbedding, LastPosition
from tfrec_attn.layers.masking import ids_to_oov
from tfrec_attn.models.sasrec import SASRec, active_prior
from tfrec_attn.validation import check_model_name

HISTORY = tf.TensorSpec([None, None], tf.int64, name="history")


def at_least_one_position(history: tf.Tensor) -> tf.Tensor:
    """`(batch, T)` ids -> `(batch, max(T, 1))`: an empty history becomes one padding id (0).

    A cold-start request (`T == 0`) then gets the model's prediction for a history of padding
    only, instead of failing on the last position's slice. A length known statically to be
    positive (a TFLite file's fixed `max_len`) adds no op.

    Example:
    >>> at_least_one_position(tf.zeros((2, 0), tf.int64)).numpy().tolist()
    [[0], [0]]
    >>> at_least_one_position(tf.constant([[3, 4]], tf.int64)).numpy().tolist()
    [[3, 4]]
    """
    if history.shape.rank == 2 and history.shape[1]:
        return history
    missing = tf.maximum(1 - tf.shape(history)[1], 0)
    return tf.pad(history, tf.stack([[0, 0], tf.stack([missing, 0])]))


def encoder_item_layer(encoder: keras.Model) -> keras.layers.Layer:
    """The encoder's `ItemEmbedding` as the encoder calls it: the layer itself, or the TFMOT
    wrapper around it (`QuantizeWrapperV2` after `make_qat_model`), found by type."""
    for layer in encoder.layers:
        inner = layer
        while isinstance(inner, keras.layers.Wrapper):
            inner = inner.layer
        if isinstance(inner, ItemEmbedding):
            return layer
    raise ValueError(f"The encoder {encoder.name!r} has no ItemEmbedding layer.")


def item_table(layer: keras.layers.Layer) -> tf.Tensor:
    """The float32 item table `layer` (from `encoder_item_layer`) computes with, in this graph.

    A plain or pruned `ItemEmbedding` reads its variable. Under quantization-aware training the
    wrapper feeds the layer `quantizer(variable)` on every call (TFMOT's `QuantizeWrapperV2`
    keeps `(variable, quantizer, quantizer_vars)` in `_weight_vars`; there is no public
    accessor), so the table is recomputed here with the ranges learned in training, as the
    wrapper's inference call does: the exported QAT model scores with the fake-quantized table.

    Example:
    >>> layer = ItemEmbedding(vocab_size=5, dim=2)
    >>> layer.build((None,))
    >>> item_table(layer).shape
    TensorShape([5, 2])
    """
    weight_vars = getattr(layer, "_weight_vars", None)
    if weight_vars:
        if len(weight_vars) != 1:
            raise ValueError(f"Expected one quantized weight (the item table) in {layer.name}. "
                             f"Received {len(weight_vars)}.")
        weight, quantizer, quantizer_vars = weight_vars[0]
        return tf.cast(quantizer(weight, training=False, weights=quantizer_vars), tf.float32)
    while isinstance(layer, keras.layers.Wrapper):
        layer = layer.layer
    return tf.cast(layer.embeddings, tf.float32)


class RecommenderModule(tf.Module):
    """The exported object: the model's towers plus TF Serving signatures.

    Every signature takes `history`: int64 `(batch, any length >= 0)` item ids,
    left-padded with 0; the encoder reads the last `max_len`, `serving_default` and `recommend`
    exclude all of them, and ids outside `[0, vocab)` are read as OOV (1). An empty history
    (length 0, or padding only: a cold-start user) gets the model's prediction for a history of
    padding only.

    Signatures:
        `serving_default`: `history` -> `item_ids` int64 `(batch, max_k)`, `scores` float32.
            History items, padding, OOV and ids outside the candidate set are never returned:
            when a request leaves fewer than `max_k` eligible items, the slots left over hold
            id `-1` with score `-inf` (after the eligible items).
        `recommend`: `history`, `k` int32 scalar (`1 <= k <= max_k`) -> the same with `k` items.
        `score`: `history`, `candidate_ids` int64 `(batch, C)` (the same `batch`, else an
            `InvalidArgumentError`) -> `scores` float32 `(batch, C)`: the scores
            `serving_default` ranks by (for a model with a transition prior, the mixture's
            log-probabilities).
        `user_embedding`: `history` -> `embedding` float32 `(batch, dim)` (for an external ANN
            index; dot product with `item_embeddings` gives the model's tied scores, without
            a transition prior's share: an ANN index ranks by the embeddings alone).
        `item_embeddings`: `item_ids` int64 `(n,)` -> `embedding` float32 `(n, dim)`.

    A quantization-aware `SASRec` (`optimization.qat_sasrec`) exports the same way: every
    signature computes with the fake-quantized item table (see `item_table`).

    Args:
        model: a trained `SASRec` (float, pruned and `strip_pruning`'d, or
            quantization-aware); an encoder still holding pruning wrappers is a `ValueError`.
        max_k: the largest `k` a request may ask for; at most the number of items
            (`vocab_size - 2`), or of distinct `candidate_ids`.
        candidate_ids: optional ids the recommendations are restricted to (e.g. items in stock);
            re-export with a new set to refresh it without retraining.
    """

    def __init__(self, model: SASRec, max_k: int = 10, candidate_ids=None):
        super().__init__()
        reject_pruning_wrappers(model.encoder, "model.encoder", "model.encoder")
        self.max_len = model.config.max_len
        self.vocab_size = model.config.vocab_size
        items = self.vocab_size - 2
        if isinstance(max_k, bool) or not isinstance(max_k, int | np.integer) or not (
                1 <= max_k <= items):
            raise ValueError(f"k (max_k) must be an int in [1, {items}] (the model's items). "
                             f"Received: k={max_k!r}")
        max_k = int(max_k)
        allowed = np.ones(self.vocab_size, bool)
        if candidate_ids is not None:
            ids = np.asarray(candidate_ids, np.int64)
            if ids.size == 0 or ids.min() < 2 or ids.max() >= self.vocab_size:
                raise ValueError(f"candidate_ids must be non-empty item ids in [2, "
                                 f"{self.vocab_size}). Received {ids.size} ids.")
            count = len(np.unique(ids))
            if max_k > count:
                raise ValueError(f"k (max_k) must be at most the number of candidate_ids "
                                 f"({count} distinct ids): no request could fill more. "
                                 f"Received: k={max_k}")
            allowed[:] = False
            allowed[ids] = True
        self.allowed = tf.constant(allowed)
        self.max_k = max_k
        self.encoder = model.encoder
        self.item_layer = encoder_item_layer(model.encoder)
        self.prior = active_prior(model)  # None: the scores are the tied dot products
        self.last = LastPosition()
        self.top_k = HistoryTopK(k=max_k, mark_unfilled=True)
        self.top_k.build(None)  # used only for `select` (no weights); a built layer
        # saves without TensorFlow's "Skipping full serialization ... not built" warnings

    def sanitize(self, history: tf.Tensor) -> tf.Tensor:
        """Keeps the last `max_len` ids; ids outside `[0, vocab)` become OOV (1)."""
        return ids_to_oov(tf.cast(history, tf.int64)[:, -self.max_len:], self.vocab_size)

    def _state(self, history):
        return self.last(self.encoder(at_least_one_position(history), training=False))

    def _top_k(self, history, k):
        # The encoder reads the last `max_len` ids; every id of the request is excluded, as
        # offline evaluation excludes the whole history (a longer history is not truncated).
        every_id = ids_to_oov(tf.cast(history, tf.int64), self.vocab_size)
        state = self._state(every_id[:, -self.max_len:])
        scores = self._mixed(self.item_layer(state, mode="score", training=False),
                             every_id[:, -self.max_len:])  # the ids the Keras model reads
        ids, scores = self.top_k.select(scores, every_id, k=k, allowed=self.allowed[None, :])
        return {"item_ids": ids, "scores": scores}

    def _mixed(self, scores, history):
        """The catalogue scores the model ranks by: with a transition prior, its mixture."""
        return scores if self.prior is None else self.prior([scores, history])

    @tf.function(input_signature=[HISTORY])
    def serve(self, history):
        return self._top_k(history, self.max_k)

    @tf.function(input_signature=[HISTORY, tf.TensorSpec([], tf.int32, name="k")])
    def recommend(self, history, k):
        tf.debugging.assert_greater_equal(k, 1, message="k must be at least 1")
        tf.debugging.assert_less_equal(k, self.max_k, message=f"k must be <= {self.max_k}")
        return self._top_k(history, k)

    @tf.function(input_signature=[HISTORY,
                                  tf.TensorSpec([None, None], tf.int64, name="candidate_ids")])
    def score(self, history, candidate_ids):
        # Signatures do not check that the batches match; without this a batch of 1 would
        # broadcast against the other input (as `RankerModule._checked` refuses for DIN).
        same_batch = tf.debugging.assert_equal(
            tf.shape(history)[0], tf.shape(candidate_ids)[0],
            message="history and candidate_ids must have the same batch size")
        with tf.control_dependencies([same_batch]):
            history = tf.identity(history)
        history = self.sanitize(history)
        state = self._state(history)
        candidate_ids = ids_to_oov(candidate_ids, self.vocab_size)
        if self.prior is not None:  # the mixture needs the whole catalogue's scores
            full = self._mixed(self.item_layer(state, mode="score", training=False), history)
            return {"scores": tf.gather(full, candidate_ids, batch_dims=1)}
        table = item_table(self.item_layer)
        candidates = tf.gather(table, candidate_ids)
        scores = tf.reduce_sum(candidates * tf.cast(state, tf.float32)[:, None, :], axis=-1)
        return {"scores": scores}

    @tf.function(input_signature=[HISTORY])
    def user_embedding(self, history):
        return {"embedding": tf.cast(self._state(self.sanitize(history)), tf.float32)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="item_ids")])
    def item_embeddings(self, item_ids):
        table = item_table(self.item_layer)
        return {"embedding": tf.gather(table, ids_to_oov(item_ids, self.vocab_size))}

    def signatures(self) -> dict:
        return {"serving_default": self.serve, "recommend": self.recommend,
                "score": self.score, "user_embedding": self.user_embedding,
                "item_embeddings": self.item_embeddings}


def export_saved_model(model: SASRec, export_root: str | os.PathLike, name: str = "sasrec",
                       version: int | None = None, k: int = 10, keep: int | None = None,
                       metadata: dict | None = None, candidate_ids=None,
                       warmup_histories=None) -> Path:
    """Exports `model` to `export_root/name/<version>/` atomically (TF Serving layout).

    Args:
        model: a trained `SASRec`.
        export_root: the model base path TF Serving watches (e.g. `saved_models`).
        name: the model name: one directory (`validation.check_model_name`).
        version: integer version `>= 0`; defaults to one more than the newest.
        k: the most items a request can get (`serving_default` returns exactly `k`, id `-1`
            with score `-inf` in the slots no eligible item fills); at most the number of
            items, or of distinct `candidate_ids` (a `ValueError` otherwise).
        keep: if set, delete all but the `keep` newest versions afterwards.
        metadata: JSON-serializable dict stored in `assets.extra/tfrec_attn.json`.
        candidate_ids: restrict recommendations to these ids (see `RecommenderModule`).
        warmup_histories: `(n, max_len)` real histories written as TF Serving warm-up requests
            (`assets.extra/tf_serving_warmup_requests`).

    Returns:
        The path of the new version directory.
    """
    from tfrec_attn.export.serving import write_warmup_requests  # serving imports this module

    check_model_name(name)
    if version is not None:
        check_version(version)
    check_keep(keep)
    module = RecommenderModule(model, max_k=k, candidate_ids=candidate_ids)  # checks k
    model_dir = Path(export_root) / name
    version = next_version(model_dir) if version is None else check_version(version)
    with atomic_version_dir(model_dir, version) as scratch:
        tf.saved_model.save(module, str(scratch), signatures=module.signatures())
        extra = scratch / "assets.extra"
        extra.mkdir(exist_ok=True)
        info = {"max_len": module.max_len, "vocab_size": module.vocab_size, "k": module.max_k,
                "signatures": sorted(module.signatures()),
                "config": model.config.to_dict(), **(metadata or {})}
        (extra / "tfrec_attn.json").write_text(json.dumps(info, indent=2))
        if warmup_histories is not None:
            write_warmup_requests(extra / "tf_serving_warmup_requests", warmup_histories,
                                  model_name=name)
    keep_latest(model_dir, keep)
    return model_dir / str(version)
