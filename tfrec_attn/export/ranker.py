"""SavedModel export of the DIN ranker (`models.din`) with TF Serving signatures.

The DIN tower scores one `(history, candidate)` pair per row. A ranking request brings one
history and `C` candidates, so the signatures tile each history `C` times, score the
`batch * C` pairs in one tower call and reshape to `(batch, C)`: the same values the Keras tower
gives pair by pair, with `C` free per request.
"""

import os
from pathlib import Path

import numpy as np

from tfrec_attn._keras import keras, tf
from tfrec_attn.export.module_export import reject_pruning_wrappers, save_versioned_module
from tfrec_attn.export.saved_model import encoder_item_layer
from tfrec_attn.export.serving import write_warmup_requests
from tfrec_attn.layers.masking import fill_masked, ids_to_oov
from tfrec_attn.models.din import DIN

HISTORY = tf.TensorSpec([None, None], tf.int64, name="history")
CANDIDATES = tf.TensorSpec([None, None], tf.int64, name="candidates")
FIRST_ITEM_ID = 2  # 0 is padding, 1 OOV


def din_tower(model_or_tower: DIN | keras.Model) -> tuple[keras.Model, dict | None]:
    """`(tower, config dict or None)` from a `DIN` or a DIN tower (plain, stripped, QAT).

    Example:
    >>> from tfrec_attn.models import DINConfig
    >>> tower, config = din_tower(DIN(DINConfig(vocab_size=9, max_len=3, dim=4)))
    >>> tower.name, config["max_len"]
    ('din_tower', 3)
    """
    if isinstance(model_or_tower, DIN):
        return model_or_tower.tower, model_or_tower.config.to_dict()
    inputs = model_or_tower.inputs if isinstance(model_or_tower, keras.Model) else None
    if {tensor.name for tensor in inputs or []} != {"history", "candidate"}:
        raise ValueError("model_or_tower must be a DIN or a DIN tower (a functional model with "
                         "inputs {'history', 'candidate'}, see build_din_tower). "
                         f"Received: {model_or_tower!r}")
    reject_pruning_wrappers(model_or_tower, "model_or_tower", "tower")
    return model_or_tower, None


def tower_sizes(tower: keras.Model) -> tuple[int, int]:
    """`(max_len, vocab_size)` of a DIN tower: its history width and item table rows."""
    max_len = next(tensor for tensor in tower.inputs if tensor.name == "history").shape[1]
    item_layer = encoder_item_layer(tower)
    while isinstance(item_layer, keras.layers.Wrapper):
        item_layer = item_layer.layer
    return int(max_len), int(item_layer.vocab_size)


def fit_history(history: tf.Tensor, max_len: int) -> tf.Tensor:
    """`(batch, T)` ids -> `(batch, max_len)`: the last `max_len`, left-padded with 0."""
    history = tf.cast(history, tf.int64)
    missing = tf.maximum(max_len - tf.shape(history)[1], 0)
    padding = tf.zeros(tf.stack([tf.shape(history)[0], missing]), tf.int64)
    return tf.reshape(tf.concat([padding, history], axis=1)[:, -max_len:], [-1, max_len])


def score_candidates(tower: keras.Model, history: tf.Tensor, candidates: tf.Tensor,
                     vocab_size: int) -> tf.Tensor:
    """Click logits float32 `(batch, C)` of every candidate for its row's history.

    `history` is `(batch, max_len)`; ids outside `[0, vocab_size)` in either input are scored
    as OOV (1). Built from builtin TFLite ops only (`TILE`, `RESHAPE`, `SELECT_V2`).

    Example:
    >>> from tfrec_attn.models import DINConfig, build_din_tower
    >>> tower = build_din_tower(DINConfig(vocab_size=9, max_len=3, dim=4, mlp_units=(4,)))
    >>> score_candidates(tower, tf.constant([[0, 2, 3]], tf.int64),
    ...                  tf.constant([[4, 5, 6, 7]], tf.int64), vocab_size=9).shape
    TensorShape([1, 4])
    """
    max_len = history.shape[1]
    history = ids_to_oov(history, vocab_size)
    candidates = ids_to_oov(candidates, vocab_size)
    count = candidates.shape[1]
    if count:  # a fixed C (TFLite): static shapes
        tiles, shape = [1, count, 1], [-1, count]
    else:  # C read at run time (`[-1, 0]` would be ambiguous, so the batch is read too)
        count = tf.shape(candidates)[1]
        tiles, shape = tf.stack([1, count, 1]), tf.stack([tf.shape(candidates)[0], count])
    rows = tf.reshape(tf.tile(history[:, None, :], tiles), [-1, max_len])
    logits = tower({"history": rows, "candidate": tf.reshape(candidates, [-1])},
                   training=False)
    return tf.reshape(tf.cast(logits, tf.float32), shape)


