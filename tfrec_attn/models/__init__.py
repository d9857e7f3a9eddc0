"""Recommender models built from tfrec_attn layers, plugged into TensorFlow Recommenders."""

from tfrec_attn.models.attention_autoencoder import (
    AttentionAutoencoderConfig,
    build_attention_autoencoder,
    build_topk_autoencoder,
    multinomial_loss,
    recommend_from_item_sets,
)
from tfrec_attn.models.attention_policy import (
    AttentionPolicy,
    AttentionPolicyConfig,
    build_policy_network,
)
from tfrec_attn.models.din import DIN, DINConfig, build_din_tower
from tfrec_attn.models.sasrec import (
    SASRec,
    SASRecConfig,
    build_scoring_model,
    build_sequence_encoder,
    build_topk_model,
)

__all__ = [
    "AttentionAutoencoderConfig",
    "AttentionPolicy",
    "AttentionPolicyConfig",
    "DIN",
    "DINConfig",
    "SASRec",
    "SASRecConfig",
    "build_attention_autoencoder",
    "build_din_tower",
    "build_policy_network",
    "build_scoring_model",
    "build_sequence_encoder",
    "build_topk_autoencoder",
    "build_topk_model",
    "multinomial_loss",
    "recommend_from_item_sets",
]
