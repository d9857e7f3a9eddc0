"""Catalogue scores mixed with item-to-item transition probabilities of the training data."""

import numpy as np

from tfrec_attn._keras import keras, tf
from tfrec_attn.layers.utils import expand_axes, scatter_rows
from tfrec_attn.registry import register
from tfrec_attn.validation import check_decay, check_int, check_positive_int, check_rate

TINY = 1e-30  # floor of a probability before its log (only where it is positive)
# Transition weights are stored as integers in units of 2**-24 (a weight of 1 is 2**24): TFLite
# quantizes float tables with one scale for the whole table (a rare item's single successor,
# weight 1, set the step to 1/127 and rounded a quarter of the weights to 0); integer tables are
# kept as they are. `q` is normalized per user, so the unit cancels.
WEIGHT_UNIT = 2.0 ** 24
MAX_ITEM_ITEM_WEIGHT = 127.0  # the int32 range at that unit


@register()
class TransitionPrior(keras.layers.Layer):
    """`[scores (batch, vocab), history (batch, T)]` -> `log((1 - mix) p + mix q)` `(batch, vocab)`.

    `p = softmax(scores)` is the model's distribution over the catalogue; `q` is a transition
    distribution read from a fixed table: item `i`'s row lists its `num_neighbors` most
    frequent successors in the training sequences (`neighbor_ids[i]`) and their transition
    probabilities (`neighbor_weights[i]`, see `CooccurrenceRecommender.neighbor_table`). For
    each user `q` is the decayed sum of the rows of the last `num_recent` history positions
    (the latest weighs 1, the one before `recency_decay`, ...), normalized to sum to 1 (all
    zeros when no recent item has a successor). The item-to-item co-occurrence baseline counts
    exactly these transitions; mixing them into the model's distribution gives the model the
    exact counts its embeddings smooth over. `mix` is chosen on validation data after
    training (`training.transition_prior.fit_transition_prior`); at `mix=0` the output is the
    model's `log_softmax` (the same ranking as `scores`).

    The table and `mix` are non-trainable weights, so checkpoints, SavedModels and TFLite files
    carry them (the weights as int32 in units of `2**-24`, see `WEIGHT_UNIT`). Padding, OOV and
    ids outside `[first_item_id, vocab_size)` in the history contribute nothing (they still
    count as positions). Items `q` gives no mass, and every item at `mix=0`, keep the model's
    `log(1 - mix) + log_softmax` exactly, so `mix=0` ranks as `scores` do. TFLite builtin ops
    only (`GATHER`, `SCATTER_ND`, `LOG_SOFTMAX`, ...); computes in float32 under any dtype
    policy.

    With `item_item_neighbors=M > 0` a second, signed table adds an item-item term over the
    whole history: item `i`'s row lists `M` items and their weights (`set_item_item_table`,
    e.g. EASE's, `training.transition_prior.fit_item_item`), and the output becomes
    `log((1 - mix) p + mix q) + item_item_scale * s`, `s` the sum of the rows of every valid
    position of the history it is given (the model's last `max_len` items; a repeated item
    counts each time). At `item_item_scale=0` (its initial value) the output is the mixture's
    alone, and the term is not computed. docs/BENCHMARKS.md section 3p.

    Args:
        vocab_size: int. Id-space size, padding and OOV included.
        num_neighbors: int. Successors kept per item (the table's width).
        num_recent: int. History positions whose rows are summed. Defaults to `5`.
        recency_decay: float in `(0, 1]`. Weight ratio between consecutive positions.
            Defaults to `0.5`.
        first_item_id: int. Ids below it are padding / OOV. Defaults to `2`.
        item_item_neighbors: int. Width of the item-item table; `0`: none. Defaults to `0`.

    Call arguments:
        inputs: `[scores, history]`: float `(batch, vocab_size)` catalogue scores and int
            `(batch, T)` left-padded history ids.
        mix: optional float overriding the `mix` weight for this call (e.g. to compare
            several on validation data without reassigning it).
        item_item_scale: optional float overriding `item_item_scale` for this call.

    Returns:
        float32 `(batch, vocab_size)` log-probabilities of the mixture (plus the item-item
        term when its scale is above 0).

    Example:
    >>> import numpy as np
    >>> from tfrec_attn._keras import tf
    >>> prior = TransitionPrior(vocab_size=5, num_neighbors=1)
    >>> successors = np.array([[0], [0], [3], [0], [0]])  # item 2 is followed by item 3
    >>> prior.set_table(successors, (successors > 0).astype("float32"))
    >>> scores, history = tf.constant([[0., 0., 2., 0., 1.]]), tf.constant([[0, 2]])
    >>> int(tf.argmax(prior([scores, history], mix=0.0)[0]))
    2
    >>> int(tf.argmax(prior([scores, history], mix=0.9)[0]))
    3
    """

    def __init__(self, vocab_size: int, num_neighbors: int, num_recent: int = 5,
                 recency_decay: float = 0.5, first_item_id: int = 2,
                 item_item_neighbors: int = 0, **kwargs):
        kwargs["dtype"] = "float32"  # log-probabilities of tiny values: never float16
        super().__init__(**kwargs)
        check_positive_int("vocab_size", vocab_size)
        check_positive_int("num_neighbors", num_neighbors)
        check_positive_int("num_recent", num_recent)
        check_int("first_item_id", first_item_id)
        check_decay("recency_decay", float(recency_decay))
        check_int("item_item_neighbors", item_item_neighbors)
        if item_item_neighbors < 0:
            raise ValueError("item_item_neighbors must be >= 0. Received: "
                             f"item_item_neighbors={item_item_neighbors}")
        self.item_item_neighbors = int(item_item_neighbors)
        self.vocab_size = int(vocab_size)
        self.num_neighbors = int(num_neighbors)
        self.num_recent = int(num_recent)
        self.recency_decay = float(recency_decay)
        self.first_item_id = int(first_item_id)
        shape = (self.vocab_size, self.num_neighbors)
        self.neighbor_ids = self.add_weight(name="neighbor_ids", shape=shape, dtype="int32",
                                            initializer="zeros", trainable=False)
        self.neighbor_weights = self.add_weight(name="neighbor_weights", shape=shape,
                                                dtype="int32", initializer="zeros",
                                                trainable=False)
        self.mix = self.add_weight(name="mix", shape=(), initializer="zeros", trainable=False)
        self.item_item_ids = self.item_item_weights = self.item_item_scale = None
        if self.item_item_neighbors:
            shape = (self.vocab_size, self.item_item_neighbors)
            self.item_item_ids = self.add_weight(name="item_item_ids", shape=shape,
                                                 dtype="int32", initializer="zeros",
                                                 trainable=False)
            self.item_item_weights = self.add_weight(name="item_item_weights", shape=shape,
                                                     dtype="int32", initializer="zeros",
                                                     trainable=False)
            self.item_item_scale = self.add_weight(name="item_item_scale", shape=(),
                                                   initializer="zeros", trainable=False)
        self.built = True

    def set_table(self, neighbor_ids, neighbor_weights) -> None:
        """Assigns the transition table: `(vocab_size, num_neighbors)` successor ids (0 in unused
        slots) and their weights in `[0, 1]` (0 in unused slots; stored in units of
        `2**-24`)."""
        shape = (self.vocab_size, self.num_neighbors)
        ids = np.asarray(neighbor_ids)
        weights = np.asarray(neighbor_weights, np.float64)
        if ids.shape != shape or weights.shape != shape:
            raise ValueError(f"The transition table must have shape {shape} (vocab_size, "
                             f"num_neighbors). Received: neighbor_ids {ids.shape}, "
                             f"neighbor_weights {weights.shape}")
        if not np.all((weights >= 0.0) & (weights <= 1.0)):
            raise ValueError("neighbor_weights must lie in [0, 1] (transition probabilities).")
        self._check_ids("neighbor_ids", ids)
        self.neighbor_ids.assign(ids.astype(np.int32))
        self.neighbor_weights.assign(np.rint(weights * WEIGHT_UNIT).astype(np.int32))

    def _check_ids(self, name: str, ids: np.ndarray) -> None:
        """A table's ids are 0 (an unused slot) or item ids, else a `ValueError` naming the
        first other one and its index."""
        bad = (ids != 0) & ((ids < self.first_item_id) | (ids >= self.vocab_size))
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"{name} must be 0 (an unused slot) or item ids in "
                             f"[{self.first_item_id}, {self.vocab_size}). Received: "
                             f"{ids[index]} at index {index}")

    def table(self) -> tuple[np.ndarray, np.ndarray]:
        """`(neighbor_ids int32, neighbor_weights float64)` as `set_table` took them (the
        weights to within `2**-25`)."""
        return (self.neighbor_ids.numpy(),
                self.neighbor_weights.numpy().astype(np.float64) / WEIGHT_UNIT)

    def set_mix(self, mix: float) -> None:
        """Assigns the weight of the transition distribution, in `[0, 1)`."""
        mix = float(mix)
        check_rate("mix", mix)
        self.mix.assign(mix)

    def set_item_item_table(self, ids, weights) -> None:
        """Assigns the item-item table: `(vocab_size, item_item_neighbors)` item ids (0 in
        unused slots) and signed weights in `[-MAX_ITEM_ITEM_WEIGHT, MAX_ITEM_ITEM_WEIGHT]`
        (stored as int32 in units of `2**-24`, as the transition weights)."""
        if not self.item_item_neighbors:
            raise ValueError("This TransitionPrior has no item-item table: build it with "
                             "item_item_neighbors > 0.")
        shape = (self.vocab_size, self.item_item_neighbors)
        ids, weights = np.asarray(ids), np.asarray(weights, np.float64)
        if ids.shape != shape or weights.shape != shape:
            raise ValueError(f"The item-item table must have shape {shape} (vocab_size, "
                             f"item_item_neighbors). Received: ids {ids.shape}, weights "
                             f"{weights.shape}")
        if not np.all(np.abs(weights) <= MAX_ITEM_ITEM_WEIGHT):
            raise ValueError(f"item-item weights must lie in [-{MAX_ITEM_ITEM_WEIGHT:g}, "
                             f"{MAX_ITEM_ITEM_WEIGHT:g}] (int32 in units of 2**-24).")
        self._check_ids("item-item ids", ids)
        self.item_item_ids.assign(ids.astype(np.int32))
        self.item_item_weights.assign(np.rint(weights * WEIGHT_UNIT).astype(np.int32))

    def set_item_item_scale(self, scale: float) -> None:
        """Assigns the weight of the item-item term (`>= 0`; 0 switches it off)."""
        scale = float(scale)
        if not self.item_item_neighbors or not np.isfinite(scale) or scale < 0:
            raise ValueError("item_item_scale must be a finite number >= 0, on a prior built "
                             f"with item_item_neighbors > 0. Received: {scale}")
        self.item_item_scale.assign(scale)

    def _item_ids(self, history) -> tuple[tf.Tensor, tf.Tensor]:
        """`(ids, valid)` int32 / bool like `history`: ids outside
        `[first_item_id, vocab_size)` (padding, OOV, out of range) are not valid and read 0."""
        history = tf.cast(history, tf.int32)
        valid = tf.logical_and(history >= self.first_item_id, history < self.vocab_size)
        return tf.where(valid, history, tf.zeros_like(history)), valid

    def item_item_scores(self, history) -> tf.Tensor:
        """`s`: float32 `(batch, vocab_size)`, the sum of the item-item rows of every valid
        history position."""
        ids, valid = self._item_ids(history)
        neighbors = tf.gather(self.item_item_ids, ids)  # (batch, T, M)
        weights = tf.cast(tf.gather(self.item_item_weights, ids), tf.float32) * expand_axes(
            tf.cast(valid, tf.float32), -1) / WEIGHT_UNIT
        return scatter_rows(neighbors, weights, self.vocab_size)

    def transition_probabilities(self, history) -> tf.Tensor:
        """`q`: float32 `(batch, vocab_size)` (see the class docstring)."""
        ids, valid = self._item_ids(history[:, -self.num_recent:])
        length = tf.shape(ids)[1]
        steps_back = tf.cast(tf.range(length - 1, -1, -1), tf.float32)
        decay = tf.pow(tf.constant(self.recency_decay, tf.float32), steps_back)
        position_weights = tf.cast(valid, tf.float32) * expand_axes(decay, 0)  # (batch, T)
        successors = tf.gather(self.neighbor_ids, ids)  # (batch, T, N)
        weights = tf.cast(tf.gather(self.neighbor_weights, ids), tf.float32) * expand_axes(
            position_weights, -1)
        totals = scatter_rows(successors, weights, self.vocab_size)
        norm = tf.reduce_sum(totals, axis=1, keepdims=True)
        return totals / tf.maximum(norm, TINY)

    def call(self, inputs, mix=None, item_item_scale=None):
        scores, history = inputs
        mixed = self._mixture(scores, history, mix)
        if not self.item_item_neighbors:
            return mixed
        if item_item_scale is not None:
            return mixed + tf.cast(item_item_scale, tf.float32) * self.item_item_scores(history)
        # skipped while the scale is 0 (as while the model trains, before `fit_item_item`):
        # its gathers and sums over every position and neighbour cost more than the mixture
        scale = tf.identity(self.item_item_scale)
        return tf.cond(scale > 0.0, lambda: mixed + scale * self.item_item_scores(history),
                       lambda: mixed)

    def _mixture(self, scores, history, mix=None):
        mix = self.mix if mix is None else tf.cast(mix, tf.float32)
        model_part = tf.nn.log_softmax(tf.cast(scores, tf.float32), axis=-1) + tf.math.log(
            tf.maximum(1.0 - mix, TINY))
        q = self.transition_probabilities(history)
        # Both terms are probabilities (at most 1, no overflow), and where it is used the
        # prior's is positive, so the sum cannot underflow to 0. Elsewhere (no mass in q, or
        # no weight) log(a + 0) is the model's own value, kept exactly.
        mixed = tf.math.log(tf.exp(model_part) + mix * q)
        return tf.where(tf.logical_and(q > 0.0, mix > 0.0), mixed, model_part)

    def get_prunable_weights(self) -> list:
        return []

    def get_config(self) -> dict:
        config = super().get_config()
        config.pop("dtype", None)
        config.update(vocab_size=self.vocab_size, num_neighbors=self.num_neighbors,
                      num_recent=self.num_recent, recency_decay=self.recency_decay,
                      first_item_id=self.first_item_id)
        if self.item_item_neighbors:  # absent at 0: configs saved before it still match
            config["item_item_neighbors"] = self.item_item_neighbors
        return config
