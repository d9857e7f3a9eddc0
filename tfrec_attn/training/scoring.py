"""Adapters from a trained model to the numpy `score_fn` the evaluation package expects."""

import numpy as np

from tfrec_attn._keras import tf
from tfrec_attn.data import pad_left


def make_score_fn(scoring_model, max_len: int):
    """`list[np.ndarray] -> (batch, vocab)` float32 scores, from a history->scores Keras model.

    Histories are left-padded/truncated to `max_len` and scored in one compiled call per batch.
    """

    @tf.function(input_signature=[tf.TensorSpec([None, max_len], tf.int64)],
                 reduce_retracing=True)
    def _score(history):
        return tf.cast(scoring_model(history, training=False), tf.float32)

    def score_fn(histories) -> np.ndarray:
        return _score(tf.constant(pad_left(histories, max_len))).numpy()

    return score_fn
