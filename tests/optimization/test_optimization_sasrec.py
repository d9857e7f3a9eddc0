"""Pruning and QAT of the SASRec encoder through the SASRec training path."""

import numpy as np
import pytest

from tfrec_attn._keras import keras, tf
from tfrec_attn.data import make_training_dataset, pad_left
from tfrec_attn.export import LiteRTRecommender, assert_builtin_only, convert_to_tflite
from tfrec_attn.layers import ItemEmbedding
from tfrec_attn.models import SASRec, SASRecConfig
from tfrec_attn.optimization import (
    gzip_size,
    prune_model,
    prune_sasrec,
    pruning_callbacks,
    qat_sasrec,
    sparsity_report,
)

MAX_LEN = 16


def _config(vocab, **overrides):
    # One block where the test fits through `model.fit` (tracing dominates the test time).
    return SASRecConfig(**{"vocab_size": vocab, "max_len": MAX_LEN, "dim": 16, "num_blocks": 1,
                           "num_heads": 2, "dropout": 0.0, **overrides})


def _dataset(sequences):
    return make_training_dataset([s[:-1] for s in sequences], MAX_LEN, 64)


def _histories(sequences, n=8, length=MAX_LEN):
    return tf.constant(pad_left([s[:-1] for s in sequences[:n]], length))


@pytest.fixture(scope="module")
def pruned(chain_sequences):
    """A SASRec pruned to 80% while fine-tuning 2 epochs, with its dense twin's gzip size."""
    keras.utils.set_random_seed(0)
    sequences, vocab = chain_sequences
    model = SASRec(_config(vocab))
    history = _histories(sequences)
    dense_scores = model(history).numpy()
    dense_size = gzip_size(model.encoder)
    model, report = prune_sasrec(model, _dataset(sequences), epochs=2, target_sparsity=0.8)
    return model, report, dense_scores, dense_size


def test_pruned_sasrec_reaches_target_sparsity(pruned):
    model, report, _, dense_size = pruned
    assert report["sparsity"] >= 0.79, report
    assert set(report["layers"]) == {"item_embedding", "block_0"}
    for name, entry in report["layers"].items():
        assert entry["sparsity"] >= 0.79, (name, entry)
    # The losses read the encoder's own (sparse) table.
    assert model.item_embedding is model.encoder.get_layer("item_embedding")
    table = model.item_embedding.embeddings.numpy()
    assert np.mean(table == 0) == pytest.approx(0.8, abs=0.01)
    assert gzip_size(model.encoder) < 0.6 * dense_size


def test_pruned_sasrec_is_stripped_and_still_scores(pruned, chain_sequences):
    model, _, dense_scores, _ = pruned
    sequences, vocab = chain_sequences
    assert not any(hasattr(layer, "pruning_vars") for layer in model.encoder.layers)
    scores = model(_histories(sequences)).numpy()
    assert scores.shape == dense_scores.shape and np.all(np.isfinite(scores))
    top = model.topk_model(k=5)(_histories(sequences))
    assert top["item_ids"].shape == (8, 5)


def test_stripped_encoder_saves_and_reloads(pruned, chain_sequences, tmp_path):
    model, report, _, _ = pruned
    sequences, _ = chain_sequences
    history = _histories(sequences)
    path = str(tmp_path / "encoder.keras")
    model.encoder.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded(history), model.encoder(history), atol=1e-6)
    assert sparsity_report(loaded) == report
    # And the whole SASRec through its weights.
    model.save_weights(str(tmp_path / "sasrec"))
    fresh = SASRec(model.config)
    fresh(history)
    fresh.load_weights(str(tmp_path / "sasrec"))
    np.testing.assert_allclose(fresh(history), model(history), atol=1e-6)


