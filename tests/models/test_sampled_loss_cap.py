"""The sampled loss's cap on in-batch negatives (memory linear in the number of positions)."""

import numpy as np
import pytest

from tfrec_attn._keras import tf
from tfrec_attn.layers import ItemEmbedding
from tfrec_attn.models.losses import SampledSoftmaxLoss


def _inputs(rows: int = 40):
    rng = np.random.default_rng(0)
    embedding = ItemEmbedding(30, 8)
    embedding(tf.constant([[1]]))
    states = tf.constant(rng.normal(size=(rows, 8)), tf.float32)
    targets = tf.constant(rng.integers(2, 30, rows), tf.int64)
    return states, targets, embedding


def test_cap_at_or_above_the_batch_keeps_every_candidate():
    states, targets, embedding = _inputs()
    exact = SampledSoftmaxLoss(30, max_negatives=40)(states, targets, embedding)
    larger = SampledSoftmaxLoss(30, max_negatives=4096)(states, targets, embedding)
    np.testing.assert_allclose(float(exact), float(larger), rtol=1e-6)


def test_cap_below_the_batch_scores_a_random_subset():
    states, targets, embedding = _inputs()
    loss = SampledSoftmaxLoss(30, max_negatives=5)
    candidates, log_q, ids = loss._negatives(tf.gather(embedding.embeddings, targets),
                                            tf.zeros(40), targets)
    assert candidates.shape == (5, 8) and log_q.shape == (5,)
    assert set(ids.numpy()) <= set(targets.numpy())
    full = float(SampledSoftmaxLoss(30)(states, targets, embedding))
    capped = float(loss(states, targets, embedding))
    assert np.isfinite(capped) and capped < full  # fewer negatives, smaller partition function


@pytest.mark.parametrize("kwargs, argument", [
    ({"max_negatives": 0}, "max_negatives"), ({"max_negatives": True}, "max_negatives"),
    ({"uniform_negatives": True}, "uniform_negatives"),
])
def test_rejects_bad_cap(kwargs, argument):
    with pytest.raises(ValueError, match=rf"{argument} must be .* Received: {argument}="):
        SampledSoftmaxLoss(30, **kwargs)
