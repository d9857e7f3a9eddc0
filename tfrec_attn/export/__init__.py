"""Export for serving: TF Serving SavedModels (versioned, atomic)."""

from tfrec_attn.export.litert_runner import LiteRTRecommender
from tfrec_attn.export.saved_model import RecommenderModule, export_saved_model
from tfrec_attn.export.tflite import assert_builtin_only, convert_to_tflite, tflite_ops
from tfrec_attn.export.versioning import (
    atomic_version_dir,
    existing_versions,
    keep_latest,
    next_version,
)

__all__ = [
    "RecommenderModule",
    "atomic_version_dir",
    "existing_versions",
    "export_saved_model",
    "keep_latest",
    "next_version",
    "LiteRTRecommender",
    "assert_builtin_only",
    "convert_to_tflite",
    "tflite_ops",
]
