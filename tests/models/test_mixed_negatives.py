"""The sampled loss's mixed negatives: in-batch candidates plus uniform catalogue draws."""

import numpy as np
import pytest

from tfrec_attn._keras import tf
from tfrec_attn.layers import ItemEmbedding
from tfrec_attn.models import SASRec, SASRecConfig
from tfrec_attn.models.losses import SampledSoftmaxLoss

VOCAB = 30


def _inputs(rows: int = 12):
    rng = np.random.default_rng(0)
    embedding = ItemEmbedding(VOCAB, 8)
    embedding(tf.constant([[1]]))
    states = rng.normal(size=(rows, 8)).astype(np.float32)
    targets = rng.integers(2, VOCAB, rows)
    probabilities = rng.dirichlet(np.ones(VOCAB)).astype(np.float32)
    return states, targets, embedding, probabilities


def _reference(states, targets, table, probabilities, drawn, seen=None):
    """NumPy: each row's positive against the in-batch targets and the uniform draws, every
    logit less the log of its item's expected count, accidental hits and seen items removed."""
    ids = np.concatenate([targets, drawn])
    count = len(targets) * probabilities + len(drawn) / (VOCAB - 2)
    losses = []
    for row, (state, target) in enumerate(zip(states, targets)):
        positive = state @ table[target] - np.log(count[target])
        keep = ids != target
        if seen is not None:
            keep &= ~seen[row, ids]
        negatives = table[ids[keep]] @ state - np.log(count[ids[keep]])
        logits = np.concatenate([[positive], negatives])
        top = logits.max()
        losses.append(top + np.log(np.exp(logits - top).sum()) - positive)
    return float(np.mean(losses))


@pytest.mark.parametrize("with_seen", [False, True])
def test_mixed_loss_matches_a_numpy_reference(with_seen):
    states, targets, embedding, probabilities = _inputs()
    drawn = np.array([2, 5, 5, 17, int(targets[0]), 29])
    seen = None
    if with_seen:
        seen = np.random.default_rng(1).random((len(targets), VOCAB)) < 0.3
        seen[np.arange(len(targets)), targets] = True  # a window holds its own target
    loss = SampledSoftmaxLoss(VOCAB, probabilities, uniform_negatives=len(drawn))
    got = loss(tf.constant(states), tf.constant(targets, tf.int64), embedding,
               seen=None if seen is None else tf.constant(seen),
               uniform=tf.constant(drawn, tf.int64))
    expected = _reference(states, targets, embedding.embeddings.numpy(), probabilities, drawn,
                          seen)
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_without_uniform_draws_the_loss_is_the_in_batch_loss():
    states, targets, embedding, probabilities = _inputs()
    plain = SampledSoftmaxLoss(VOCAB, probabilities)(tf.constant(states),
                                                     tf.constant(targets, tf.int64), embedding)
    # The in-batch-only loss equals the reference with no draws (log-Q up to a constant).
    expected = _reference(states, targets, embedding.embeddings.numpy(), probabilities,
                          np.array([], np.int64))
    np.testing.assert_allclose(float(plain), expected, rtol=1e-5)


def test_draws_cover_the_catalogue_and_never_padding():
    loss = SampledSoftmaxLoss(VOCAB, uniform_negatives=5000)
    drawn = loss.draw_uniform().numpy()
    assert drawn.shape == (5000,)
    assert drawn.min() == 2 and drawn.max() == VOCAB - 1


def test_sasrec_trains_with_mixed_negatives():
    config = SASRecConfig(vocab_size=VOCAB, max_len=6, dim=8, num_blocks=1, loss="sampled",
                          uniform_negatives=16)
    model = SASRec(config)
    model.compile(optimizer="adam")
    history = tf.constant([[0, 2, 3, 4, 5, 6]] * 4, tf.int64)
    targets = tf.constant([[0, 3, 4, 5, 6, 7]] * 4, tf.int64)
    data = tf.data.Dataset.from_tensors({"history": history, "targets": targets})
    losses = model.fit(data.repeat(3), epochs=1, verbose=0).history["loss"]
    assert np.isfinite(losses).all()
    assert SASRec.from_config(model.get_config()).config.uniform_negatives == 16


@pytest.mark.parametrize("kwargs, match", [
    ({"uniform_negatives": -1, "loss": "sampled"}, "uniform_negatives must be an int >= 0"),
    ({"uniform_negatives": 1.5, "loss": "sampled"}, "uniform_negatives must be an int >= 0"),
    ({"uniform_negatives": True, "loss": "sampled"}, "uniform_negatives must be an int >= 0"),
    ({"uniform_negatives": 8, "loss": "softmax"}, "needs loss='sampled'"),
    ({"uniform_negatives": 8, "loss": "bce"}, "needs loss='sampled'"),
])
def test_bad_settings_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SASRecConfig(vocab_size=VOCAB, **kwargs)
