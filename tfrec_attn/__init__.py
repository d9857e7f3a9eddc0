"""tfrec_attn: attention mechanisms for recommender systems on TensorFlow / Keras 2.

Importing the package guarantees that `tf.keras` is Keras 2 (`tf-keras`), which TensorFlow
Recommenders and the TensorFlow Model Optimization toolkit require.
"""

from tfrec_attn._keras import keras, tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS first)

__version__ = "0.1.0"