class RankerModule(tf.Module):
    """The exported DIN ranker: the tower plus TF Serving signatures.

    Inputs of both signatures: `history` int64 `(batch, any length)` item ids, left-padded with
    0 (the last `max_len` are read; shorter rows are padded), and `candidates` int64
    `(batch, C)`, `C` free per request. Ids outside `[0, vocab_size)` are read as OOV (1).

    Signatures:
        `serving_default`: -> `scores` float32 `(batch, C)`, the click logit of every
            candidate. Padding (0) gets a meaningless logit, and OOV (1) and ids outside the
            vocabulary the OOV embedding's, which scores no particular item: a client that
            sorts these scores itself should put them last, as `rank` does.
        `rank`: -> `item_ids` int64 `(batch, k)` (the request's candidate ids, as sent) and
            `scores` float32 `(batch, k)`, best first, `k = min(max_k, C)`. Candidates the
            model does not know, padding (0), OOV (1) and ids the vocabulary cannot hold
            (`< 0` or `>= vocab_size`), rank below every known item, with a score below the
            row's lowest known logit, and come back unchanged (so the client sees which it
            sent): the OOV embedding scores no particular item, so an unknown item it scores
            never outranks a known one.

    Args:
        model_or_tower: a trained `DIN`, or its tower: plain, pruned (after `strip_pruning`) or
            quantization-aware (`make_qat_model`).
        max_k: the most candidates `rank` returns.

    Example:
    >>> from tfrec_attn.models import DINConfig
    >>> module = RankerModule(DIN(DINConfig(vocab_size=9, max_len=3, dim=4)), max_k=2)
    >>> out = module.rank(tf.constant([[2, 3]], tf.int64), tf.constant([[4, 0, 5]], tf.int64))
    >>> out["item_ids"].shape, 0 in out["item_ids"].numpy()
    (TensorShape([1, 2]), False)
    """

    def __init__(self, model_or_tower: DIN | keras.Model, max_k: int = 10):
        super().__init__()
        if isinstance(max_k, bool) or not isinstance(max_k, int) or max_k < 1:
            raise ValueError(f"max_k must be a positive int. Received: max_k={max_k!r}")
        self.tower, self.config = din_tower(model_or_tower)
        self.max_len, self.vocab_size = tower_sizes(self.tower)
        self.max_k = max_k

    def _checked(self, history, candidates):
        """The inputs, checked at run time (signatures do not check ranks themselves)."""
        history = tf.ensure_shape(history, [None, None], name="check_history_rank")
        candidates = tf.ensure_shape(candidates, [None, None], name="check_candidates_rank")
        same_batch = tf.debugging.assert_equal(
            tf.shape(history)[0], tf.shape(candidates)[0],
            message="history and candidates must have the same batch size")
        with tf.control_dependencies([same_batch]):
            return tf.identity(history), tf.identity(candidates)

    def _scores(self, history, candidates):
        return score_candidates(self.tower, fit_history(history, self.max_len), candidates,
                                self.vocab_size)

    @tf.function(input_signature=[HISTORY, CANDIDATES])
    def serve(self, history, candidates):
        return {"scores": self._scores(*self._checked(history, candidates))}

    @tf.function(input_signature=[HISTORY, CANDIDATES])
    def rank(self, history, candidates):
        history, candidates = self._checked(history, candidates)
        real = tf.logical_and(candidates >= FIRST_ITEM_ID, candidates < self.vocab_size)
        scores = fill_masked(self._scores(history, candidates), real, 1.0)
        k = tf.minimum(self.max_k, tf.shape(candidates)[1])
        top_scores, order = tf.math.top_k(scores, k=k)
        return {"item_ids": tf.gather(candidates, order, batch_dims=1), "scores": top_scores}

    def signatures(self) -> dict:
        return {"serving_default": self.serve, "rank": self.rank}


def _warmup_writer(warmup, name: str):
    """A `write_warmup` callback for `save_versioned_module`, or `None` without `warmup`."""
    if warmup is None:
        return None
    if not isinstance(warmup, dict) or set(warmup) != {"history", "candidates"}:
        raise ValueError("warmup must be a dict {'history': (n, max_len), 'candidates': (n, C)} "
                         f"of real request rows. Received: {type(warmup).__name__}")
    history, candidates = (np.asarray(warmup[key]) for key in ("history", "candidates"))
    for key, rows in (("history", history), ("candidates", candidates)):
        if rows.ndim != 2 or rows.dtype.kind not in "iu":
            raise ValueError(f"warmup[{key!r}] must be an integer array (n, ...) of real ids. "
                             f"Received dtype {rows.dtype}, shape {rows.shape}")
    return lambda path: write_warmup_requests(path, history, model_name=name,
                                              candidates=candidates)


def export_ranker(model_or_tower: DIN | keras.Model, export_root: str | os.PathLike,
                  name: str = "din", version: int | None = None, keep: int | None = None,
                  metadata: dict | None = None, warmup: dict | None = None,
                  max_k: int = 10) -> Path:
    """Exports the DIN ranker to `export_root/name/<version>/` atomically (TF Serving layout).

    Args:
        model_or_tower: a trained `DIN` or its tower (see `RankerModule`).
        export_root: the model base path TF Serving watches.
        name: the model name (a directory).
        version: integer version `>= 0`; defaults to one more than the newest.
        keep: if set, delete all but the `keep` newest versions afterwards.
        metadata: JSON-serializable dict merged into `assets.extra/tfrec_attn.json` (which holds
            `config` (`None` for a bare tower: pass `metadata={"config": ...}`), `max_len`,
            `vocab_size`, `max_k` and the signature names).
        warmup: `{"history": (n, max_len), "candidates": (n, C)}` real request rows, written as
            TF Serving warm-up requests for `serving_default`.
        max_k: the most candidates the `rank` signature returns.

    Returns:
        The path of the new version directory.

    Example:
    >>> import tempfile
    >>> from tfrec_attn.models import DINConfig
    >>> din = DIN(DINConfig(vocab_size=9, max_len=3, dim=4, mlp_units=(4,)))
    >>> export_ranker(din, tempfile.mkdtemp(), max_k=2).parts[-2:]
    ('din', '1')
    """
    module = RankerModule(model_or_tower, max_k=max_k)
    info = {"config": module.config, "max_len": module.max_len,
            "vocab_size": module.vocab_size, "max_k": max_k, **(metadata or {})}
    return save_versioned_module(module, module.signatures(), export_root, name, version=version,
                                 keep=keep, info=info,
                                 write_warmup=_warmup_writer(warmup, name))
