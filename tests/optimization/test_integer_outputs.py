"""Layers whose every output is an integer tensor (id plumbing) are left unquantized, found with
Keras' public per-node outputs (`get_output_at`), whatever the number of calls."""

import pytest

from tfrec_attn._keras import keras
from tfrec_attn.optimization.quantize_configs import _outputs_integers


def _model(second_input_dtype: str):
    a = keras.Input((3,), dtype="int64")
    b = keras.Input((3,), dtype=second_input_dtype)
    join = keras.layers.Concatenate(name="join")
    ids = join([a, a])
    other = join([b, b])  # the same layer's second node
    return keras.Model([a, b], [ids, other]).get_layer("join")


@pytest.mark.parametrize("dtype, expected", [("int64", True), ("float32", False)])
def test_every_node_of_the_layer_counts(dtype, expected):
    assert _outputs_integers(_model(dtype)) is expected


def test_a_layer_never_called_is_not_integer_plumbing():
    assert _outputs_integers(keras.layers.Concatenate()) is False
