"""The contract every layer in `ATTENTION_CASES` honours (one class, parameterized over the cases).

Shapes, padding, implicit masks, causality, config, serialization and h5 weight round trips, mixed
precision and pruning; SavedModel and `.keras` reloads are in `test_layers_contract_saving.py`. A
new variant is covered by adding one line to `tfrec_attn/testing/layer_cases.py`.
"""

import numpy as np
import pytest
import tensorflow_model_optimization as tfmot

from tfrec_attn import layers
from tfrec_attn._keras import keras, tf
from tfrec_attn.layers import BaseAttention, PaddingMask
from tfrec_attn.testing import layer_cases as lc
from tfrec_attn.testing.layer_cases import ATTENTION_CASES

SCORING_CASES = [c for c in ATTENTION_CASES if c.returns_scores]
CAUSAL_CASES = [c for c in ATTENTION_CASES if c.causal]
# Tracing-bound checks run a case sharing another's class and weights in the slow suite only;
# the case `lc.SAME_STRUCTURE_AS` names runs them in the fast suite.
STRUCTURE_CASES = [pytest.param(c, id=c.name, marks=pytest.mark.slow)
                   if c.name in lc.SAME_STRUCTURE_AS else pytest.param(c, id=c.name)
                   for c in ATTENTION_CASES]


def _rows(x, query_mask):
    """`x` at the real query positions (all of `x` when the output is pooled)."""
    x = np.asarray(x)
    return x if query_mask is None else x[query_mask]


def _assert_masked_weights(weights, case, mask):
    """Zero weight on padded keys; each real query row sums to one over the real keys."""
    weights = np.asarray(weights)
    key_mask = case.score_key_mask(mask)
    if key_mask is not None:  # None: weights over projected keys only (low-rank)
        padded_keys = np.broadcast_to(~key_mask[:, None, None, :], weights.shape)
        np.testing.assert_array_equal(weights[padded_keys], 0.0)
    sums = weights.sum(axis=-1)  # (batch, heads, T)
    query_mask = case.query_mask(mask)
    if query_mask is not None:
        sums = np.transpose(sums, (0, 2, 1))[query_mask]
    np.testing.assert_allclose(sums, 1.0, atol=1e-5)


@pytest.mark.parametrize("case", ATTENTION_CASES, ids=str)
class TestLayerContract:
    """1., 2., 5. and 7. for every case: shapes, padding, masks, serialization, precision."""

    # 1. shapes -------------------------------------------------------------------------------
    def test_output_shape_matches_compute_output_shape(self, case):
        inputs, mask = case.sample()
        layer = case.make()
        outputs = lc.call(case, layer, inputs, mask)
        shapes = lc.input_shapes(case, inputs)
        assert outputs.shape == layer.compute_output_shape(shapes)
        if isinstance(shapes, list):  # a tuple of shapes, as `call` takes a tuple of inputs
            assert outputs.shape == layer.compute_output_shape(tuple(shapes))

    # 2. padding ------------------------------------------------------------------------------
    def test_padded_content_does_not_change_real_outputs(self, case):
        inputs, mask = case.sample()
        layer = case.make()
        before = lc.call(case, layer, inputs, mask)
        after = lc.call(case, layer, lc.perturb_padding(inputs, mask), mask)
        query_mask = case.query_mask(mask)
        np.testing.assert_allclose(_rows(after, query_mask), _rows(before, query_mask),
                                   atol=1e-6)
        if case.masks_keys and case.zeroes_padding and query_mask is not None:
            np.testing.assert_array_equal(np.asarray(after)[~query_mask], 0.0)

    def test_implicit_masking_mask_equals_explicit_mask(self, case):
        """A functional model fed through `keras.layers.Masking` == `mask=` passed by hand."""
        inputs, mask = case.sample()
        layer = case.make()
        explicit = lc.call(case, layer, inputs, mask)
        lengths = [lc.QUERY_LENGTH, lc.VALUE_LENGTH] if case.cross else [lc.QUERY_LENGTH]
        symbolic = [keras.Input((n, lc.DIM)) for n in lengths]
        masked = [keras.layers.Masking(0.0)(s) for s in symbolic]
        model = keras.Model(symbolic, layer(lc.unlist(masked, case.cross)))
        implicit = model(lc.as_list(inputs))
        np.testing.assert_allclose(_rows(implicit, case.query_mask(mask)),
                                   _rows(explicit, case.query_mask(mask)), atol=1e-6)

    def test_embedding_mask_zero_equals_padding_mask(self, case):
        """Eager: the mask an `Embedding(mask_zero=True)` attaches == `PaddingMask` of the ids."""
        inputs, mask = case.sample()
        ids = lc.ids_from_mask(mask)
        embedding = keras.layers.Embedding(50, lc.DIM, mask_zero=True)
        layer = case.make()
        embedded = [embedding(tf.constant(i)) for i in ids]
        implicit = layer(lc.unlist(embedded, case.cross))
        padding = [PaddingMask()(tf.constant(i)) for i in ids]
        explicit = layer(lc.unlist([tf.identity(e) for e in embedded], case.cross),
                         mask=lc.unlist(padding, case.cross))
        np.testing.assert_allclose(implicit, explicit, atol=1e-6)
        if not case.pooled:
            np.testing.assert_array_equal(implicit._keras_mask, case.query_mask(mask))

    # 5. config and serialization -------------------------------------------------------------
    def test_config_round_trip(self, case):
        inputs, mask = case.sample()
        layer = case.make()
        expected = lc.call(case, layer, inputs, mask)
        clone = case.cls.from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()
        lc.call(case, clone, inputs, mask)  # builds
        clone.set_weights(layer.get_weights())
        np.testing.assert_allclose(lc.call(case, clone, inputs, mask), expected, atol=1e-6)

    def test_registered_and_deserializable_without_custom_objects(self, case):
        assert keras.saving.get_registered_name(case.cls) == f"tfrec_attn>{case.cls.__name__}"
        layer = case.make()
        restored = keras.layers.deserialize(keras.layers.serialize(layer))
        assert type(restored) is case.cls
        assert restored.get_config() == layer.get_config()

    # 7. mixed precision ----------------------------------------------------------------------
    @pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
    def test_mixed_precision(self, case, policy):
        inputs, mask = case.sample()
        layer = case.make(dtype=policy)
        if case.returns_scores:
            outputs, weights = lc.call(case, layer, inputs, mask, return_attention_scores=True)
            assert weights.dtype == tf.float32
            _assert_masked_weights(weights, case, mask)
        else:
            outputs = lc.call(case, layer, inputs, mask)
        assert outputs.dtype == keras.mixed_precision.Policy(policy).compute_dtype
        assert np.all(np.isfinite(tf.cast(outputs, tf.float32).numpy()))
        assert keras.mixed_precision.global_policy().name == "float32"


