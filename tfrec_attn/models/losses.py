"""The three training objectives of the sequential recommender, as Keras layers over TFRS tasks.

Each takes the states at the positions that have a target `(N, dim)`, the targets `(N,)` and the
shared `ItemEmbedding`, and returns a scalar loss. The softmax losses also take `seen`, an optional
boolean `(N, vocab)` of items that must not serve as negatives for a position (see
`SASRecConfig.exclude_seen`); a position's own target is never excluded.
"""

import numpy as np
import tensorflow_recommenders as tfrs

from tfrec_attn._keras import keras, tf
from tfrec_attn.layers.masking import LARGE_NEGATIVE
from tfrec_attn.validation import check_non_negative_int, check_positive_int

FIRST_ITEM_ID = 2


def seen_items_mask(ids: tf.Tensor | tf.RaggedTensor, vocab_size: int) -> tf.Tensor:
    """Boolean `(batch, vocab_size)` multi-hot of the item ids in each row of `ids` (dense
    `(batch, T)` or ragged); padding and OOV (ids below `FIRST_ITEM_ID`) are not items.

    A scatter, not `one_hot` + max, which would hold a `(batch, T, vocab_size)` tensor.

    Example:
    >>> seen_items_mask(tf.constant([[0, 3, 3], [1, 2, 4]]), 5).numpy().astype(int).tolist()
    [[0, 0, 0, 1, 0], [0, 0, 1, 0, 1]]
    """
    if isinstance(ids, tf.RaggedTensor):
        rows, flat, batch = ids.value_rowids(), ids.values, ids.nrows()
    else:
        shape = tf.shape(ids, out_type=tf.int64)
        rows = tf.repeat(tf.range(shape[0]), shape[1])
        flat, batch = tf.reshape(ids, [-1]), shape[0]
    flat = tf.cast(flat, tf.int64)
    counts = tf.scatter_nd(tf.stack([tf.cast(rows, tf.int64), flat], axis=1),
                           tf.cast(flat >= FIRST_ITEM_ID, tf.float32),
                           tf.stack([tf.cast(batch, tf.int64), tf.constant(vocab_size, tf.int64)]))
    return counts > 0


def seen_items(history: tf.Tensor, targets: tf.Tensor, vocab_size: int) -> tf.Tensor:
    """Boolean `(batch, vocab)`: the items anywhere in each training window (ids >= 2).

    >>> seen_items(tf.constant([[0, 2, 3]]), tf.constant([[2, 3, 4]]), 6).numpy().astype(int)
    array([[0, 0, 1, 1, 1, 0]])
    """
    window = tf.concat([tf.cast(history, tf.int64), tf.cast(targets, tf.int64)], axis=1)
    return seen_items_mask(window, vocab_size)


def mask_seen_logits(logits: tf.Tensor, seen, own: tf.Tensor) -> tf.Tensor:
    """`logits` with seen entries (other than each row's own positive `own`) pushed to -1e9
    (zero probability after a softmax); `seen=None` leaves them as they are."""
    if seen is None:
        return logits
    return tf.where(tf.logical_and(tf.cast(seen, tf.bool), tf.logical_not(own)),
                    LARGE_NEGATIVE, logits)


def _replica_context():
    """The replica context when several replicas train in sync (a `tf.distribute` strategy)."""
    context = tf.distribute.get_replica_context()
    return context if context is not None and context.num_replicas_in_sync > 1 else None


def global_mean(values: tf.Tensor) -> tf.Tensor:
    """This replica's share of the mean of `values` over the global batch.

    Under a `tf.distribute` strategy each replica holds part of the global batch and the
    optimizer sums the replicas' gradients, so a replica returns `sum(its values) / count(values
    on all replicas)`: the shares add up to the one-process mean (and Keras' `fit` logs their
    sum). Hand-written rather than `tf.nn.compute_average_loss` because the count (positions
    with a target) differs from batch to batch. Without a strategy it is the plain mean.

    Example:
    >>> float(global_mean(tf.constant([1.0, 2.0, 6.0])))
    3.0
    """
    values = tf.cast(tf.reshape(values, [-1]), tf.float32)
    count = tf.cast(tf.size(values), tf.float32)
    context = _replica_context()
    if context is not None:
        count = context.all_reduce("sum", count)
    return tf.math.divide_no_nan(tf.reduce_sum(values), count)


