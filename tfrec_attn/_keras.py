"""The one place tfrec_attn imports TensorFlow and Keras.

TensorFlow Recommenders 0.7.7 and TFMOT 0.8.1 need Keras 2 (the `tf-keras` package). TensorFlow
picks its Keras when it is first imported, from `TF_USE_LEGACY_KERAS`, so this module sets it
before that import, and refuses to run if TensorFlow was already imported with Keras 3.
"""

import os
import sys

_HINT = (
    "tfrec_attn needs Keras 2 (tf-keras): set TF_USE_LEGACY_KERAS=1 in the environment, or "
    "import tfrec_attn before tensorflow, and `pip install tf-keras` matching your TensorFlow."
)

if "tensorflow" not in sys.modules:
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
        "TensorFlow was imported before tfrec_attn with Keras 3 as tf.keras. " + _HINT
    )

__all__ = ["keras", "tf"]