@pytest.mark.parametrize("case", STRUCTURE_CASES)
class TestWeightsAndPruningContract:
    """5. h5 weights and 8. pruning (6. is in test_layers_contract_saving.py)."""

    def test_weight_names_are_unique_and_h5_weights_round_trip(self, case, tmp_path):
        """h5 files key weights by name: sublayers must not all write `parent/kernel:0`."""
        inputs, mask = case.sample()
        feed = lc.model_feed(case, inputs, mask)
        model = lc.build_model(case, case.make())
        names = [weight.name for weight in model.weights]
        assert len(names) == len(set(names)), names
        model.save_weights(str(tmp_path / "weights.h5"))
        restored = lc.build_model(case, case.make())
        restored.load_weights(str(tmp_path / "weights.h5"))
        np.testing.assert_allclose(restored(feed), model(feed), atol=1e-6)

    # 8. pruning ------------------------------------------------------------------------------
    def test_pruning_reaches_sparsity_and_keeps_explicit_mask(self, case):
        sparsity = tfmot.sparsity.keras
        inputs, mask = case.sample()
        model = lc.build_model(case, case.make(), project=True,
                               return_scores=case.returns_scores)
        pruned = sparsity.prune_low_magnitude(
            model,
            # frequency=1: the wrapper increments its step before the first mask update, so
            # the default frequency (100) would not prune within a single step.
            pruning_schedule=sparsity.ConstantSparsity(0.5, begin_step=0, frequency=1),
        )
        feed = lc.model_feed(case, inputs, mask)
        output_shape = model(feed)["output"].shape if case.returns_scores else model(feed).shape
        target = np.zeros(output_shape, np.float32)
        if case.returns_scores:
            target = {"output": target}
        # run_eagerly: one step of a tiny model; tracing the train function would cost ~5 s.
        pruned.compile(optimizer="sgd", loss={"output": "mse"} if case.returns_scores else "mse",
                       run_eagerly=True)
        pruned.fit(feed, target, batch_size=lc.BATCH, epochs=1, verbose=0,
                   callbacks=[sparsity.UpdatePruningStep()])

        # `PruneLowMagnitude` is not public API; its wrappers are the layers with `pruning_vars`.
        wrappers = [w for w in pruned.layers if hasattr(w, "pruning_vars")]
        wrapped = [w for w in wrappers if type(w.layer) is case.cls]
        assert len(wrapped) == 1, "the layer must be wrapped (it has get_prunable_weights)"
        pruned_weights = [weight for w in wrappers for weight, _, _ in w.pruning_vars]
        assert len(wrapped[0].pruning_vars) == len(wrapped[0].layer.get_prunable_weights())
        assert pruned_weights
        for weight in pruned_weights:
            assert lc.sparsity(weight) == pytest.approx(0.5, abs=0.05), weight.name

        # The explicit mask survives the wrapper: padded content changes nothing real, and
        # padded keys still get zero weight.
        before = pruned(feed)
        perturbed = lc.perturb_padding(inputs, mask)
        after = pruned(lc.model_feed(case, perturbed, mask))
        if case.returns_scores:
            _assert_masked_weights(after["scores"], case, mask)
            before, after = before["output"], after["output"]
        query_mask = case.query_mask(mask)
        np.testing.assert_allclose(_rows(after, query_mask), _rows(before, query_mask),
                                   atol=1e-6)
        if case.masks_keys and case.zeroes_padding and query_mask is not None:
            np.testing.assert_array_equal(np.asarray(after)[~query_mask], 0.0)