def global_batch(*tensors: tf.Tensor) -> tuple:
    """`tensors` concatenated over all replicas (this replica's rows first) along axis 0.

    In-batch negatives then come from the whole global batch, as in one process, and the
    `(rows, candidates)` labels stay the identity on the leading block. TFRS'
    `_cross_replica_concat` does the same for a static per-replica size; here sizes vary.
    """
    context = _replica_context()
    if context is None:
        return tensors
    sizes = context.all_gather(tf.shape(tensors[0])[:1], axis=0)
    offset = tf.reduce_sum(sizes[:context.replica_id_in_sync_group])
    return tuple(tf.roll(context.all_gather(t, axis=0), -offset, axis=0) for t in tensors)


class FullSoftmaxLoss(keras.layers.Layer):
    """Cross-entropy over the whole catalogue.

    Exact and, with the gather of real positions, cheap enough for catalogues of ~10^5 items.
    """

    def __init__(self, vocab_size: int, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self._ce = keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction=keras.losses.Reduction.NONE)

    def call(self, states, targets, item_embedding, training=False, seen=None, future=None):
        """`future`: optional `(N, k - 1)` later targets of each position (0: none), each one
        more positive of the position (`SASRecConfig.future_targets`)."""
        # Padding/OOV columns stay in: they are never targets, so training pushes them down
        # (and evaluation/serving exclude them); masking them would cost a full pass over logits.
        logits = tf.cast(item_embedding(states, mode="score"), tf.float32)
        if future is not None:
            return global_mean(future_target_loss(logits, targets, future, seen))
        if seen is not None:
            own = tf.cast(tf.one_hot(targets, self.vocab_size), tf.bool)
            logits = mask_seen_logits(logits, seen, own)
        return global_mean(self._ce(targets, logits))


def future_target_loss(logits: tf.Tensor, targets: tf.Tensor, future: tf.Tensor,
                       seen=None) -> tf.Tensor:
    """Per-position cross-entropy averaged over its positives: the target and its later targets.

    Each positive `p` of a position scores `log(exp(s_p) + sum_n exp(s_n)) - s_p` against the
    negatives `n`: every item, or with `seen` the items outside the window (the positives are
    window items, so they never compete with each other). With no later targets it is the
    one-target softmax cross-entropy. Hand-written: Keras' categorical losses take one target
    distribution, not a positive against its own negatives.

    Args:
        logits: `(N, vocab)` scores.
        targets: `(N,)` next items (all real).
        future: `(N, k - 1)` later items, 0 where the window has none.
        seen: optional boolean `(N, vocab)`: items that are not negatives.

    Returns:
        `(N,)` losses.

    Example:
    >>> logits = tf.constant([[0.0, 0.0, 1.0, 2.0, 3.0]])
    >>> loss = future_target_loss(logits, tf.constant([2]), tf.constant([[0]]))
    >>> round(float(loss[0]), 4) == round(float(tf.reduce_logsumexp(logits) - 1.0), 4)
    True
    """
    positives = tf.concat([tf.cast(targets, tf.int64)[:, None], tf.cast(future, tf.int64)], 1)
    present = tf.cast(positives > 0, tf.float32)  # (N, k)
    scores = tf.gather(logits, positives, batch_dims=1)  # (N, k)
    if seen is None:
        negatives = tf.reduce_logsumexp(logits, axis=1, keepdims=True)
        terms = negatives - scores
    else:
        negatives = tf.reduce_logsumexp(tf.where(seen, LARGE_NEGATIVE, logits), axis=1,
                                        keepdims=True)
        terms = tf.nn.softplus(negatives - scores)
    return tf.reduce_sum(terms * present, axis=1) / tf.reduce_sum(present, axis=1)


