"""Export for serving: TF Serving SavedModels (versioned, atomic) and TFLite files, for the
SASRec recommender, the DIN ranker and the attention RL policy."""

from tfrec_attn.export.autoencoder import AutoencoderModule, export_autoencoder
from tfrec_attn.export.autoencoder_tflite import LiteRTAutoencoder, convert_autoencoder_to_tflite
from tfrec_attn.export.litert_runner import LiteRTRecommender
from tfrec_attn.export.policy import PolicyModule, export_policy
from tfrec_attn.export.policy_tflite import LiteRTPolicy, convert_policy_to_tflite
from tfrec_attn.export.ranker import RankerModule, export_ranker
from tfrec_attn.export.ranker_tflite import LiteRTRanker, convert_ranker_to_tflite
from tfrec_attn.export.saved_model import RecommenderModule, export_saved_model
from tfrec_attn.export.tflite import assert_builtin_only, convert_to_tflite, tflite_ops
from tfrec_attn.export.versioning import (
    atomic_version_dir,
    existing_versions,
    keep_latest,
    next_version,
)

__all__ = [
    "AutoencoderModule",
    "PolicyModule",
    "RankerModule",
    "RecommenderModule",
    "atomic_version_dir",
    "existing_versions",
    "export_autoencoder",
    "export_policy",
    "export_ranker",
    "export_saved_model",
    "keep_latest",
    "next_version",
    "LiteRTAutoencoder",
    "LiteRTPolicy",
    "LiteRTRanker",
    "LiteRTRecommender",
    "assert_builtin_only",
    "convert_autoencoder_to_tflite",
    "convert_policy_to_tflite",
    "convert_ranker_to_tflite",
    "convert_to_tflite",
    "tflite_ops",
]