@pytest.mark.parametrize("case", SCORING_CASES, ids=str)
class TestAttentionWeightsContract:
    """1./2. for the layers that return attention weights."""

    def test_attention_weights_shape(self, case):
        inputs, mask = case.sample()
        _, weights = lc.call(case, case.make(), inputs, mask, return_attention_scores=True)
        assert weights.shape == case.score_shape()
        assert weights.dtype == tf.float32

    def test_padded_keys_get_zero_weight(self, case):
        inputs, mask = case.sample()
        _, weights = lc.call(case, case.make(), inputs, mask, return_attention_scores=True)
        _assert_masked_weights(weights, case, mask)


@pytest.mark.parametrize("case", CAUSAL_CASES, ids=str)
class TestCausalContract:
    """3. causality, for the causal variants."""

    def test_case_builds_a_causal_layer(self, case):
        assert case.make().get_config()["causal"] is True

    def test_causal_output_ignores_the_future(self, case):
        inputs, _ = case.sample()
        inputs = np.random.default_rng(5).normal(size=inputs.shape).astype(np.float32)
        layer = case.make()
        before = np.asarray(layer(tf.constant(inputs)))
        for t in range(lc.QUERY_LENGTH - 1):
            after = np.asarray(layer(tf.constant(lc.perturb_after(inputs, t))))
            np.testing.assert_allclose(after[:, : t + 1], before[:, : t + 1], atol=1e-5)
            assert not np.allclose(after[:, t + 1:], before[:, t + 1:])


def test_every_attention_variant_has_a_case():
    """A new `BaseAttention` subclass exported by `tfrec_attn.layers` needs a line in the cases."""
    exported = [getattr(layers, name) for name in layers.__all__]  # not a set: has a dict
    variants = {cls for cls in exported if isinstance(cls, type)
                and issubclass(cls, BaseAttention) and cls is not BaseAttention}
    covered = {case.cls for case in ATTENTION_CASES}
    assert variants <= covered, sorted(cls.__name__ for cls in variants - covered)


@pytest.mark.parametrize("name, same_as", sorted(lc.SAME_STRUCTURE_AS.items()))
def test_same_structure_cases_share_class_inputs_and_weights(name, same_as):
    """What the slow marks on `STRUCTURE_CASES` rely on: the covering case has the same class,
    inputs and weights (names and trainability), and is itself in the fast suite."""
    cases = {case.name: case for case in ATTENTION_CASES}
    case, cover = cases[name], cases[same_as]
    assert same_as not in lc.SAME_STRUCTURE_AS
    assert (case.cls, case.input_fn) == (cover.cls, cover.input_fn)

    def weights(c):
        inputs, mask = c.sample()
        layer = c.make(name="layer")
        lc.call(c, layer, inputs, mask)
        return [(weight.name, weight.trainable) for weight in layer.weights]

    assert weights(case) == weights(cover)


def test_every_exported_layer_class_is_registered():
    """README: every layer is registered (`tfrec_attn>Name`), the base class included, so a
    `.keras` file holding any of them reloads without `custom_objects`."""
    import tfrec_attn.layers as layers

    classes = [getattr(layers, name) for name in layers.__all__]
    classes = [c for c in classes if isinstance(c, type) and issubclass(c, keras.layers.Layer)]
    assert len(classes) > 20
    unregistered = [c.__name__ for c in classes
                    if keras.saving.get_registered_name(c) != f"tfrec_attn>{c.__name__}"]
    assert unregistered == []
