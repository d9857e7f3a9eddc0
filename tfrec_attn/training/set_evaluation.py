"""Set-recommender evaluation (Mult-VAE's strong generalization): recommend from each held-out
user's fold-in items (those excluded) and score the top-k against the user's held-out items
with `evaluation.set_ranking_metrics` (Recall@k, NDCG@k), once or each epoch (a Keras callback).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tfrec_attn._keras import keras
from tfrec_attn.evaluation.set_metrics import set_ranking_metrics
from tfrec_attn.models.attention_autoencoder import recommend_from_item_sets
from tfrec_attn.training.callbacks import EpochEvaluation
from tfrec_attn.validation import check_positive_int


def evaluate_set_recommender(model: keras.Model, fold_in: Sequence[np.ndarray],
                             held_out: Sequence[np.ndarray], k: int = 20) -> dict[str, float]:
    """`{"recall@k", "ndcg@k"}` of `model`'s top-`k` (fold-in items excluded) on `held_out`.

    Args:
        model: ids `(batch, T)` -> catalogue scores `(batch, vocab)`, e.g.
            `build_attention_autoencoder`.
        fold_in: one array of item ids per user: what the model reads.
        held_out: one array per user: what it must find (users with none are skipped).
        k: the list length and metric cut-off.

    Example:
    >>> from tfrec_attn.models import AttentionAutoencoderConfig, build_attention_autoencoder
    >>> model = build_attention_autoencoder(AttentionAutoencoderConfig(12, max_len=4, dim=8))
    >>> sorted(evaluate_set_recommender(model, [np.array([2, 3])], [np.array([4])], k=5))
    ['ndcg@5', 'recall@5']
    """
    check_positive_int("k", k)
    top = recommend_from_item_sets(model, fold_in, k=k)["item_ids"]
    metrics = set_ranking_metrics(top, held_out, ks=(k,))
    return {name: value for name, value in metrics.items() if name != "users"}


class SetEvaluation(EpochEvaluation):
    """Recall@k and NDCG@k of the model on held-out users' item sets after every epoch.

    The metrics land in `logs` as `{prefix}recall@k` / `{prefix}ndcg@k`, so `EarlyStopping`,
    `TensorBoard` and `History` see them: put it before those in the callback list. `records`
    holds `{"epoch", "recall@k", "ndcg@k"}` per epoch of the latest `fit` (cleared in
    `on_train_begin`).

    Args:
        fold_in: one array of item ids per user (the model's input).
        held_out: one array of held-out item ids per user.
        k: the cut-off. Defaults to `20`.
        prefix: log-name prefix. Defaults to `"val_"`.

    Example:
    >>> from tfrec_attn.models import AttentionAutoencoderConfig, build_attention_autoencoder
    >>> model = build_attention_autoencoder(AttentionAutoencoderConfig(12, max_len=4, dim=8))
    >>> evaluation = SetEvaluation([np.array([2, 3])], [np.array([4])], k=5)
    >>> evaluation.set_model(model)  # `model.fit(..., callbacks=[evaluation])` does this
    >>> logs = {"loss": 1.0}
    >>> evaluation.on_epoch_end(0, logs)
    >>> sorted(logs), sorted(evaluation.records[0])
    (['loss', 'val_ndcg@5', 'val_recall@5'], ['epoch', 'ndcg@5', 'recall@5'])
    """

    def __init__(self, fold_in: Sequence[np.ndarray], held_out: Sequence[np.ndarray],
                 k: int = 20, prefix: str = "val_"):
        super().__init__(prefix=prefix)
        check_positive_int("k", k)
        if len(fold_in) != len(held_out):
            raise ValueError(f"fold_in and held_out must have one entry per user. Received: "
                             f"{len(fold_in)} fold-in and {len(held_out)} held-out sets")
        self.fold_in = list(fold_in)
        self.held_out = list(held_out)
        self.k = k

    def compute_metrics(self) -> dict[str, float]:
        return evaluate_set_recommender(self.model, self.fold_in, self.held_out, self.k)
