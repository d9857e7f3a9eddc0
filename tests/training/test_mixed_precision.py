"""A tiny SASRec trains under `mixed_bfloat16` (bfloat16 compute, float32 softmax and loss)."""

import logging

import numpy as np
import pytest

from tfrec_attn._keras import keras, tf
from tfrec_attn.data import make_training_dataset
from tfrec_attn.models import SASRec, SASRecConfig


def _global_policy(name):
    """Sets the global dtype policy `name` for one test and restores the previous one after."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    yield
    keras.mixed_precision.set_global_policy(previous)


@pytest.fixture
def bfloat16_policy():
    yield from _global_policy("mixed_bfloat16")


def _first_loss_and_trained(chain_sequences, loss, train=True):
    """`(model, loss of the first batch before training, fit logs, which encoder weights the
    step changed)`; `train=False` skips the step (logs `{}`, changed `[]`)."""
    sequences, vocab = chain_sequences
    keras.utils.set_random_seed(0)
    model = SASRec(SASRecConfig(vocab_size=vocab, max_len=12, dim=16, num_blocks=1,
                                num_heads=2, dropout=0.0, loss=loss))
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    batch = next(iter(make_training_dataset(sequences, 12, 64, shuffle=False)))
    before = model.compute_loss(batch)
    if not train:
        return model, float(before), {}, []
    weights = [w.numpy() for w in model.encoder.trainable_weights]
    logs = model.fit(tf.data.Dataset.from_tensors(batch), verbose=0).history
    logs = {name: values[-1] for name, values in logs.items()}
    changed = [not np.array_equal(w, v.numpy())
               for w, v in zip(weights, model.encoder.trainable_weights)]
    return model, float(before), logs, changed


@pytest.mark.parametrize("loss", ["sampled", "softmax", "bce"])
def test_sasrec_trains_a_step_under_mixed_bfloat16(chain_sequences, loss, bfloat16_policy):
    model, loss_bf16, logs, changed = _first_loss_and_trained(chain_sequences, loss)
    states = model.encoder(tf.constant([[0, 2, 3, 4]], tf.int64))
    assert states.dtype == tf.bfloat16
    assert all(w.dtype == tf.float32 for w in model.trainable_weights)  # float32 variables
    assert np.isfinite(logs["loss"]) and all(changed)
    keras.mixed_precision.set_global_policy("float32")
    _, loss_f32, _, _ = _first_loss_and_trained(chain_sequences, loss, train=False)
    # bfloat16 keeps 8 mantissa bits: the untrained loss agrees with float32 to about 1%.
    np.testing.assert_allclose(loss_bf16, loss_f32, rtol=2e-2)


@pytest.fixture
def float16_policy():
    yield from _global_policy("mixed_float16")


def _tiny_fit(optimizer, steps=2):
    """`(model, last fit logs, weights before fitting)` of a tiny SASRec (l2 > 0: a
    regularization loss) fit `steps` steps on one fixed batch with `optimizer`."""
    model = SASRec(SASRecConfig(vocab_size=30, max_len=6, dim=8, num_blocks=1, dropout=0.0,
                                l2=1e-3))
    model.compile(optimizer=optimizer)
    weights = [w.numpy() for w in model.encoder.trainable_weights]
    history = np.array([[0, 2, 3, 4, 5, 6], [0, 0, 7, 8, 9, 10]], np.int64)
    batch = {"history": history, "targets": np.roll(history, -1, axis=1) * (history > 0)}
    logs = model.fit(tf.data.Dataset.from_tensors(batch).repeat(steps), verbose=0).history
    return model, {name: values[-1] for name, values in logs.items()}, weights


def test_sasrec_scales_the_loss_under_mixed_float16(float16_policy, caplog):
    with caplog.at_level(logging.WARNING, logger="tensorflow"):
        model, logs, _ = _tiny_fit(keras.optimizers.Adam(1e-2))
    assert isinstance(model.optimizer, keras.mixed_precision.LossScaleOptimizer)
    assert not [r for r in caplog.records if "get_scaled_loss" in r.getMessage()]
    assert set(logs) == {"loss", "regularization_loss", "total_loss"}
    assert logs["regularization_loss"] > 0 and np.isfinite(logs["total_loss"])
    np.testing.assert_allclose(logs["total_loss"], logs["loss"] + logs["regularization_loss"],
                               rtol=1e-5)


def test_sasrec_gradients_carry_the_loss_scale(float16_policy):
    # A loss scale of 2**40 overflows the float16 gradients only if it is applied to the loss:
    # the optimizer then skips the step and halves the scale (unscaled, the step would apply).
    optimizer = keras.mixed_precision.LossScaleOptimizer(
        keras.optimizers.Adam(1e-2), initial_scale=2.0**40)
    model, _, weights = _tiny_fit(optimizer, steps=1)
    assert model.optimizer is optimizer
    assert float(optimizer.loss_scale) == 2.0**39
    assert int(optimizer.dynamic_counter) == 0
    for before, variable in zip(weights, model.encoder.trainable_weights):  # step skipped
        np.testing.assert_array_equal(before, variable.numpy())


def test_sasrec_float32_train_step_logs_are_unchanged():
    model, logs, _ = _tiny_fit(keras.optimizers.Adam(1e-2))
    assert not isinstance(model.optimizer, keras.mixed_precision.LossScaleOptimizer)
    assert set(logs) == {"loss", "regularization_loss", "total_loss"}
    assert logs["regularization_loss"] > 0