def test_padding_stays_masked_through_pruning_wrappers(chain_sequences):
    """Explicit masks survive `prune_low_magnitude`: real positions ignore how much padding
    there is (and so what padded positions hold), and padded keys get zero attention weight
    in every block."""
    sequences, vocab = chain_sequences
    encoder = SASRec(_config(vocab, num_blocks=2)).encoder
    pruned = prune_model(encoder, target_sparsity=0.8, schedule="constant", frequency=1)
    ids = _histories(sequences, n=4)
    pruned.compile(optimizer="sgd", loss="mse", run_eagerly=True)
    pruned.fit(ids, tf.zeros(pruned(ids).shape), epochs=1, verbose=0,
               callbacks=pruning_callbacks())
    assert sparsity_report(pruned)["sparsity"] == pytest.approx(0.8, abs=0.01)

    lengths = [min(len(s) - 1, 6) for s in sequences[:4]]
    short = pad_left([s[:-1][-n:] for s, n in zip(sequences[:4], lengths)], 8)
    long = pad_left([s[:-1][-n:] for s, n in zip(sequences[:4], lengths)], MAX_LEN)
    out_short, out_long = pruned(short).numpy(), pruned(long).numpy()
    for row, n in enumerate(lengths):
        np.testing.assert_allclose(out_short[row, -n:], out_long[row, -n:], atol=1e-5)

    padding = long != 0  # what the encoder's `PaddingMask` computes
    for name in ("block_0", "block_1"):
        wrapper = next(layer for layer in pruned.layers if layer.name.endswith(name))
        assert hasattr(wrapper, "pruning_vars")
        x = keras.Model(pruned.input, wrapper.input)(long)
        _, weights = wrapper(x, mask=padding, return_attention_scores=True)
        padded_keys = np.broadcast_to(~padding[:, None, None, :], weights.shape)
        np.testing.assert_array_equal(weights.numpy()[padded_keys], 0.0)


def test_qat_sasrec_fine_tunes_and_recommends(chain_sequences):
    keras.utils.set_random_seed(0)
    sequences, vocab = chain_sequences
    # The sampled loss reads `item_embedding.embeddings` directly: the fake-quantized table.
    model = SASRec(_config(vocab, loss="sampled"))
    model, history = qat_sasrec(model, _dataset(sequences), epochs=1, learning_rate=1e-3)
    assert np.isfinite(history.history["loss"][0])
    wrappers = {layer.name: type(layer).__name__ for layer in model.encoder.layers}
    assert wrappers["block_0"] == wrappers["item_embedding"] == "QuantizeWrapperV2"
    assert isinstance(model.item_embedding, ItemEmbedding)
    assert not isinstance(model.item_embedding.embeddings, tf.Variable)

    ids = _histories(sequences)
    top = model.topk_model(k=5)(ids)
    item_ids = top["item_ids"].numpy()
    for row, hist in zip(item_ids, ids.numpy()):
        assert not set(row) & set(hist[hist > 0])
        assert (row >= 2).all()
    scores = model.scorer(ids).numpy()
    np.testing.assert_allclose(top["scores"], np.take_along_axis(scores, item_ids, 1),
                               rtol=1e-5)


def test_gated_sasrec_prunes_its_gate_kernels(chain_sequences):
    """LiGR blocks (`gated=True`): the gate and GLU kernels prune with the rest."""
    keras.utils.set_random_seed(0)
    sequences, vocab = chain_sequences
    encoder = SASRec(_config(vocab, gated=True)).encoder
    pruned = prune_model(encoder, target_sparsity=0.8, schedule="constant", frequency=1)
    ids = _histories(sequences, n=4)
    pruned.compile(optimizer="sgd", loss="mse", run_eagerly=True)
    pruned.fit(ids, tf.zeros(pruned(ids).shape), epochs=1, verbose=0,
               callbacks=pruning_callbacks())
    assert sparsity_report(pruned)["sparsity"] == pytest.approx(0.8, abs=0.01)
    block = next(layer for layer in pruned.layers if layer.name.endswith("block_0"))
    pruned_names = {v.name.split("/")[-2] for v, _, _ in block.pruning_vars}
    assert {"attention_gate", "ffn_gate", "ffn_value"} <= pruned_names


@pytest.mark.slow  # QAT fine-tuning plus an int8 conversion: ~1 minute
def test_gated_sasrec_qat_converts_to_int8(chain_sequences, tmp_path):
    """QAT wraps the LiGR blocks, and the QAT model converts to builtin-only int8 TFLite that
    ranks like the QAT Keras model."""
    keras.utils.set_random_seed(0)
    sequences, vocab = chain_sequences
    model, history = qat_sasrec(SASRec(_config(vocab, gated=True)), _dataset(sequences),
                                epochs=1, learning_rate=1e-3)
    assert np.isfinite(history.history["loss"][0])
    sample = _histories(sequences, n=32).numpy()
    path = convert_to_tflite(model, tmp_path / "gated.tflite", k=5, quantization="int8",
                             representative_histories=sample)
    assert_builtin_only(path)
    keras_ids = model.topk_model(k=5)(sample)["item_ids"].numpy()
    lite_ids = LiteRTRecommender(path).recommend(sample)["item_ids"]
    overlap = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(lite_ids, keras_ids)])
    assert overlap >= 0.8, overlap
