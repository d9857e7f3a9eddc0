"""Contract tests shared by the layers with list inputs (`LIST_INPUT_CASES`: graph attention,
multimodal fusion): a new such layer is covered by adding its case there."""

import numpy as np
import pytest

from tfrec_attn._keras import keras
from tfrec_attn.testing import list_input_cases as lic


@pytest.mark.parametrize("case", lic.LIST_INPUT_CASES, ids=lambda c: c.name)
def test_saved_model_reload_gives_identical_outputs(case, tmp_path):
    inputs, mask = case.sample()
    model = lic.build_model(case, case.make(), return_scores=True)
    feed = lic.model_feed(case, inputs, mask)
    expected = model(feed)
    model.save(str(tmp_path / "m"), save_format="tf")
    restored = keras.models.load_model(str(tmp_path / "m"))
    assert any(type(layer) is case.cls for layer in restored.layers)
    got = restored(feed)
    for key in ("output", "scores"):
        np.testing.assert_allclose(got[key], expected[key], atol=1e-6)
