"""CTR evaluation of a DIN tower on `ranking_examples` rows: exact AUC and GAUC, once or each
epoch (a Keras callback), and the popularity baseline scored the same way.

Rows come user by user, `1 + num_negatives` a user (`ranking_examples(..., last_only=True)`),
so a row's group (for GAUC) is its index divided by the group size.
"""

from __future__ import annotations

import numpy as np

from tfrec_attn._keras import keras
from tfrec_attn.evaluation import PopularityRecommender
from tfrec_attn.evaluation.ctr_metrics import group_auc, roc_auc
from tfrec_attn.training.callbacks import EpochEvaluation

PREDICT_BATCH = 2048  # rows a tower scores at once


def ctr_metrics(scores: np.ndarray, examples: dict, num_negatives: int) -> dict[str, float]:
    """`{"auc", "gauc"}` of `scores` for the rows `examples` (one group of
    `1 + num_negatives` rows a user).

    Example:
    >>> ex = {"label": np.array([1.0, 0.0, 1.0, 0.0])}
    >>> ctr_metrics(np.array([0.9, 0.1, 0.2, 0.3]), ex, num_negatives=1)
    {'auc': 0.75, 'gauc': 0.5}
    """
    labels = np.asarray(examples["label"])
    if len(labels) % (1 + num_negatives):
        raise ValueError(f"examples must hold groups of 1 + num_negatives = {1 + num_negatives} "
                         f"rows. Received: {len(labels)} rows")
    users = np.arange(len(labels)) // (1 + num_negatives)
    return {"auc": roc_auc(labels, scores), "gauc": group_auc(labels, scores, users)["gauc"]}


def tower_logits(tower: keras.Model, examples: dict) -> np.ndarray:
    """The tower's click logits `(n,)` for the rows `examples` (`history`, `candidate`)."""
    inputs = {"history": examples["history"], "candidate": examples["candidate"]}
    return tower.predict(inputs, batch_size=PREDICT_BATCH, verbose=0)[:, 0]


def evaluate_ranker(tower: keras.Model, examples: dict, num_negatives: int) -> dict[str, float]:
    """`{"auc", "gauc"}` of a DIN tower on `ranking_examples(..., last_only=True)` rows.

    Example:
    >>> from tfrec_attn.data import ranking_examples
    >>> from tfrec_attn.models import DINConfig, build_din_tower
    >>> ex = ranking_examples([np.array([2, 3, 4]), np.array([5, 6, 7])], max_len=3,
    ...                       vocab_size=12, num_negatives=2, last_only=True)
    >>> tower = build_din_tower(DINConfig(vocab_size=12, max_len=3, dim=4, mlp_units=(4,)))
    >>> sorted(evaluate_ranker(tower, ex, num_negatives=2))
    ['auc', 'gauc']
    """
    return ctr_metrics(tower_logits(tower, examples), examples, num_negatives)


def popularity_ctr(train: list[np.ndarray], examples: dict, vocab_size: int,
                   num_negatives: int) -> dict[str, float]:
    """`{"auc", "gauc"}` of scoring each candidate by its count in the `train` sequences
    (ties, e.g. unseen candidates, count one half in the AUC).

    Example:
    >>> ex = {"candidate": np.array([2, 3, 2, 4]), "label": np.array([1.0, 0.0, 1.0, 0.0])}
    >>> popularity_ctr([np.array([2, 2, 3])], ex, vocab_size=5, num_negatives=1)
    {'auc': 1.0, 'gauc': 1.0}
    """
    counts = PopularityRecommender(vocab_size).fit(train).counts
    return ctr_metrics(counts[np.asarray(examples["candidate"])], examples, num_negatives)


class CTREvaluation(EpochEvaluation):
    """Exact AUC and GAUC of the trained `DIN`'s tower on held-out rows after every epoch.

    The metrics land in `logs` as `{prefix}auc` / `{prefix}gauc`, so `EarlyStopping`,
    `TensorBoard` and `History` see them: put it before those in the callback list. `records`
    holds `{"epoch", "auc", "gauc"}` per epoch of the latest `fit`.

    Args:
        examples: `ranking_examples(..., last_only=True)` rows.
        num_negatives: negatives per positive in `examples`.
        prefix: log-name prefix. Defaults to `"val_"`.

    Example:
    >>> from tfrec_attn.data import make_ranking_dataset, ranking_examples
    >>> from tfrec_attn.models import DIN, DINConfig
    >>> seqs = [np.array([2, 3, 4, 5]), np.array([6, 7, 8, 9])]
    >>> valid = ranking_examples(seqs, max_len=3, vocab_size=14, num_negatives=2, last_only=True)
    >>> model = DIN(DINConfig(vocab_size=14, max_len=3, dim=4, mlp_units=(4,)))
    >>> model.compile(optimizer=keras.optimizers.Adam(1e-3))
    >>> evaluation = CTREvaluation(valid, num_negatives=2)
    >>> _ = model.fit(make_ranking_dataset(seqs, 3, 14, batch_size=4), epochs=2,
    ...               callbacks=[evaluation], verbose=0)
    >>> [sorted(r) for r in evaluation.records]
    [['auc', 'epoch', 'gauc'], ['auc', 'epoch', 'gauc']]
    """

    def __init__(self, examples: dict, num_negatives: int, prefix: str = "val_"):
        super().__init__(prefix=prefix)
        self.examples = examples
        self.num_negatives = num_negatives

    def compute_metrics(self) -> dict[str, float]:
        return evaluate_ranker(self.model.tower, self.examples, self.num_negatives)
