"""Evaluate, keep and export an exponential moving average of the weights (Polyak averaging).

Hand-written as a callback because tf-keras has no public way to evaluate the optimizer's own
EMA (`use_ema=True`) between epochs; the averaging itself is `tf.train.ExponentialMovingAverage`.
"""

from tfrec_attn._keras import keras, tf
from tfrec_attn.validation import check_rate


class WeightAveraging(keras.callbacks.Callback):
    """Keeps an exponential moving average of the trainable weights; epochs end on the average.

    After every training batch the average moves towards the weights
    (`tf.train.ExponentialMovingAverage` with `num_updates`, so early steps average over fewer
    updates). At the end of every epoch the model's weights are swapped for the average, so the
    callbacks after this one (ranking evaluation, `EarlyStopping(restore_best_weights=True)`,
    checkpoints) see and keep the averaged model; the next epoch trains on from the raw weights.
    After `fit` the model holds the average of the last epoch, or whatever a later callback
    restored. Put it before the evaluation callback. A run resumed by `RunBackup` (which backs
    up an epoch before this callback swaps the raw weights back) trains on from the averaged
    weights of the last completed epoch and starts a new average.

    Args:
        decay: the average's decay per training step, in `[0, 1)`; 0.99 averages over about
            the last 100 steps.

    Example:
    >>> import numpy as np
    >>> model = keras.Sequential([keras.layers.Dense(1, input_shape=(2,))])
    >>> model.compile("sgd", "mse")
    >>> averaging = WeightAveraging(decay=0.9)
    >>> _ = model.fit(np.ones((8, 2)), np.ones((8, 1)), batch_size=2, epochs=2, verbose=0,
    ...               callbacks=[averaging])
    >>> averaging.steps
    8
    """

    def __init__(self, decay: float = 0.99):
        super().__init__()
        check_rate("decay", decay)
        self.decay = float(decay)
        self.steps = 0
        self._ema = None
        self._raw = None
        self._variables = None
        self._update = None
        self._swapped = False

    def on_train_begin(self, logs=None):
        self._variables = list(self.model.trainable_variables)
        if not self._variables:
            raise ValueError("WeightAveraging: the model has no trainable weights to average.")
        with self.model.distribute_strategy.scope():
            self._num_updates = tf.Variable(0, dtype=tf.int64, trainable=False,
                                            name="ema_num_updates")
            self._ema = tf.train.ExponentialMovingAverage(self.decay,
                                                          num_updates=self._num_updates)
            self._raw = [tf.Variable(v, trainable=False, name="raw_" + v.name.split(":")[0]
                                     .replace("/", "_")) for v in self._variables]
        self._ema.apply(self._variables)  # creates the averages, starting at the weights
        self._swapped = False
        self.steps = 0

        @tf.function
        def update():
            self._num_updates.assign_add(1)
            self._ema.apply(self._variables)

        self._update = update

    def on_train_batch_end(self, batch, logs=None):
        self._update()
        self.steps += 1

    def on_epoch_begin(self, epoch, logs=None):
        self._swap_back()

    def on_epoch_end(self, epoch, logs=None):
        for raw, variable in zip(self._raw, self._variables):
            raw.assign(variable)
            variable.assign(self._ema.average(variable))
        self._swapped = True

    def _swap_back(self):
        if self._swapped:
            for raw, variable in zip(self._raw, self._variables):
                variable.assign(raw)
            self._swapped = False

    def get_config(self) -> dict:
        return {"decay": self.decay}
