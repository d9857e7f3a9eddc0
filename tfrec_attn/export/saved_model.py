"""SavedModel export of the sequential recommender with TF Serving signatures."""

import json
import os
from pathlib import Path

from tfrec_attn._keras import tf
from tfrec_attn.export.versioning import atomic_version_dir, keep_latest, next_version
from tfrec_attn.models.sasrec import SASRec, build_topk_model


class RecommenderModule(tf.Module):
    """The exported object: the functional top-k model plus its signatures.

    Signatures:
        `serving_default`: `history` int64 `(batch, max_len)` -> `item_ids` int64 `(batch, k)`,
        `scores` float32 `(batch, k)`; history items, padding and OOV ids are never returned.
    """

    def __init__(self, model: SASRec, k: int = 10):
        super().__init__()
        self.max_len = model.config.max_len
        self.vocab_size = model.config.vocab_size
        self.topk = build_topk_model(model.encoder, k=k)
        self.k = k

    def sanitize(self, history: tf.Tensor) -> tf.Tensor:
        """Ids outside `[0, vocab)` become the OOV id (1): documented, never silently wrong."""
        history = tf.cast(history, tf.int64)
        in_range = tf.logical_and(history >= 0, history < self.vocab_size)
        return tf.where(in_range, history, tf.ones_like(history))

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int64, name="history")])
    def serve(self, history):
        outputs = self.topk(self.sanitize(history), training=False)
        return {"item_ids": outputs["item_ids"], "scores": outputs["scores"]}


def export_saved_model(model: SASRec, export_root: str | os.PathLike, name: str = "sasrec",
                       version: int | None = None, k: int = 10, keep: int | None = None,
                       metadata: dict | None = None) -> Path:
    """Exports `model` to `export_root/name/<version>/` atomically (TF Serving layout).

    Args:
        model: a trained `SASRec`.
        export_root: the model base path TF Serving watches (e.g. `saved_models`).
        name: the model name (a directory).
        version: integer version; defaults to one more than the newest.
        k: how many items `serving_default` returns.
        keep: if set, delete all but the `keep` newest versions afterwards.
        metadata: JSON-serializable dict stored in `assets.extra/tfrec_attn.json`.

    Returns:
        The path of the new version directory.
    """
    module = RecommenderModule(model, k=k)
    signatures = {"serving_default": module.serve}
    model_dir = Path(export_root) / name
    version = next_version(model_dir) if version is None else int(version)
    with atomic_version_dir(model_dir, version) as scratch:
        tf.saved_model.save(module, str(scratch), signatures=signatures)
        extra = scratch / "assets.extra"
        extra.mkdir(exist_ok=True)
        info = {"max_len": module.max_len, "vocab_size": module.vocab_size, "k": k,
                "config": model.config.to_dict(), **(metadata or {})}
        (extra / "tfrec_attn.json").write_text(json.dumps(info, indent=2))
    if keep:
        keep_latest(model_dir, keep)
    return model_dir / str(version)
