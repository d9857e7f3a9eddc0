"""exclusive_prefix_sum equals tf.cumsum(exclusive=True), values and gradients."""

import numpy as np
import pytest

from tfrec_attn._keras import tf
from tfrec_attn.layers.prefix_sum import exclusive_prefix_sum


@pytest.mark.parametrize("shape, axis", [((3, 1), 0), ((2, 5, 3), 1), ((2, 1, 33, 4, 2), 2),
                                         ((4, 16), 1), ((2, 17), 1)])
@pytest.mark.parametrize("chunk", [1, 4, 16])
def test_equals_cumsum(shape, axis, chunk):
    x = tf.constant(np.random.default_rng(0).normal(size=shape).astype(np.float32))
    expected = tf.cumsum(x, axis=axis, exclusive=True)
    np.testing.assert_allclose(exclusive_prefix_sum(x, axis, chunk).numpy(), expected.numpy(),
                               atol=1e-5)


def test_dynamic_length_in_a_graph_and_gradient():
    fn = tf.function(lambda x: exclusive_prefix_sum(x, axis=1, chunk=4),
                     input_signature=[tf.TensorSpec((None, None, 3), tf.float32)])
    x = tf.constant(np.random.default_rng(1).normal(size=(2, 11, 3)).astype(np.float32))
    np.testing.assert_allclose(fn(x).numpy(), tf.cumsum(x, 1, exclusive=True).numpy(), atol=1e-5)
    weights = tf.constant(np.arange(11, dtype=np.float32))[None, :, None]
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours = tf.reduce_sum(fn(x) * weights)
        reference = tf.reduce_sum(tf.cumsum(x, 1, exclusive=True) * weights)
    np.testing.assert_allclose(tape.gradient(ours, x).numpy(),
                               tape.gradient(reference, x).numpy(), atol=1e-5)


def test_keeps_dtype_and_rejects_a_bad_axis():
    x = tf.ones((2, 5), tf.float16)
    assert exclusive_prefix_sum(x, 1).dtype == tf.float16
    with pytest.raises(ValueError, match="axis"):
        exclusive_prefix_sum(x, 2)
