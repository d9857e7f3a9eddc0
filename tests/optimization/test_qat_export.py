"""A quantization-aware SASRec through both production paths: TF Serving SavedModel and
full-integer int8 TFLite, each checked against the QAT Keras model it came from."""

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from tfrec_attn._keras import tf
from tfrec_attn.data import make_training_dataset, pad_left
from tfrec_attn.export import (
    LiteRTRecommender,
    assert_builtin_only,
    convert_to_tflite,
    export_saved_model,
)
from tfrec_attn.models import SASRec
from tfrec_attn.optimization import qat_sasrec

K = 10
MIN_OVERLAP = 0.9  # the bar for quantized variants
SIGNATURES = {"serving_default", "recommend", "score", "user_embedding", "item_embeddings"}


@pytest.fixture(scope="module")
def qat(tiny_sasrec, chain_sequences):
    """A copy of the trained `tiny_sasrec`, fine-tuned one epoch with QAT, and its inputs."""
    sequences, _ = chain_sequences
    max_len = tiny_sasrec.config.max_len
    model = SASRec(tiny_sasrec.config)
    model(tf.constant(pad_left([[2]], max_len)))
    model.set_weights(tiny_sasrec.get_weights())
    dataset = make_training_dataset([s[:-1] for s in sequences], max_len, 128)
    model, _ = qat_sasrec(model, dataset, epochs=1, learning_rate=1e-4)
    sample = pad_left([s[:-1] for s in sequences[:64]], max_len)
    validation = pad_left(sequences[-100:], max_len)
    return model, sample, validation


@pytest.fixture(scope="module")
def keras_topk(qat):
    model, sample, _ = qat
    return {name: value.numpy() for name, value in model.topk_model(k=K)(sample).items()}


@pytest.fixture(scope="module")
def saved(qat, tmp_path_factory):
    model, _, _ = qat
    path = export_saved_model(model, tmp_path_factory.mktemp("qat_export"), "qat", k=K)
    return tf.saved_model.load(str(path))


def test_qat_saved_model_top_k_equals_keras(saved, qat, keras_topk):
    _, sample, _ = qat
    assert set(saved.signatures) == SIGNATURES
    got = saved.signatures["serving_default"](history=tf.constant(sample))
    np.testing.assert_array_equal(got["item_ids"].numpy(), keras_topk["item_ids"])
    np.testing.assert_allclose(got["scores"].numpy(), keras_topk["scores"], rtol=1e-5,
                               atol=1e-6)
    three = saved.signatures["recommend"](history=tf.constant(sample), k=tf.constant(3))
    np.testing.assert_array_equal(three["item_ids"].numpy(), keras_topk["item_ids"][:, :3])


def test_qat_saved_model_uses_the_fake_quantized_table(saved, qat, keras_topk):
    model, sample, _ = qat
    vocab = model.config.vocab_size
    table = saved.signatures["item_embeddings"](item_ids=tf.range(vocab, dtype=tf.int64))
    table = table["embedding"].numpy()
    # 8-bit symmetric narrow range: at most 255 distinct values; the float variable has more.
    wrapper = model.encoder.get_layer("item_embedding")
    variable = next(w for w in wrapper.weights if w.name.endswith("embeddings:0")).numpy()
    assert len(np.unique(table)) <= 255 < len(np.unique(variable))
    np.testing.assert_allclose(table, variable, atol=np.abs(variable).max() / 127)
    user = saved.signatures["user_embedding"](history=tf.constant(sample))["embedding"].numpy()
    np.testing.assert_allclose(np.take_along_axis(user @ table.T, keras_topk["item_ids"], 1),
                               keras_topk["scores"], rtol=1e-4, atol=1e-5)
    scored = saved.signatures["score"](history=tf.constant(sample),
                                       candidate_ids=tf.constant(keras_topk["item_ids"]))
    np.testing.assert_allclose(scored["scores"].numpy(), keras_topk["scores"], rtol=1e-4,
                               atol=1e-5)


@pytest.fixture(scope="module")
def qat_int8(qat, tmp_path_factory):
    model, _, validation = qat
    return convert_to_tflite(model, tmp_path_factory.mktemp("qat_tflite") / "qat.tflite", k=K,
                             quantization="int8", representative_histories=validation)


def test_qat_int8_tflite_is_full_integer_and_builtin(qat, qat_int8):
    model, _, _ = qat
    assert_builtin_only(qat_int8)
    tensors = Interpreter(model_path=str(qat_int8)).get_tensor_details()
    shape = [model.config.vocab_size, model.config.dim]
    tables = [t for t in tensors if list(t["shape"]) == shape and "qconst" in t["name"]]
    assert tables and all(t["dtype"] == np.int8 for t in tables), [
        (t["name"], t["dtype"]) for t in tensors if list(t["shape"]) == shape]
    quantized_ops = [t for t in tensors if t["dtype"] == np.int8]
    assert len(quantized_ops) > len(tables)  # activations too, not only weights


def test_qat_int8_tflite_top_k_overlaps_qat_keras(qat, qat_int8, keras_topk):
    _, sample, _ = qat
    got = LiteRTRecommender(qat_int8).recommend(sample)["item_ids"]
    overlap = float(np.mean([len(set(a) & set(b)) / K
                             for a, b in zip(got, keras_topk["item_ids"])]))
    assert overlap >= MIN_OVERLAP, (
        f"QAT int8: mean top-{K} overlap with the QAT Keras model is {overlap:.3f} < "
        f"{MIN_OVERLAP} on {len(sample)} histories")
