"""SASRec exports refuse what they cannot serve: unstripped pruning wrappers (named, as the DIN
exporters do) and mixed precision top-k graphs; a mixed precision SASRec converts from its
float32 copy."""

import numpy as np
import pytest

from tfrec_attn._keras import keras, tf
from tfrec_attn.data import pad_left
from tfrec_attn.export import (
    LiteRTRecommender,
    convert_ranker_to_tflite,
    convert_to_tflite,
    export_saved_model,
)
from tfrec_attn.export.module_export import is_pruning_wrapper, reject_pruning_wrappers
from tfrec_attn.export.tflite import float32_copy
from tfrec_attn.models import DIN, DINConfig, SASRec, SASRecConfig
from tfrec_attn.models.sasrec import build_topk_model
from tfrec_attn.optimization import install_encoder, prune_model, strip_pruning
from tfrec_attn.optimization.pruning import PruneLowMagnitude

CONFIG = SASRecConfig(vocab_size=30, max_len=6, dim=8, num_blocks=1, num_heads=2)
HISTORIES = pad_left([[2, 3, 4], [5, 6], [7, 8, 9, 10, 11, 12], [29]], CONFIG.max_len)


@pytest.fixture
def mixed_policy():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="module")
def pruned():
    """A SASRec whose encoder still holds pruning wrappers (not `strip_pruning`'d)."""
    model = SASRec(CONFIG)
    install_encoder(model, prune_model(model.encoder, 0.5, "constant"))
    return model


def test_unstripped_sasrec_is_refused_by_the_saved_model_export(pruned, tmp_path):
    with pytest.raises(ValueError, match=r"still has TFMOT pruning wrappers: export "
                                         r"tfrec_attn\.optimization\.strip_pruning"):
        export_saved_model(pruned, tmp_path, "wrapped", k=5)
    assert not (tmp_path / "wrapped").exists()


def test_unstripped_sasrec_is_refused_by_the_tflite_export(pruned, tmp_path):
    with pytest.raises(ValueError, match="still has TFMOT pruning wrappers"):
        convert_to_tflite(pruned, tmp_path / "w.tflite", k=5)
    assert not (tmp_path / "w.tflite").exists()


def test_stripped_sasrec_exports(pruned, tmp_path):
    install_encoder(pruned, strip_pruning(pruned.encoder))
    assert export_saved_model(pruned, tmp_path, "stripped", k=5).is_dir()


def test_pruning_wrappers_are_found_at_any_depth():
    """Ours (a subclass of TFMOT's) inside a nested model is still found."""
    wrapper = PruneLowMagnitude(keras.layers.Dense(2))
    assert is_pruning_wrapper(wrapper) and not is_pruning_wrapper(wrapper.layer)
    inner = keras.Sequential([keras.Input((3,)), wrapper])
    outer = keras.Sequential([keras.Input((3,)), inner])
    with pytest.raises(ValueError, match="outer still has TFMOT pruning wrappers"):
        reject_pruning_wrappers(outer, "outer", "outer")


def test_mixed_precision_sasrec_converts_from_its_float32_copy(mixed_policy, tmp_path):
    model = SASRec(CONFIG)
    assert model.encoder.layers[-1].compute_dtype == "float16"
    copy = float32_copy(model)
    assert copy is not model
    expected = build_topk_model(copy.encoder, k=5)(tf.constant(HISTORIES))
    for quantization in ("none", "float16"):
        path = convert_to_tflite(model, tmp_path / f"{quantization}.tflite", k=5,
                                 quantization=quantization)
        out = LiteRTRecommender(path).recommend(HISTORIES)
        np.testing.assert_allclose(out["scores"], expected["scores"].numpy(), atol=1e-2)
        if quantization == "none":
            np.testing.assert_array_equal(out["item_ids"], expected["item_ids"].numpy())
    assert keras.mixed_precision.global_policy().name == "mixed_float16"  # restored


def test_mixed_precision_graphs_that_cannot_be_rebuilt_are_named(mixed_policy, tmp_path):
    topk = build_topk_model(SASRec(CONFIG).encoder, k=5)
    with pytest.raises(ValueError, match="mixed precision policy"):
        convert_to_tflite(topk, tmp_path / "t.tflite")
    din = DIN(DINConfig(vocab_size=30, max_len=6, dim=4, attention_units=(4,)))
    with pytest.raises(ValueError, match="mixed precision policy"):
        convert_ranker_to_tflite(din, tmp_path / "d.tflite", num_candidates=3)
    assert not list(tmp_path.iterdir())