class SampledSoftmaxLoss(keras.layers.Layer):
    """In-batch sampled softmax with log-Q correction and removal of accidental hits (the same
    item as another row's positive): TFRS `tasks.Retrieval`'s loss.

    Written out rather than calling `Retrieval`: `Retrieval.call` creates its layers on every
    call under the global dtype policy (which breaks under `mixed_bfloat16`) and scores every
    position against every other, O(positions^2): 25k positions x 25k for a batch of 128
    histories of 200 items. Here each position scores its own positive and at most
    `max_negatives` in-batch candidates (a uniform random subset when there are more), in
    float32. Under a `tf.distribute` strategy the candidates come from the global batch (all
    replicas), so the loss equals the one-process loss for the same global batch.

    With `uniform_negatives=U > 0` the candidates are mixed (Yang et al., "Mixed Negative
    Sampling", WWW 2020): the in-batch ones plus `U` items drawn uniformly from the catalogue
    each step, shared by all positions. In-batch candidates are popular items; the uniform ones
    reach the long tail, which a catalogue-wide ranking (and the sampled-100 protocol's uniform
    negatives) must also rank low. Every logit is then corrected by the log of its item's
    expected count in the mixed candidate set, `log(C * q_j + U / n_items)` for `C` in-batch
    candidates; with `U = 0` that is the plain log-Q correction (a constant shift apart).

    Args:
        vocab_size: id-space size.
        item_probabilities: `(vocab,)` sampling probabilities for the log-Q correction.
        max_negatives: most in-batch negatives a position is scored against.
        uniform_negatives: uniformly drawn catalogue items added to the in-batch negatives
            each step (0: in-batch only). Under a `tf.distribute` strategy each worker draws
            from the same seed, so two workers still match one process step by step
            (`tests/training/test_distribution.py`, whose model uses this default).
    """

    def __init__(self, vocab_size: int, item_probabilities=None, max_negatives: int = 2048,
                 uniform_negatives: int = 0, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("max_negatives", max_negatives)
        check_non_negative_int("uniform_negatives", uniform_negatives)
        if uniform_negatives and vocab_size <= FIRST_ITEM_ID:
            raise ValueError(f"uniform_negatives needs items (ids >= {FIRST_ITEM_ID}). "
                             f"Received: vocab_size={vocab_size}")
        if item_probabilities is None:
            item_probabilities = np.full(vocab_size, 1.0 / vocab_size)
        self.vocab_size = vocab_size
        self.max_negatives = max_negatives
        self.uniform_negatives = uniform_negatives
        self._probabilities = tf.constant(np.asarray(item_probabilities, np.float32))

    def _negatives(self, candidates, log_q, ids):
        """All in-batch candidates, or a uniform random `max_negatives` of them when the batch
        has more: memory stays O(positions x max_negatives) for long histories."""
        count = tf.shape(ids)[0]
        if count <= self.max_negatives:
            return candidates, log_q, ids
        pick = tf.random.shuffle(tf.range(count))[:self.max_negatives]
        return tf.gather(candidates, pick), tf.gather(log_q, pick), tf.gather(ids, pick)

    def draw_uniform(self) -> tf.Tensor:
        """`uniform_negatives` item ids drawn uniformly from the catalogue (ids >= 2)."""
        return tf.random.uniform([self.uniform_negatives], FIRST_ITEM_ID, self.vocab_size,
                                 dtype=tf.int64)

    def _mixed(self, item_embedding, targets, candidates, ids, drawn):
        """The in-batch candidates plus the uniform draws `drawn`, and every logit's
        correction: the log of its item's expected count among the candidates."""
        drawn = tf.cast(drawn, ids.dtype)
        in_batch = tf.cast(tf.shape(ids)[0], tf.float32)
        candidates = tf.concat([candidates, tf.cast(
            tf.gather(item_embedding.embeddings, drawn), tf.float32)], axis=0)
        ids = tf.concat([ids, drawn], axis=0)
        uniform = self.uniform_negatives / (self.vocab_size - FIRST_ITEM_ID)

        def log_count(items):
            return tf.math.log(in_batch * tf.gather(self._probabilities, items) + uniform)
        return candidates, ids, log_count(targets), log_count(ids)

    def call(self, states, targets, item_embedding, training=False, seen=None, uniform=None):
        """`uniform`: optional `(uniform_negatives,)` ids to use as this step's uniform draws
        (drawn by `draw_uniform` when omitted)."""
        states = tf.cast(states, tf.float32)
        own = tf.cast(tf.gather(item_embedding.embeddings, targets), tf.float32)
        log_q = tf.math.log(tf.maximum(tf.gather(self._probabilities, targets), 1e-12))
        candidates, all_log_q, ids = self._negatives(*global_batch(own, log_q, targets))
        if self.uniform_negatives:
            drawn = self.draw_uniform() if uniform is None else uniform
            candidates, ids, log_q, all_log_q = self._mixed(item_embedding, targets,
                                                            candidates, ids, drawn)
        # Column 0: each row's own positive. Then the negatives, with log-Q correction; a
        # negative with the row's own target id (an accidental hit, the row's own column
        # included) or seen in the row's window is removed. With every in-batch candidate this
        # is exactly TFRS Retrieval's loss (tested).
        positive = tf.reduce_sum(states * own, axis=-1, keepdims=True) - log_q[:, None]
        negatives = tf.matmul(states, candidates, transpose_b=True) - all_log_q[None, :]
        removed = tf.equal(targets[:, None], ids[None, :])
        if seen is not None:  # a candidate seen in this row's window is not its negative
            removed = tf.logical_or(removed, tf.gather(seen, ids, axis=1))
        negatives = tf.where(removed, LARGE_NEGATIVE, negatives)
        logits = tf.concat([positive, negatives], axis=1)
        return global_mean(tf.reduce_logsumexp(logits, axis=1) - positive[:, 0])


class BinaryCrossEntropyLoss(keras.layers.Layer):
    """The original SASRec objective: one uniformly sampled negative per position, BCE
    (TFRS `tasks.Ranking`). Under a `tf.distribute` strategy each replica draws its own
    negatives."""

    def __init__(self, vocab_size: int, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.task = tfrs.tasks.Ranking(loss=keras.losses.BinaryCrossentropy(
            from_logits=True, reduction=keras.losses.Reduction.NONE))

    def sample_negatives(self, targets: tf.Tensor) -> tf.Tensor:
        """One uniform negative id per entry of `targets` (any shape). Drawing them on the
        fixed-shape `(batch, max_len)` grid, before the positions are gathered, keeps the
        shape static, as XLA needs for random ops."""
        return tf.random.uniform(tf.shape(targets), FIRST_ITEM_ID, self.vocab_size,
                                 dtype=targets.dtype)

    def call(self, states, targets, item_embedding, training=False, negatives=None):
        if negatives is None:
            negatives = self.sample_negatives(targets)
        table = item_embedding.embeddings  # read in the compute dtype under mixed precision
        states = tf.cast(states, tf.float32)
        positive = tf.reduce_sum(states * tf.cast(tf.gather(table, targets), tf.float32), -1)
        negative = tf.reduce_sum(states * tf.cast(tf.gather(table, negatives), tf.float32), -1)
        logits = tf.concat([positive, negative], axis=0)[:, None]
        labels = tf.concat([tf.ones_like(positive), tf.zeros_like(negative)], axis=0)[:, None]
        return global_mean(self.task(labels=labels, predictions=logits, compute_metrics=False))


def make_loss(name: str, vocab_size: int, item_probabilities=None,
              max_negatives: int = 2048, uniform_negatives: int = 0) -> keras.layers.Layer:
    """The loss layer for `SASRecConfig.loss`."""
    if name == "softmax":
        return FullSoftmaxLoss(vocab_size, name="softmax_loss")
    if name == "sampled":
        return SampledSoftmaxLoss(vocab_size, item_probabilities, max_negatives,
                                  uniform_negatives, name="sampled_loss")
    if name == "bce":
        return BinaryCrossEntropyLoss(vocab_size, name="bce_loss")
    raise ValueError(f"Unknown loss {name!r}; expected 'softmax', 'sampled' or 'bce'.")
