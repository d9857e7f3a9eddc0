"""Top-k over catalogue scores with the user's history (and padding/OOV ids) excluded."""

import numpy as np

from tfrec_attn._keras import keras, tf
from tfrec_attn.layers.masking import fill_masked
from tfrec_attn.layers.utils import scatter_rows
from tfrec_attn.registry import register
from tfrec_attn.validation import check_bool, check_int, check_positive_int

UNFILLED_ID = -1  # the id of a top-k slot no eligible item fills (`mark_unfilled=True`)


@register()
class HistoryTopK(keras.layers.Layer):
    """`[scores (batch, vocab), history (batch, T)]` -> `(top_ids (batch, k), top_scores)`.

    Items in the history and the reserved ids below `first_item_id` get a large negative score
    before `top_k`, so they are never recommended (unless `exclude_history=False`). Uses only
    TFLite builtin ops (`SCATTER_ND`, `SELECT`, `TOPK_V2`). Excluded ids get the row's
    lowest score minus one, not a huge constant, so int8 quantization keeps the scores' range.

    When fewer than `k` items are eligible (a history covering most of the catalogue), the
    slots left over hold excluded ids, ranked after every eligible item, with that low score
    (the default: the scores keep their range, which int8 TFLite files need). With
    `mark_unfilled=True` they hold id `-1` (`UNFILLED_ID`) and score `-inf` instead, so an
    excluded id is never returned (the SavedModel signatures' contract).

    Args:
        k: int. How many items to return.
        exclude_history: bool. Drop the items in the history.
        first_item_id: int. Ids below it (padding, OOV) are never returned. Defaults to `2`.
        mark_unfilled: bool. Fill the slots no eligible item fills with id `-1` and score
            `-inf`. Defaults to `False`.

    Call arguments:
        inputs: `[scores, history]`.

    Returns:
        `(ids int64 (batch, k), scores float32 (batch, k))`.

    Example:
    >>> from tfrec_attn._keras import tf
    >>> ids, _ = HistoryTopK(k=2)([tf.constant([[9., 8., 1., 5., 3.]]), tf.constant([[0, 3]])])
    >>> ids.numpy().tolist()
    [[4, 2]]
    >>> ids, scores = HistoryTopK(k=3, mark_unfilled=True)(
    ...     [tf.constant([[9., 8., 1., 5.]]), tf.constant([[0, 3]])])
    >>> ids.numpy().tolist(), scores.numpy().tolist()
    ([[2, -1, -1]], [[1.0, -inf, -inf]])
    """

    def __init__(self, k: int = 10, exclude_history: bool = True, first_item_id: int = 2,
                 mark_unfilled: bool = False, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("k", k)
        check_int("first_item_id", first_item_id)
        check_bool("exclude_history", exclude_history)
        check_bool("mark_unfilled", mark_unfilled)
        self.k = k
        self.exclude_history = exclude_history
        self.first_item_id = first_item_id
        self.mark_unfilled = mark_unfilled

    def call(self, inputs):
        return self.select(*inputs)

    def select(self, scores, history, k=None, allowed=None):
        """`(top_ids int64 (batch, k), top_scores float32)` of the eligible items.

        Args:
            scores: `(batch, vocab)` catalogue scores.
            history: `(batch, T)` ids to exclude.
            k: int or int32 scalar tensor; defaults to the layer's `k`.
            allowed: optional boolean `(batch | 1, vocab)`: only these ids are eligible (e.g.
                a candidate set).
        """
        wanted = self.k if k is None else k
        width = scores.shape[-1]
        if isinstance(wanted, int | np.integer) and width is not None and wanted > width:
            raise ValueError(f"HistoryTopK: k={wanted} is more than the {width} scored items "
                             f"(scores shape {tuple(scores.shape)}); use k <= {width}.")
        keep = self.eligible(scores, history)
        if allowed is not None:
            keep = tf.logical_and(keep, allowed)
        top_scores, top_ids = tf.math.top_k(fill_masked(tf.cast(scores, tf.float32), keep, 1.0),
                                            k=wanted)
        top_ids = tf.cast(top_ids, tf.int64)
        if self.mark_unfilled:
            keep = tf.broadcast_to(keep, tf.shape(scores))
            filled = tf.gather(keep, top_ids, batch_dims=1)
            top_ids = tf.where(filled, top_ids, tf.constant(UNFILLED_ID, tf.int64))
            top_scores = tf.where(filled, top_scores, tf.constant(-float("inf"), tf.float32))
        return top_ids, top_scores

    def eligible(self, scores, history):
        """Boolean `(batch | 1, vocab)`: `True` for the ids that may be returned."""
        vocab = tf.shape(scores)[1]
        allowed = tf.range(vocab)[None, :] >= self.first_item_id
        if not self.exclude_history:
            return allowed
        history = tf.cast(history, tf.int32)
        # Out-of-range ids become padding (0, never returned anyway); clipping them to
        # `vocab - 1` would silently exclude the last real item.
        in_range = tf.logical_and(history >= 0, history < vocab)
        ids = tf.where(in_range, history, tf.zeros_like(history))
        # int32 counts: TFLite's int8 SCATTER_ND would turn float ones into quantized noise.
        seen = scatter_rows(ids, tf.ones_like(ids), vocab)
        return tf.logical_and(allowed, seen < 1)

    def get_prunable_weights(self) -> list:
        return []

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(k=self.k, exclude_history=self.exclude_history,
                      first_item_id=self.first_item_id, mark_unfilled=self.mark_unfilled)
        return config


def top_k_outputs(scores, history, k: int = 10, exclude_history: bool = True,
                  mark_unfilled: bool = False) -> dict:
    """`{"item_ids", "scores"}`: the outputs of a functional top-k serving model.

    tf-keras names a functional model's outputs after the layers producing them, so the two
    outputs of one `HistoryTopK` would reach a saved signature (`tf.saved_model.save`,
    `keras.models.save_model`) as `top_k` and `top_k_1`. Each goes through an identity layer
    named like its key instead: the signature's outputs are `item_ids` and `scores`, as in
    `export_saved_model`'s.

    Args:
        scores: Keras tensor `(batch, vocab)`, catalogue scores.
        history: Keras tensor `(batch, T)`, the ids to exclude.
        k, exclude_history, mark_unfilled: as `HistoryTopK`'s.

    Example:
    >>> scores = keras.Input((5,))
    >>> history = keras.Input((2,), dtype="int64")
    >>> keras.Model([scores, history], top_k_outputs(scores, history, k=2)).output_names
    ['item_ids', 'scores']
    """
    top_ids, top_scores = HistoryTopK(k=k, exclude_history=exclude_history,
                                      mark_unfilled=mark_unfilled, name="top_k")([scores, history])
    # float32 like `HistoryTopK`'s scores: a mixed global policy would cast them to float16.
    return {name: keras.layers.Identity(name=name, dtype="float32")(tensor)
            for name, tensor in (("item_ids", top_ids), ("scores", top_scores))}
