"""Offline evaluation for next-item recommenders, in numpy only (no TensorFlow import).

Leave-one-out protocols (`evaluate`), ranking metrics from target ranks (`summarize` and the
single metrics), held-out set metrics (`set_ranking_metrics`), exact CTR AUC / GAUC (`roc_auc`,
`group_auc`; scipy), non-neural baselines (`PopularityRecommender`, `CooccurrenceRecommender`),
paired comparisons of two scorers (`paired_bootstrap`) and off-policy estimates of a top-k
policy's value from logged bandit feedback (`off_policy_value`, `top_k_probabilities`).
Ids follow `tfrec_attn.data`: `PAD_ID = 0` and `OOV_ID = 1` are never candidates.
"""

from tfrec_attn.evaluation._ids import FIRST_ITEM_ID, OOV_ID, PAD_ID
from tfrec_attn.evaluation.baselines import (
    CooccurrenceRecommender,
    PopularityRecommender,
    evaluate_baselines,
    fit_baselines,
)
from tfrec_attn.evaluation.comparison import paired_bootstrap, verdict
from tfrec_attn.evaluation.ctr_metrics import group_auc, roc_auc
from tfrec_attn.evaluation.metrics import (
    MISS_RANK,
    check_cutoffs,
    coverage,
    f1,
    hit_rate,
    hits,
    mrr,
    ndcg,
    ndcg_gains,
    precision,
    ranks_from_scores,
    recall,
    reciprocal_ranks,
    summarize,
)
from tfrec_attn.evaluation.off_policy import off_policy_value, top_k_probabilities
from tfrec_attn.evaluation.protocols import (
    evaluate,
    fewest_negatives,
    is_protocol_name,
    parse_protocol,
    sample_negatives,
    topk_from_scores,
)
from tfrec_attn.evaluation.set_metrics import set_ranking_metrics

__all__ = [
    "FIRST_ITEM_ID",
    "MISS_RANK",
    "OOV_ID",
    "PAD_ID",
    "CooccurrenceRecommender",
    "PopularityRecommender",
    "check_cutoffs",
    "coverage",
    "evaluate",
    "evaluate_baselines",
    "f1",
    "fewest_negatives",
    "fit_baselines",
    "group_auc",
    "hit_rate",
    "hits",
    "is_protocol_name",
    "mrr",
    "ndcg",
    "ndcg_gains",
    "off_policy_value",
    "paired_bootstrap",
    "parse_protocol",
    "precision",
    "ranks_from_scores",
    "recall",
    "reciprocal_ranks",
    "roc_auc",
    "sample_negatives",
    "set_ranking_metrics",
    "summarize",
    "top_k_probabilities",
    "topk_from_scores",
    "verdict",
]
