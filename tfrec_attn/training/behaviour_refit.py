"""The policy's behaviour head refitted alone to held-out likelihood, after the policy's
training (`tfrec-attn train --model policy --behaviour-refit-epochs N`).

Early stopping restores the policy's best epoch, chosen on the policy's own metric (reward@k
or NDCG@k), where the behaviour head, trained jointly, may still be under-fitted: on ML-100K
its masked cross-entropy was still falling at the restored epoch 3 (6.37, 5.81, 5.68; 5.43 at
epoch 8), so the learned propensities of popular movies were too small (docs/BENCHMARKS.md 9h).
The head is a `Dense` on a stop-gradient copy of the state, so it can be trained alone with
everything else frozen: the policy's outputs do not change. `refit_behaviour_head` trains it
on the training users' logged rounds with the same (masked) behaviour loss and early-stops on
the validation users' behaviour loss (held-out likelihood), restoring the best epoch; a refit
that never beats the head it started from keeps that head (`KeepStartEarlyStopping`). With a
backup directory an interrupted refit resumes after its last completed epoch.
"""

from __future__ import annotations

import contextlib
import time

import numpy as np
import tensorflow_recommenders as tfrs

from tfrec_attn._keras import keras, tf
from tfrec_attn.models import AttentionPolicy
from tfrec_attn.models.losses import FIRST_ITEM_ID, global_mean
from tfrec_attn.models.policy_losses import behaviour_loss
from tfrec_attn.training.backup import CompletedStage, RunBackup
from tfrec_attn.training.callbacks import TimeBudget

HEAD = "behaviour_head"  # build_policy_network's layer name
MONITOR = "val_behaviour_loss"
# The learning rate times PLATEAU_FACTOR after each epoch without a better validation loss
# (Keras' ReduceLROnPlateau). ML-100K, restored policy of docs/BENCHMARKS.md 9h: a constant
# 3e-3 (the run's) stopped at 5.640 (best epoch 2), a constant 1e-3 reached 5.612.
PLATEAU_FACTOR = 0.3
MIN_DELTA = 1e-3  # nats: a smaller fall of the validation loss is no improvement (the
# plateau's rates go on shrinking: 5.6147 -> 5.6137 over 7 more epochs on ML-100K)


