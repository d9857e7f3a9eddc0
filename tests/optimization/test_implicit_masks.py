"""Keras' implicit padding masks survive pruning and QAT.

A model masked only by `Embedding(mask_zero=True)` (pruning) or `Masking` (QAT; `make_qat_model`
refuses Keras' `Embedding`) is padding-invariant in float: left padding does not change its
output. TFMOT's wrappers ended the mask chain at the first wrapped layer, so the pruned model
(while it fine-tuned) and the QAT model attended to and averaged over padding, while the
stripped model did not. Each case checks padded == unpadded through the whole life cycle.
"""

import numpy as np
import pytest

from tfrec_attn._keras import keras
from tfrec_attn.layers import (
    LinearAttention,
    LocalAttention,
    MaskedMeanPooling,
    MultiHeadAttention,
    TargetAttention,
    TransformerEncoderBlock,
)
from tfrec_attn.optimization import (
    EmbeddingTableQuantizeConfig,
    make_qat_model,
    prune_model,
    pruning_callbacks,
    quantize_scope,
    sparsity_report,
    strip_pruning,
)

VOCAB, DIM, LENGTH = 20, 8, 6
TARGET_SPARSITY = 0.5
LAYERS = {
    "mha": lambda: MultiHeadAttention(num_heads=2, name="layer"),
    "encoder": lambda: TransformerEncoderBlock(num_heads=2, intermediate_dim=16, name="layer"),
    "local": lambda: LocalAttention(num_heads=2, window=2, name="layer"),
    "linear": lambda: LinearAttention(num_heads=2, name="layer"),
    "target": lambda: TargetAttention(hidden_units=(8,), name="layer"),
}


def head(kind: str, sequence, candidate):
    """`layer` over the (implicitly masked) sequence, masked mean pooling, a `Dense` score."""
    layer = LAYERS[kind]()
    hidden = layer([candidate, sequence]) if kind == "target" else layer(sequence)
    return keras.layers.Dense(1, name="score")(MaskedMeanPooling(name="pool")(hidden))


def id_model(kind: str) -> keras.Model:
    ids = keras.Input((None,), dtype="int32", name="ids")
    candidate = keras.Input((1, DIM), name="candidate")
    sequence = keras.layers.Embedding(VOCAB, DIM, mask_zero=True, name="embedding")(ids)
    return keras.Model([ids, candidate], head(kind, sequence, candidate))


def float_model(kind: str) -> keras.Model:
    features = keras.Input((None, DIM), name="features")
    candidate = keras.Input((1, DIM), name="candidate")
    sequence = keras.layers.Masking(name="masking")(features)
    return keras.Model([features, candidate], head(kind, sequence, candidate))


def padded_and_short(sequence: np.ndarray, candidate: np.ndarray):
    """The first row of `sequence` (3 leading padding positions) and the same row unpadded."""
    return [sequence[:1], candidate[:1]], [sequence[:1, 3:], candidate[:1]]


def assert_padding_invariant(model, padded, short, atol=1e-5) -> None:
    np.testing.assert_allclose(model(padded).numpy(), model(short).numpy(), atol=atol)


def id_data():
    rng = np.random.default_rng(0)
    ids = rng.integers(1, VOCAB, (8, LENGTH)).astype(np.int32)
    ids[:, :3] = 0
    return ids, rng.normal(size=(8, 1, DIM)).astype(np.float32)


def float_data():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(8, LENGTH, DIM)).astype(np.float32)
    features[:, :3] = 0.0
    return features, rng.normal(size=(8, 1, DIM)).astype(np.float32)


@pytest.mark.parametrize("kind", LAYERS)
def test_pruned_model_keeps_the_implicit_padding_mask(kind):
    keras.utils.set_random_seed(0)
    model = id_model(kind)
    ids, candidate = id_data()
    padded, short = padded_and_short(ids, candidate)
    assert_padding_invariant(model, padded, short)
    pruned = prune_model(model, TARGET_SPARSITY, schedule="constant", frequency=1)
    assert_padding_invariant(pruned, padded, short)  # what fine-tuning trains
    pruned.compile(optimizer="sgd", loss="mse")
    pruned.fit([ids, candidate], np.zeros((8, 1)), batch_size=8, epochs=1, verbose=0,
               callbacks=pruning_callbacks())
    assert_padding_invariant(pruned, padded, short)
    stripped = strip_pruning(pruned)
    assert_padding_invariant(stripped, padded, short)
    np.testing.assert_allclose(stripped(padded), pruned(padded), atol=1e-6)
    for name, entry in sparsity_report(stripped)["layers"].items():
        assert entry["sparsity"] >= TARGET_SPARSITY - 0.02, name


