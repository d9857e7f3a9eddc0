"""Recommender models built from tfrec_attn layers, plugged into TensorFlow Recommenders."""

from tfrec_attn.models.sasrec import (
    SASRec,
    SASRecConfig,
    build_scoring_model,
    build_sequence_encoder,
    build_topk_model,
)

__all__ = [
    "SASRec",
    "SASRecConfig",
    "build_scoring_model",
    "build_sequence_encoder",
    "build_topk_model",
]