class BehaviourHeadFit(tfrs.Model):
    """`policy`'s behaviour-head loss as a model to `fit`: the network runs in inference mode
    (no dropout: the state the off-policy estimates read) and the loss is the head's (masked)
    cross-entropy on the logged actions, `AttentionPolicy.compute_loss`'s behaviour term.
    Logged metric: `behaviour_loss` (the mean over the epoch, or over `evaluate`'s data).
    Freeze the rest of the network (`frozen_except_head`) before compiling it.

    Args:
        policy: an `AttentionPolicy` with the behaviour head.

    Call arguments:
        inputs: history ids `(batch, T)` or a dict with `"history"`.

    Returns:
        The policy network's outputs.

    Example:
    >>> from tfrec_attn.models import AttentionPolicyConfig
    >>> policy = AttentionPolicy(AttentionPolicyConfig(vocab_size=6, max_len=2, dim=4))
    >>> fit = BehaviourHeadFit(policy)
    >>> batch = {"history": tf.constant([[0, 2]]), "action": tf.constant([3])}
    >>> fit.compute_loss(batch).shape
    TensorShape([])
    """

    def __init__(self, policy: AttentionPolicy, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(policy, AttentionPolicy) or not policy.config.behaviour_head:
            raise ValueError("policy must be an AttentionPolicy with the behaviour head. "
                             f"Received: policy={policy!r}")
        # The network, not the policy: the policy's own (idle) loss trackers would join this
        # model's metrics, one of them under the same name.
        self.network = policy.network
        self.excluded = policy.behaviour_excluded  # the masked softmax's excluded actions
        self.loss_tracker = keras.metrics.Mean(name="behaviour_loss")

    def call(self, inputs, training=False):
        if isinstance(inputs, dict):
            inputs = inputs["history"]
        return self.network(inputs, training=False)

    def compute_loss(self, inputs, training: bool = False) -> tf.Tensor:
        logits = self.network(inputs["history"], training=False)["behaviour_logits"]
        actions = tf.reshape(tf.cast(inputs["action"], tf.int32), [-1]) - FIRST_ITEM_ID
        fit = behaviour_loss(logits[:, FIRST_ITEM_ID:], actions,
                             self.excluded(inputs))
        self.loss_tracker.update_state(fit)
        return global_mean(fit)


@contextlib.contextmanager
def frozen_except_head(policy: AttentionPolicy):
    """Every layer of `policy.network` but the behaviour head non-trainable inside the block,
    their flags restored after it.

    Example:
    >>> from tfrec_attn.models import AttentionPolicyConfig
    >>> policy = AttentionPolicy(AttentionPolicyConfig(vocab_size=6, max_len=2, dim=4))
    >>> with frozen_except_head(policy):
    ...     sorted(v.name.split("/")[-1] for v in policy.trainable_variables)
    ['bias:0', 'kernel:0']
    >>> len(policy.trainable_variables) > 2
    True
    """
    flags = {layer.name: layer.trainable for layer in policy.network.layers}
    try:
        for layer in policy.network.layers:
            layer.trainable = layer.name == HEAD
        yield policy
    finally:
        for layer in policy.network.layers:
            layer.trainable = flags[layer.name]


class KeepStartEarlyStopping(keras.callbacks.EarlyStopping):
    """`EarlyStopping(restore_best_weights=True)` whose reference is the model before the first
    epoch (`initial`: its monitored value): when no epoch beats it, the starting weights are
    restored (Keras' keeps the first epoch's then) and `best_epoch` is `-1`. Keras' otherwise.

    Args:
        initial: the monitored value of the starting weights.
        **kwargs: `keras.callbacks.EarlyStopping`'s (`restore_best_weights` is forced on).

    Example:
    >>> model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    >>> model.compile(keras.optimizers.SGD(10.0), "mse")  # diverges: every epoch is worse
    >>> data = tf.data.Dataset.from_tensor_slices((np.ones((4, 1)), np.ones(4))).batch(4)
    >>> start = model.get_weights()
    >>> stop = KeepStartEarlyStopping(model.evaluate(data, verbose=0), monitor="val_loss")
    >>> _ = model.fit(data, validation_data=data, epochs=3, callbacks=[stop], verbose=0)
    >>> stop.best_epoch, all((a == b).all() for a, b in zip(start, model.get_weights()))
    (-1, True)
    """

    def __init__(self, initial: float, **kwargs):
        super().__init__(**{**kwargs, "restore_best_weights": True})
        self.initial = float(initial)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.best, self.best_epoch = self.initial, -1
        self.best_weights = self.model.get_weights()


class ResumablePlateau(keras.callbacks.ReduceLROnPlateau):
    """`keras.callbacks.ReduceLROnPlateau` with `get_state` / `set_state` (its wait, best value
    and cooldown), so `RunBackup` resumes it; the learning rate it set is the optimizer's, in
    Keras' checkpoint.

    Example:
    >>> plateau = ResumablePlateau("val_loss", factor=0.5)
    >>> plateau.set_state({"wait": 1, "best": 0.25, "cooldown_counter": 0})
    >>> plateau.get_state()
    {'wait': 1, 'best': 0.25, 'cooldown_counter': 0}
    """

    def get_state(self) -> dict:
        """The plateau's counters, as JSON."""
        return {"wait": self.wait, "best": float(self.best),
                "cooldown_counter": self.cooldown_counter}

    def set_state(self, state: dict) -> None:
        """Restores `get_state()`'s; call it after `on_train_begin`."""
        self.wait, self.best = state["wait"], state["best"]
        self.cooldown_counter = state["cooldown_counter"]


def refit_behaviour_head(policy: AttentionPolicy, train: tf.data.Dataset,
                         valid: tf.data.Dataset, epochs: int, patience: int,
                         learning_rate: float, jit_compile: bool = False, verbose: int = 1,
                         strategy: tf.distribute.Strategy | None = None,
                         plateau_factor: float | None = PLATEAU_FACTOR,
                         minutes: float | None = None, backup_dir: str | None = None) -> dict:
    """Trains `policy`'s behaviour head alone (the rest frozen: the policy's outputs are
    unchanged) with Adam on `train` for at most `epochs`, early-stopping on the behaviour loss
    of `valid` (`patience` epochs) and restoring the best epoch, or the starting head if no
    epoch beats it (`KeepStartEarlyStopping`): the validation loss never ends higher. The
    learning rate drops by `plateau_factor` after each epoch that does not improve it.

    With `backup_dir` the refit survives an interruption: `RunBackup` backs up every epoch
    (early stopping, the plateau and the time budget included) and the validation loss before
    the first epoch (`started/`), so a rerun with the same arguments on the same starting
    policy resumes after the last completed epoch and reports that first loss; a completed
    refit keeps the head's weights and its report (`refitted/`), so a rerun sets the head and
    returns the report without training. The caller deletes `backup_dir` when its run is done
    (`backup.remove_backup`).

    Args:
        policy: a trained `AttentionPolicy` with the behaviour head.
        train: the training users' logged-round batches (those of the policy's `fit`).
        valid: held-out users' logged-round batches, with the same features (`"seen"` when
            the head is trained masked).
        epochs: the cap of refit epochs (positive).
        patience: epochs without a better validation loss before stopping.
        learning_rate: Adam's, at the start.
        jit_compile: XLA-compile the steps.
        verbose: Keras verbosity (1: progress bars).
        strategy: where the optimizer's variables go (default: the current strategy).
        plateau_factor: `ReduceLROnPlateau`'s factor (patience 1); `None`: a constant rate.
        minutes: wall-time budget of the refit (`TimeBudget`: the epoch in progress ends early,
            is validated, and the best epoch is still restored); `None`: no budget.
        backup_dir: the refit's own backup directory (not shared with another `fit`; every
            worker must read it; only the chief writes), or `None`: no backup.

    Returns:
        `{"epochs" (trained), "best_epoch" (0: the starting head kept), "patience",
        "learning_rate", "valid_behaviour_loss": {"before", "after"}, "history":
        {"behaviour_loss", "val_behaviour_loss"} per epoch, "seconds"}`, and with `backup_dir`
        `"resumed_epochs"` (epochs restored from the backup).

    Example:
    >>> from tfrec_attn.models import AttentionPolicyConfig
    >>> policy = AttentionPolicy(AttentionPolicyConfig(vocab_size=8, max_len=2, dim=4))
    >>> data = tf.data.Dataset.from_tensor_slices({"history": [[0, 2], [2, 3]] * 4,
    ...                                            "action": [4, 5] * 4}).batch(4)
    >>> report = refit_behaviour_head(policy, data, data, epochs=2, patience=1,
    ...                               learning_rate=0.1, verbose=0)
    >>> report["epochs"], report["valid_behaviour_loss"]["after"] < report[
    ...     "valid_behaviour_loss"]["before"]
    (2, True)
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int. Received: epochs={epochs!r}")
    started = time.monotonic()
    strategy = strategy or tf.distribute.get_strategy()
    stages = _stages(backup_dir, epochs, patience, learning_rate, plateau_factor)
    head = policy.network.get_layer(HEAD)
    done = stages[1].load() if stages else None
    if done:  # completed before a restart: its head and report
        head.set_weights(done[0])
        return done[1]
    with frozen_except_head(policy), strategy.scope():
        model = BehaviourHeadFit(policy)
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), jit_compile=jit_compile)
        before = _valid_loss(model, valid)
        if stages:  # built (Keras' BackupAndRestore needs it); the loss before a restart
            model(tf.zeros((1, policy.config.max_len), tf.int64))
            before = _started_loss(stages[0], before, strategy)
        stopping = KeepStartEarlyStopping(before, monitor=MONITOR, mode="min",
                                          patience=patience, min_delta=MIN_DELTA)
        plateau = ([] if plateau_factor is None else [ResumablePlateau(
            MONITOR, factor=plateau_factor, patience=1, mode="min", min_delta=MIN_DELTA,
            verbose=min(verbose, 1))])
        budget = TimeBudget(minutes)
        backup = RunBackup(backup_dir, [*plateau, budget, stopping]) if stages else None
        history = model.fit(train, validation_data=valid, epochs=epochs,
                            callbacks=[*([backup] if backup else []), *plateau, budget, stopping],
                            verbose=verbose).history
        history = backup.history if backup else history  # restored epochs included
        after = _valid_loss(model, valid)
    report = {"epochs": len(history["behaviour_loss"]), "best_epoch": stopping.best_epoch + 1,
              "patience": patience, "learning_rate": learning_rate,
              "plateau_factor": plateau_factor, "stopped_by_time_budget": budget.stopped,
              "valid_behaviour_loss": {"before": before, "after": after},
              "history": {name: [float(x) for x in history[name]]
                          for name in ("behaviour_loss", MONITOR)},
              "seconds": round(time.monotonic() - started + budget.previous, 2)}
    if stages:
        report["resumed_epochs"] = backup.resumed_epochs
        stages[1].save(head.get_weights(), report, strategy)
    return report


def _stages(backup_dir: str | None, *arguments) -> tuple[CompletedStage, CompletedStage] | None:
    """The refit's `started` and `refitted` stages in `backup_dir` (`None` without one), whose
    identity is the refit's arguments."""
    if not backup_dir:
        return None
    identity = {"refit": dict(zip(("epochs", "patience", "learning_rate", "plateau_factor"),
                                  arguments))}
    return (CompletedStage(backup_dir, "started", identity),
            CompletedStage(backup_dir, "refitted", identity))


def _started_loss(stage: CompletedStage, before: float, strategy) -> float:
    """The validation loss `stage` saved before the first epoch; saved now if it has none.
    (Every worker measures it first: `evaluate` is collective.)"""
    saved = stage.load()
    if saved:
        return saved[1]["valid_behaviour_loss"]
    stage.save([], {"valid_behaviour_loss": before}, strategy)
    return before


def _valid_loss(model: BehaviourHeadFit, valid: tf.data.Dataset) -> float:
    return float(np.float64(model.evaluate(valid, verbose=0, return_dict=True)
                            ["behaviour_loss"]))
