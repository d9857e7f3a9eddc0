"""WeightAveraging: the average it keeps, where epochs end and where training resumes."""

import numpy as np
import pytest

from tfrec_attn._keras import keras
from tfrec_attn.training.weight_averaging import WeightAveraging


class RecordWeights(keras.callbacks.Callback):
    """The kernel after every batch and at the start and end of every epoch."""

    def __init__(self):
        super().__init__()
        self.after_batch, self.epoch_begin, self.epoch_end = [], [], []

    def _kernel(self):
        return self.model.layers[0].kernel.numpy().copy()

    def on_train_batch_end(self, batch, logs=None):
        self.after_batch.append(self._kernel())

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_begin.append(self._kernel())

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_end.append(self._kernel())


def _fit(decay, epochs=2, callbacks=()):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Dense(1, input_shape=(3,))])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    x = np.random.default_rng(0).normal(size=(12, 3)).astype("float32")
    y = x @ np.array([[1.0], [-2.0], [0.5]], "float32")
    initial = model.layers[0].kernel.numpy().copy()
    averaging = WeightAveraging(decay)
    record = RecordWeights()
    model.fit(x, y, batch_size=4, epochs=epochs, shuffle=False, verbose=0,
              callbacks=[averaging, record, *callbacks])
    return model, initial, record


def _numpy_average(initial, raw_after_batches, decay):
    """tf.train.ExponentialMovingAverage with num_updates: decay_n = min(decay, (1+n)/(10+n))."""
    average = initial.copy()
    averages = []
    for n, raw in enumerate(raw_after_batches, start=1):
        d = min(decay, (1.0 + n) / (10.0 + n))
        average = d * average + (1.0 - d) * raw
        averages.append(average.copy())
    return averages


@pytest.mark.parametrize("decay", [0.0, 0.5, 0.9])
def test_epochs_end_on_the_exponential_moving_average(decay):
    model, initial, record = _fit(decay)
    averages = _numpy_average(initial, record.after_batch, decay)
    steps_per_epoch = 3
    for epoch, kernel in enumerate(record.epoch_end):
        np.testing.assert_allclose(kernel, averages[(epoch + 1) * steps_per_epoch - 1],
                                   rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.layers[0].kernel.numpy(), averages[-1], rtol=1e-5, atol=1e-6)


def test_the_next_epoch_trains_on_from_the_raw_weights():
    _, _, record = _fit(0.9)
    raw_end_of_first_epoch = record.after_batch[2]
    np.testing.assert_allclose(record.epoch_begin[1], raw_end_of_first_epoch)
    assert not np.allclose(record.epoch_end[0], raw_end_of_first_epoch)


def test_early_stopping_keeps_the_best_averaged_weights():
    stopping = keras.callbacks.EarlyStopping(monitor="loss", patience=5,
                                             restore_best_weights=True)
    model, initial, record = _fit(0.9, epochs=3, callbacks=[stopping])
    best = int(stopping.best_epoch)
    np.testing.assert_allclose(model.layers[0].kernel.numpy(), record.epoch_end[best])


@pytest.mark.parametrize("decay", [1.0, -0.1, "0.9", True])
def test_bad_decay_is_named(decay):
    with pytest.raises(ValueError, match="decay"):
        WeightAveraging(decay)
