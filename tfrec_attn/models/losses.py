"""The three training objectives of the sequential recommender, as Keras layers over TFRS tasks.

Each takes the states at the positions that have a target `(N, dim)`, the targets `(N,)` and the
shared `ItemEmbedding`, and returns a scalar loss.
"""

import numpy as np
import tensorflow_recommenders as tfrs

from tfrec_attn._keras import keras, tf

FIRST_ITEM_ID = 2


class FullSoftmaxLoss(keras.layers.Layer):
    """Cross-entropy over the whole catalogue.

    Exact and, with the gather of real positions, cheap enough for catalogues of ~10^5 items.
    """

    def __init__(self, vocab_size: int, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self._ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def call(self, states, targets, item_embedding, training=False):
        # Padding/OOV columns stay in: they are never targets, so training pushes them down
        # (and evaluation/serving exclude them); masking them would cost a full pass over logits.
        logits = tf.cast(item_embedding(states, mode="score"), tf.float32)
        return self._ce(targets, logits)


class SampledSoftmaxLoss(keras.layers.Layer):
    """In-batch sampled softmax (TFRS `tasks.Retrieval`) with log-Q correction and removal of
    accidental hits (the same item as another row's positive)."""

    def __init__(self, vocab_size: int, item_probabilities=None, **kwargs):
        super().__init__(**kwargs)
        if item_probabilities is None:
            item_probabilities = np.full(vocab_size, 1.0 / vocab_size)
        self._probabilities = tf.constant(np.asarray(item_probabilities, np.float32))
        self.task = tfrs.tasks.Retrieval(
            loss=keras.losses.CategoricalCrossentropy(from_logits=True),
            remove_accidental_hits=True,
        )

    def call(self, states, targets, item_embedding, training=False):
        candidates = tf.gather(item_embedding.embeddings, targets)
        probabilities = tf.maximum(tf.gather(self._probabilities, targets), 1e-12)
        return self.task(
            tf.cast(states, tf.float32), tf.cast(candidates, tf.float32),
            candidate_sampling_probability=probabilities, candidate_ids=targets,
            compute_metrics=False, compute_batch_metrics=False,
        )


class BinaryCrossEntropyLoss(keras.layers.Layer):
    """The original SASRec objective: one uniformly sampled negative per position, BCE
    (TFRS `tasks.Ranking`)."""

    def __init__(self, vocab_size: int, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.task = tfrs.tasks.Ranking(loss=keras.losses.BinaryCrossentropy(from_logits=True))

    def call(self, states, targets, item_embedding, training=False):
        negatives = tf.random.uniform(tf.shape(targets), FIRST_ITEM_ID, self.vocab_size,
                                      dtype=targets.dtype)
        table = item_embedding.embeddings
        states = tf.cast(states, tf.float32)
        positive = tf.reduce_sum(states * tf.gather(table, targets), axis=-1)
        negative = tf.reduce_sum(states * tf.gather(table, negatives), axis=-1)
        logits = tf.concat([positive, negative], axis=0)[:, None]
        labels = tf.concat([tf.ones_like(positive), tf.zeros_like(negative)], axis=0)[:, None]
        return self.task(labels=labels, predictions=logits, compute_metrics=False)


def make_loss(name: str, vocab_size: int, item_probabilities=None) -> keras.layers.Layer:
    """The loss layer for `SASRecConfig.loss`."""
    if name == "softmax":
        return FullSoftmaxLoss(vocab_size, name="softmax_loss")
    if name == "sampled":
        return SampledSoftmaxLoss(vocab_size, item_probabilities, name="sampled_loss")
    if name == "bce":
        return BinaryCrossEntropyLoss(vocab_size, name="bce_loss")
    raise ValueError(f"Unknown loss {name!r}; expected 'softmax', 'sampled' or 'bce'.")
