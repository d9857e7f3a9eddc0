"""The transition prior through pruning and QAT: its table and weight survive, it is never
fine-tuned, and the optimized SASRec still ranks by the mixture."""

import numpy as np
import pytest

from tfrec_attn._keras import keras, tf
from tfrec_attn.data import make_training_dataset, pad_left
from tfrec_attn.evaluation import CooccurrenceRecommender
from tfrec_attn.export import convert_to_tflite
from tfrec_attn.export.litert_runner import LiteRTRecommender
from tfrec_attn.layers import TransitionPrior
from tfrec_attn.models import SASRec, SASRecConfig
from tfrec_attn.optimization import make_qat_model, prune_model, prune_sasrec, qat_sasrec
from tfrec_attn.optimization.sasrec import build_scorer

MAX_LEN = 12
NEIGHBORS = 6
MIX = 0.5


def _prior_model(chain_sequences, tiny_sasrec):
    sequences, vocab = chain_sequences
    model = SASRec(SASRecConfig(**{**tiny_sasrec.config.to_dict(),
                                   "transition_neighbors": NEIGHBORS}))
    model(tf.zeros((1, MAX_LEN), tf.int64))
    model.encoder.set_weights(tiny_sasrec.encoder.get_weights())
    baseline = CooccurrenceRecommender(vocab).fit([s[:-1] for s in sequences])
    model.transition_prior.set_table(*baseline.neighbor_table(NEIGHBORS))
    model.transition_prior.set_mix(MIX)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model


@pytest.mark.parametrize("method", ["prune", "qat"])
def test_optimized_sasrec_keeps_its_prior(chain_sequences, tiny_sasrec, method, tmp_path):
    sequences, _ = chain_sequences
    model = _prior_model(chain_sequences, tiny_sasrec)
    table = [w.copy() for w in model.transition_prior.get_weights()]
    dataset = make_training_dataset([s[:-1] for s in sequences], MAX_LEN, 128)
    if method == "prune":
        model, _ = prune_sasrec(model, dataset, epochs=1, target_sparsity=0.5)
    else:
        model, _ = qat_sasrec(model, dataset, epochs=1, learning_rate=1e-3)
    for before, after in zip(table, model.transition_prior.get_weights()):
        np.testing.assert_array_equal(before, after)  # fine-tuning never touches it
    histories = tf.constant(pad_left([s[:-1] for s in sequences[:16]], MAX_LEN))
    # the scorer mixes the optimized encoder's own tied scores with the prior
    tied = build_scorer(model.encoder)(histories)
    np.testing.assert_allclose(model.scorer(histories).numpy(),
                               model.transition_prior([tied, histories]).numpy(),
                               rtol=1e-5, atol=1e-5)
    if method == "qat":  # the QAT model converts to int8, the prior kept in float
        path = convert_to_tflite(model, tmp_path / "qat.tflite", k=5, quantization="int8",
                                 representative_histories=histories.numpy())
        got = LiteRTRecommender(path).recommend(histories.numpy())["item_ids"]
        want = model.topk_model(k=5)(histories)["item_ids"].numpy()
        assert np.mean([len(set(a) & set(b)) / 5 for a, b in zip(got, want)]) >= 0.8


def test_prune_and_qat_wrappers_leave_a_prior_in_a_functional_model_as_it_is():
    prior = TransitionPrior(12, 2)
    prior.set_table(np.tile([[3, 4]], (12, 1)), np.full((12, 2), 0.5, np.float32))
    prior.set_mix(0.5)
    scores_in = keras.Input((12,))
    ids_in = keras.Input((None,), dtype="int64")
    dense = keras.layers.Dense(12, name="dense")(scores_in)
    model = keras.Model([scores_in, ids_in], prior([dense, ids_in]))
    feed = [np.random.default_rng(0).normal(size=(2, 12)).astype(np.float32),
            np.array([[0, 2], [5, 6]])]
    expected = model(feed).numpy()
    for optimized in (prune_model(model, schedule="constant"), make_qat_model(model)):
        layer = next(layer for layer in optimized._flatten_layers(include_self=False)
                     if isinstance(getattr(layer, "layer", layer), TransitionPrior))
        layer = getattr(layer, "layer", layer)
        assert not layer.trainable_weights
        assert float(layer.mix.numpy()) == pytest.approx(0.5)
        assert np.isfinite(optimized(feed).numpy()).all()
    np.testing.assert_allclose(prune_model(model, schedule="constant")(feed).numpy(), expected,
                               rtol=1e-5, atol=1e-5)
