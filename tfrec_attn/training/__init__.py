"""Training: callbacks, the end-to-end run behind `tfrec-attn train`, plots."""

from tfrec_attn.training.callbacks import EpochTimer, RankingEvaluation, TimeBudget
from tfrec_attn.training.run import TrainOptions, results_table, run_training
from tfrec_attn.training.run_dir import RunArtifacts, load_run
from tfrec_attn.training.scoring import make_score_fn

__all__ = [
    "EpochTimer",
    "RankingEvaluation",
    "RunArtifacts",
    "TimeBudget",
    "TrainOptions",
    "load_run",
    "make_score_fn",
    "results_table",
    "run_training",
]
