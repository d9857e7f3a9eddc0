"""The int8 size target on a large catalogue: one int8 copy of the tied item table.

Sizes are deterministic, so an untrained model (weights do not matter, shapes do) of the
Games size class is enough: 20k items, d=50, 2 blocks.
"""

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from tfrec_attn._keras import tf
from tfrec_attn.data import pad_left
from tfrec_attn.export import LiteRTRecommender, assert_builtin_only, convert_to_tflite
from tfrec_attn.models import SASRec, SASRecConfig

VOCAB, DIM, MAX_LEN = 20_000, 50, 50
MAX_FRACTION = 0.30  # the target: int8 file <= 30% of float32


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    model = SASRec(SASRecConfig(vocab_size=VOCAB, max_len=MAX_LEN, dim=DIM, num_blocks=2))
    model(tf.constant(pad_left([[2]], MAX_LEN)))
    root = tmp_path_factory.mktemp("large")
    files = {mode: convert_to_tflite(model, root / f"{mode}.tflite", quantization=mode)
             for mode in ("none", "dynamic")}
    return model, files


def _tables(path) -> list[dict]:
    """Stored (constant) tensors shaped like the item table."""
    return [t for t in Interpreter(model_path=str(path)).get_tensor_details()
            if list(t["shape"]) == [VOCAB, DIM] and "dequantize" not in t["name"]]


def test_int8_weights_file_is_at_most_30_percent_of_float32(large):
    _, files = large
    float_bytes, int8_bytes = (files[m].stat().st_size for m in ("none", "dynamic"))
    assert int8_bytes <= MAX_FRACTION * float_bytes, (
        f"int8 {int8_bytes:,} bytes = {int8_bytes / float_bytes:.1%} of float32 "
        f"{float_bytes:,} bytes (target {MAX_FRACTION:.0%})")


def test_one_int8_copy_of_the_tied_table(large):
    _, files = large
    tables = _tables(files["dynamic"])
    assert [t["dtype"] for t in tables] == [np.int8], [(t["name"], t["dtype"]) for t in tables]
    assert len(tables[0]["quantization_parameters"]["scales"]) == 1  # per-tensor, no 20k scales
    assert [t["dtype"] for t in _tables(files["none"])] == [np.float32]
    assert_builtin_only(files["dynamic"])


def test_shared_table_graph_ranks_like_keras(large):
    model, files = large
    histories = pad_left(np.random.default_rng(0).integers(2, VOCAB, (16, 20)), MAX_LEN)
    want = model.topk_model(k=10)(tf.constant(histories))["item_ids"].numpy()
    got = LiteRTRecommender(files["dynamic"]).recommend(histories)["item_ids"]
    overlap = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, want)]))
    assert overlap >= 0.9, f"dynamic-range top-10 overlap with Keras is {overlap:.3f} < 0.9"
    float_ids = LiteRTRecommender(files["none"]).recommend(histories)["item_ids"]
    np.testing.assert_array_equal(float_ids, want)