@pytest.mark.parametrize("kind", LAYERS)
def test_qat_model_keeps_the_implicit_padding_mask(kind):
    keras.utils.set_random_seed(0)
    model = float_model(kind)
    features, candidate = float_data()
    padded, short = padded_and_short(features, candidate)
    assert_padding_invariant(model, padded, short)
    qat = make_qat_model(model)
    qat.compile(optimizer="adam", loss="mse")
    qat.fit([features, candidate], np.ones((8, 1)), batch_size=8, epochs=2, verbose=0)
    # Fake quantization is elementwise with fixed ranges: padding must change nothing.
    assert_padding_invariant(qat, padded, short)


def test_qat_model_of_a_keras_embedding_with_mask_zero_keeps_its_mask():
    """Keras' `Embedding` is quantized like `ItemEmbedding` (its table), not refused."""
    model = id_model("mha")
    ids, candidate = id_data()
    padded, short = padded_and_short(ids, candidate)
    qat = make_qat_model(model)
    assert type(qat.get_layer("embedding").quantize_config) is EmbeddingTableQuantizeConfig
    qat([ids, candidate], training=True)  # sets the quantization ranges
    assert_padding_invariant(qat, padded, short)


def test_pruned_model_reloads_and_still_masks(tmp_path):
    """`tfrec_attn>PruneLowMagnitude` loads without a scope, keeps masking, and strips."""
    model = id_model("mha")
    pruned = prune_model(model, TARGET_SPARSITY, schedule="constant", frequency=1)
    padded, short = padded_and_short(*id_data())
    pruned.save(tmp_path / "pruned.keras")
    loaded = keras.models.load_model(tmp_path / "pruned.keras")
    wrapper = type(loaded.get_layer("prune_low_magnitude_layer"))
    assert keras.saving.get_registered_name(wrapper) == "tfrec_attn>PruneLowMagnitude"
    np.testing.assert_allclose(loaded(padded), pruned(padded), atol=1e-6)
    assert_padding_invariant(loaded, padded, short)
    assert_padding_invariant(strip_pruning(loaded), padded, short)


def test_qat_model_reloads_from_h5_and_still_masks(tmp_path):
    features, candidate = float_data()
    padded, short = padded_and_short(features, candidate)
    qat = make_qat_model(float_model("mha"))
    qat([features, candidate], training=True)  # sets the quantization ranges
    qat.save(tmp_path / "qat.h5")
    with quantize_scope():
        loaded = keras.models.load_model(tmp_path / "qat.h5")
    np.testing.assert_allclose(loaded(padded), qat(padded), atol=1e-6)
    assert_padding_invariant(loaded, padded, short)


def test_wrapped_layer_without_a_mask_argument_passes_the_mask_through():
    """A wrapped `Dense` after a masking layer: the mask passes through it (as unwrapped), and
    its `call`, which takes no mask, is not handed one."""
    ids = keras.Input((None,), dtype="int32")
    sequence = keras.layers.Embedding(VOCAB, DIM, mask_zero=True)(ids)
    model = keras.Model(ids, MaskedMeanPooling()(keras.layers.Dense(DIM)(sequence)))
    pruned = prune_model(model, TARGET_SPARSITY, schedule="constant")
    padded = np.array([[0, 0, 0, 3, 4, 5]], np.int32)
    assert_padding_invariant(pruned, padded, padded[:, 3:])

    features = keras.Input((None, DIM))
    sequence = keras.layers.Masking()(features)
    qat = make_qat_model(keras.Model(features,
                                     MaskedMeanPooling()(keras.layers.Dense(DIM)(sequence))))
    padded, _ = float_data()
    qat(padded, training=True)  # sets the quantization ranges
    assert_padding_invariant(qat, padded[:1], padded[:1, 3:])
