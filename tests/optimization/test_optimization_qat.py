"""Quantization-aware training: every weighted layer trains wrapped; quantized kernels are used."""

import numpy as np
import optimization_cases as oc
import pytest

from tfrec_attn._keras import keras, tf
from tfrec_attn.layers import MultiHeadAttention, ScaledDotProductAttention
from tfrec_attn.optimization import (
    AttentionQuantizeConfig,
    NoOpQuantizeConfig,
    make_qat_model,
    quantize_config_for,
    quantize_scope,
)


@pytest.mark.parametrize("case", oc.weighted_layer_cases())
def test_each_layer_qat_runs_forward_and_trains_one_step(case):
    model, feed, name = oc.case_model(case)
    qat = make_qat_model(model)
    wrapper = qat.get_layer(name)
    assert type(wrapper).__name__ == "QuantizeWrapperV2"
    assert type(wrapper.quantize_config) is type(quantize_config_for(model.get_layer(name)))
    # Only float inputs get an input quantizer; ids stay integers.
    quantized_inputs = [layer for layer in qat.layers if type(layer).__name__ == "QuantizeLayer"]
    assert len(quantized_inputs) == sum(x.dtype.is_floating for x in model.inputs)

    outputs = qat(feed)
    assert outputs.shape == model(feed).shape
    assert np.all(np.isfinite(outputs.numpy()))
    # The float variables behind the fake-quantized weights are trained (straight-through
    # gradients), although the wrapped layer's attributes now hold the quantized tensors.
    quantized = [w for w, _, _ in wrapper._weight_vars]
    assert quantized and all(isinstance(w, tf.Variable) for w in quantized)
    trainable = {id(w) for w in qat.trainable_weights}
    assert all(id(w) in trainable for w in quantized)
    before = [w.numpy() for w in quantized]
    qat.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", run_eagerly=True)
    history = qat.fit(feed, np.ones(outputs.shape, np.float32), batch_size=oc.lc.BATCH,
                      epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert all(not np.array_equal(w.numpy(), b) for w, b in zip(quantized, before))


@pytest.mark.parametrize("case", [c for c in oc.weighted_layer_cases()
                                  if c.values[0] != "item_embedding"])
def test_set_quantize_weights_feeds_the_forward_pass(case):
    """Setting the weights a config addresses (to zeros) == zeroing the variables behind them."""
    inputs, mask = case.sample()
    layer = case.make()
    original = oc.lc.call(case, layer, inputs, mask).numpy()
    config = quantize_config_for(layer)
    variables = [w for w, _ in config.get_weights_and_quantizers(layer)]
    if not variables:
        pytest.skip(f"{type(config).__name__} quantizes no weights")
    config.set_quantize_weights(layer, [tf.zeros_like(v) for v in variables])
    zeroed = oc.lc.call(case, layer, inputs, mask).numpy()
    config.set_quantize_weights(layer, variables)  # put the variables back
    for variable in variables:
        variable.assign(tf.zeros_like(variable))
    np.testing.assert_allclose(oc.lc.call(case, layer, inputs, mask), zeroed, atol=1e-6)
    assert not np.allclose(zeroed, original)


def test_qat_forward_uses_fake_quantized_kernels():
    x = keras.Input((6, 8))
    model = keras.Model(x, MultiHeadAttention(num_heads=2, name="mha")(x))
    qat = make_qat_model(model)
    wrapper = qat.get_layer("mha")
    qat(np.random.default_rng(0).normal(size=(2, 6, 8)).astype(np.float32), training=True)
    weights = {w.name.split("/", 1)[1]: w for w in wrapper.weights}
    for dense in ("query_dense", "key_dense", "value_dense", "output_dense"):
        sublayer = getattr(wrapper.layer, dense)
        variable = weights[f"{sublayer.name}/kernel:0"]
        expected = tf.quantization.fake_quant_with_min_max_vars(
            variable, weights[f"{dense}_kernel_min:0"], weights[f"{dense}_kernel_max:0"],
            num_bits=8, narrow_range=True)
        used = sublayer.kernel
        assert not isinstance(used, tf.Variable), "Dense.call must read the quantized tensor"
        np.testing.assert_allclose(used, expected, atol=1e-7)
        assert not np.allclose(used, variable)
        # On the 8-bit grid: at most 255 distinct values.
        assert len(np.unique(used.numpy())) <= 255


def test_configs_keep_logits_and_parameter_free_layers_float():
    assert isinstance(quantize_config_for(ScaledDotProductAttention()), NoOpQuantizeConfig)
    assert isinstance(quantize_config_for(keras.layers.LayerNormalization()), NoOpQuantizeConfig)
    layer = oc.lc.ATTENTION_CASES[4].make()  # additive: its score vector feeds the logits only
    layer(np.ones((1, 3, 8), np.float32))
    config = quantize_config_for(layer)
    assert isinstance(config, AttentionQuantizeConfig)
    paths = [w.name for w, _ in config.get_weights_and_quantizers(layer)]
    assert not any("score_vector" in p for p in paths)
    assert len(paths) == 4


def test_every_registered_layer_has_a_quantize_config():
    required = {"ItemEmbedding": {"vocab_size": 5, "dim": 2},
                "PositionEmbedding": {"max_length": 4},
                "SinusoidalPositionEmbedding": {"max_length": 4},
                "LowRankAttention": {"max_length": 4},
                "TransitionPrior": {"vocab_size": 5, "num_neighbors": 2}}
    for cls in oc.registered_layer_classes():
        layer = cls(**required.get(cls.__name__, {}))
        assert quantize_config_for(layer) is not None, cls


def test_unknown_layer_with_weights_is_rejected():
    class Scale(keras.layers.Layer):
        def build(self, input_shape):
            self.scale = self.add_weight(name="scale", shape=())

        def call(self, inputs):
            return inputs * self.scale

    layer = Scale()
    layer.build((None, 2))
    with pytest.raises(ValueError, match="No QuantizeConfig"):
        quantize_config_for(layer)


def test_qat_weights_round_trip(tmp_path):
    """Quantizer ranges have distinct names (`query_dense_kernel_min`...), so checkpoints
    restore every one of them."""
    def build():
        x = keras.Input((6, 8))
        return make_qat_model(keras.Model(x, MultiHeadAttention(num_heads=2, name="mha")(x)))

    qat = build()
    feed = np.random.default_rng(0).normal(size=(2, 6, 8)).astype(np.float32)
    qat(feed, training=True)  # sets the quantization ranges
    names = [w.name for w in qat.weights]
    assert len(names) == len(set(names))
    qat.save_weights(str(tmp_path / "qat"))
    fresh = build()
    fresh.load_weights(str(tmp_path / "qat")).assert_existing_objects_matched()
    np.testing.assert_allclose(fresh(feed), qat(feed), atol=1e-6)


@pytest.mark.parametrize("case", oc.weighted_layer_cases())
def test_each_layer_qat_model_reloads_from_h5(case, tmp_path):
    """A whole QAT model saved as `.h5` reloads in `quantize_scope` with the same outputs. TFMOT's
    wrapper once listed a not-yet-built layer's quantized kernels first on load, so every layer
    with sublayer kernels failed (a bias assigned to a kernel)."""
    model, feed, _ = oc.case_model(case)
    qat = make_qat_model(model)
    qat(feed, training=True)  # sets the quantization ranges
    qat.save(tmp_path / "qat.h5")
    with quantize_scope():
        loaded = keras.models.load_model(tmp_path / "qat.h5")
    np.testing.assert_allclose(loaded(feed), qat(feed), atol=1e-6)


@pytest.mark.parametrize("attention", ["full", "linear"])
def test_qat_sasrec_encoder_reloads_from_keras_format(attention, tmp_path):
    """Integer ids in: no TFMOT input `QuantizeLayer`, whose `.keras` reload fails ("expected 5
    variables, but received 3"), so the SASRec encoder's QAT model reloads from `.keras` too."""
    from tfrec_attn.models import SASRecConfig, build_sequence_encoder

    encoder = build_sequence_encoder(SASRecConfig(vocab_size=30, max_len=6, dim=8, num_blocks=1,
                                                  attention=attention))
    qat = make_qat_model(encoder)
    feed = np.array([[0, 0, 2, 5, 7, 9], [3, 4, 5, 6, 7, 8]], np.int64)
    qat(feed, training=True)  # sets the quantization ranges
    qat.save(tmp_path / "qat.keras")
    with quantize_scope():
        loaded = keras.models.load_model(tmp_path / "qat.keras")
    np.testing.assert_allclose(loaded(feed), qat(feed), atol=1e-6)


def test_qat_refuses_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    x = keras.Input((6, 8))
    model = keras.Model(x, MultiHeadAttention(num_heads=2, name="mha")(x))
    with pytest.raises(ValueError, match="float32"):
        make_qat_model(model)


def test_qat_names_layers_called_for_their_attention_weights():
    """TFMOT cannot wrap a layer with two outputs; the error names the layer and the way out
    (TFMOT's own said "Multiple output tensors not handled currently")."""
    x = keras.Input((6, 8))
    mha = MultiHeadAttention(num_heads=2, name="mha")
    output, _ = mha(x, return_attention_scores=True)
    with pytest.raises(ValueError, match=r"return_attention_scores=True.*in this model: "
                                         r"\['mha'\]"):
        make_qat_model(keras.Model(x, output))
    # the way out it names: a model calling the same layer for its output only quantizes
    outputs_only = keras.Model(x, mha(x))
    assert make_qat_model(outputs_only)(np.ones((1, 6, 8), np.float32)).shape == (1, 6, 8)


def test_qat_keeps_quantizing_layers_with_several_unquantized_outputs():
    """`HistoryTopK` returns ids and scores and quantizes nothing: TFMOT wraps it fine, so the
    check above must not refuse it."""
    from tfrec_attn.layers import top_k_outputs

    x, history = keras.Input((4,)), keras.Input((3,), dtype="int64")
    outputs = top_k_outputs(keras.layers.Dense(20)(x), history, k=3)
    qat = make_qat_model(keras.Model([x, history], outputs))
    got = qat([np.ones((1, 4), np.float32), np.array([[2, 3, 4]])])
    assert [tuple(t.shape) for t in tf.nest.flatten(got)] == [(1, 3), (1, 3)]


def test_overlapping_qat_wrapping_in_two_threads_leaves_tfmot_as_it_was():
    """`make_qat_model` swaps one TFMOT module reference while it wraps; two threads doing so
    at once used to restore in the wrong order and leave the swapped reference in place."""
    import threading

    from tensorflow_model_optimization.python.core.quantization.keras import (
        quantize as tfmot_quantize,
    )

    from tfrec_attn.optimization import qat
    from tfrec_attn.optimization.quantize_configs import QuantizeWrapperV2

    original = tfmot_quantize.quantize_wrapper
    first_in, let_first_out = threading.Event(), threading.Event()
    second_in, let_second_out = threading.Event(), threading.Event()

    def hold(entered, leave):
        with qat._wrapping_with(QuantizeWrapperV2):
            entered.set()
            leave.wait(10)

    a = threading.Thread(target=hold, args=(first_in, let_first_out))
    a.start()
    assert first_in.wait(10)
    b = threading.Thread(target=hold, args=(second_in, let_second_out))
    b.start()
    second_in.wait(0.5)  # without the lock the second enters now, and leaves after the first
    let_first_out.set()
    a.join(10)
    let_second_out.set()
    b.join(10)
    left = tfmot_quantize.quantize_wrapper
    tfmot_quantize.quantize_wrapper = original  # whatever happened, for the tests that follow
    assert second_in.is_set() and left is original
