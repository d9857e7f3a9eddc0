"""The one place tfrec_attn imports TensorFlow and Keras.

TensorFlow Recommenders 0.7.7 and TFMOT 0.8.1 need Keras 2 (the `tf-keras` package). TensorFlow
picks its Keras from `TF_USE_LEGACY_KERAS` when `tf.keras` is first used, so this module sets it
before that (TensorFlow itself may already be imported), and refuses to run if `tf.keras` is
already Keras 3.
"""

import logging
import os
import sys

_HINT = (
    "tfrec_attn needs Keras 2 (tf-keras): set TF_USE_LEGACY_KERAS=1 in the environment, or "
    "import tfrec_attn before tensorflow, and `pip install tf-keras` matching your TensorFlow."
)



def _keras_unresolved() -> bool:
    """Whether `tf.keras` may still become Keras 2: TensorFlow not imported yet, or imported
    but its lazy `tf.keras` not resolved (TensorFlow reads `TF_USE_LEGACY_KERAS` then, on the
    first attribute access; `_tfll_initialized` is its private flag, absent: assume resolved)."""
    module = sys.modules.get("tensorflow")
    if module is None:
        return True
    return getattr(module.__dict__.get("keras"), "_tfll_initialized", True) is False


if _keras_unresolved():
    if os.environ.get("TF_USE_LEGACY_KERAS", "1") not in ("1", "true", "True"):
        raise ImportError(
            f"TF_USE_LEGACY_KERAS={os.environ['TF_USE_LEGACY_KERAS']!r} asks for Keras 3. " + _HINT
        )
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

try:
    import tf_keras as keras  # noqa: E402
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("tf-keras is not installed. " + _HINT) from err

if tf.keras.layers.Layer is not keras.layers.Layer:
    raise ImportError(
        "tf.keras was already Keras 3 when tfrec_attn was imported. " + _HINT
    )



class _OwnClassNameFilter(logging.Filter):
    """Drops tf-keras' SavedModel warning that a tfrec_attn class (e.g. `MultiHeadAttention`)
    shares a built-in's name: ours are registered as `tfrec_attn>Name` and reload as ours, so
    the advice it gives does not apply. Other classes still get the warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "as a built-in TF-Keras" not in str(record.msg) or len(record.args or ()) < 3:
            return True
        return not getattr(record.args[2], "__module__", "").startswith("tfrec_attn.")


logging.getLogger("absl").addFilter(_OwnClassNameFilter())

__all__ = ["keras", "tf"]
