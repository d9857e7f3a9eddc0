"""6. of the layer contract (`test_layers_contract.py` has the rest): SavedModel and `.keras`
reloads of every case in `tfrec_attn/testing/layer_cases.py`.

A file of its own because saving is most of the contract's time (tracing every sublayer's call),
so the two test workers (`--dist loadfile`) share the suite.
"""

import numpy as np
import pytest

from tfrec_attn._keras import keras
from tfrec_attn.testing import layer_cases as lc
from tfrec_attn.testing.layer_cases import ATTENTION_CASES

# A case sharing another's class and weights runs in the slow suite only; the case
# `lc.SAME_STRUCTURE_AS` names covers it here (`test_layers_contract.py` checks that they match:
# `test_same_structure_cases_share_class_inputs_and_weights`).
STRUCTURE_CASES = [pytest.param(c, id=c.name, marks=pytest.mark.slow)
                   if c.name in lc.SAME_STRUCTURE_AS else pytest.param(c, id=c.name)
                   for c in ATTENTION_CASES]


@pytest.mark.parametrize("case", STRUCTURE_CASES)
@pytest.mark.parametrize("fmt", ["tf", "keras"])
def test_saved_model_round_trip(case, fmt, tmp_path):
    inputs, mask = case.sample()
    model = lc.build_model(case, case.make())
    feed = lc.model_feed(case, inputs, mask)
    expected = model(feed)
    path = str(tmp_path / ("m" if fmt == "tf" else "m.keras"))
    model.save(path, save_format=fmt)
    restored = keras.models.load_model(path)
    assert any(type(layer) is case.cls for layer in restored.layers)
    np.testing.assert_allclose(restored(feed), expected, atol=1e-6)
