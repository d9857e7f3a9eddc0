"""HistoryTopK never recommends history/reserved ids; ItemEmbedding embeds and scores."""

import numpy as np
import pytest

from tfrec_attn._keras import keras, tf
from tfrec_attn.layers import HistoryTopK, ItemEmbedding, LastPosition, PaddingMask

VOCAB = 20


def _reference_top_k(scores, history, k, exclude_history=True, first_item_id=2):
    allowed = np.arange(scores.shape[1])[None, :] >= first_item_id
    allowed = np.broadcast_to(allowed, scores.shape).copy()
    if exclude_history:
        for row, items in enumerate(history):
            allowed[row, [i for i in items if 0 <= i < scores.shape[1]]] = False
    masked = np.where(allowed, scores, -np.inf)
    return np.argsort(-masked, axis=1, kind="stable")[:, :k]


def test_history_top_k_never_returns_history_or_reserved_ids():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(8, VOCAB)).astype(np.float32)
    scores[:, :2] += 100.0  # padding and OOV score best: they must still never appear
    history = rng.integers(0, VOCAB, size=(8, 6))
    history[:, :2] = 0  # left padding
    scores[np.arange(8)[:, None], history] += 50.0  # history items score next best
    ids, top_scores = HistoryTopK(k=5)([tf.constant(scores), tf.constant(history)])
    assert ids.dtype == tf.int64 and ids.shape == (8, 5)
    for row in range(8):
        returned = set(ids[row].numpy().tolist())
        assert not returned & set(history[row].tolist())
        assert not returned & {0, 1}
    np.testing.assert_array_equal(ids, _reference_top_k(scores, history, 5))
    np.testing.assert_allclose(top_scores, np.take_along_axis(scores, ids.numpy(), 1))


def test_history_top_k_can_keep_history():
    scores = tf.constant([[9.0, 8.0, 1.0, 5.0, 3.0, 7.0]])
    history = tf.constant([[0, 5]])
    ids, _ = HistoryTopK(k=2, exclude_history=False)([scores, history])
    assert ids.numpy().tolist() == [[5, 3]]
    ids, _ = HistoryTopK(k=2)([scores, history])
    assert ids.numpy().tolist() == [[3, 4]]


def test_history_top_k_out_of_range_history_ids_exclude_nothing_else():
    """An id >= vocab in the history must not knock out a real item (e.g. the last one)."""
    scores = tf.constant([[0.0, 0.0, 1.0, 2.0, 3.0]])
    ids, _ = HistoryTopK(k=1)([scores, tf.constant([[0, 7]])])
    assert ids.numpy().tolist() == [[4]]


def test_history_top_k_first_item_id():
    scores = tf.constant([[9.0, 8.0, 7.0, 1.0]])
    ids, _ = HistoryTopK(k=1, first_item_id=3)([scores, tf.constant([[0]])])
    assert ids.numpy().tolist() == [[3]]


def test_item_embedding_embed_mode():
    layer = ItemEmbedding(vocab_size=VOCAB, dim=4)
    ids = tf.constant([[0, 3, 7], [1, 2, 19]])
    vectors = layer(ids)
    assert vectors.shape == layer.compute_output_shape(ids.shape) == (2, 3, 4)
    np.testing.assert_array_equal(vectors, tf.gather(layer.embeddings, ids))


def test_item_embedding_scale_by_dim_and_l2():
    layer = ItemEmbedding(vocab_size=VOCAB, dim=4, scale_by_dim=True, l2=0.1,
                          initializer="ones")
    vectors = layer(tf.constant([[2, 3]]))
    np.testing.assert_allclose(vectors, np.full((1, 2, 4), 2.0))  # sqrt(4) * 1
    np.testing.assert_allclose(layer.losses[-1], 0.1 * 8.0)  # l2 on the unscaled rows


def test_item_embedding_score_mode_uses_the_same_table():
    layer = ItemEmbedding(vocab_size=VOCAB, dim=4)
    states = tf.constant(np.random.default_rng(0).normal(size=(2, 3, 4)).astype(np.float32))
    layer(tf.constant([[2]]))
    scores = layer(states, mode="score")
    assert scores.shape == (2, 3, VOCAB)
    np.testing.assert_allclose(scores, np.einsum("btd,vd->btv", states, layer.embeddings),
                               rtol=1e-5, atol=1e-6)
    # Scoring the embedding of item 5 against the catalogue gives its squared norm at 5.
    vector = layer(tf.constant([5]))
    np.testing.assert_allclose(layer(vector, mode="score")[0, 5],
                               np.sum(np.square(vector.numpy())), rtol=1e-6)


def test_item_embedding_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        ItemEmbedding(vocab_size=VOCAB, dim=4)(tf.constant([[2]]), mode="lookup")


@pytest.mark.parametrize("exclude_history, allowed, want_ids", [
    (True, None, [[5, 2, -1, -1], [5, 4, 3, 2]]),   # row 0: only 2 and 5 are left
    (False, None, [[5, 4, 3, 2], [5, 4, 3, 2]]),
    (True, [[False, False, True, False, False, True]], [[5, 2, -1, -1], [5, 2, -1, -1]]),
], ids=["history", "keep_history", "allowed"])
def test_history_top_k_marks_unfilled_slots(exclude_history, allowed, want_ids):
    """With `mark_unfilled`, slots no eligible item fills hold -1 and -inf, after the
    eligible items; without it (the TFLite graph's default) they hold excluded ids."""
    scores = tf.constant([[9.0, 8.0, 1.0, 3.0, 4.0, 5.0]] * 2)
    history = tf.constant([[3, 4, 99], [0, 0, 0]])
    layer = HistoryTopK(k=4, exclude_history=exclude_history, mark_unfilled=True)
    ids, top_scores = layer.select(scores, history,
                                   allowed=None if allowed is None else tf.constant(allowed))
    assert ids.numpy().tolist() == want_ids
    want_scores = np.where(np.array(want_ids) < 0, -np.inf,
                           np.take_along_axis(scores.numpy(), np.maximum(want_ids, 0), 1))
    np.testing.assert_array_equal(top_scores, want_scores.astype(np.float32))
    if allowed is None:
        np.testing.assert_array_equal(layer([scores, history])[0], want_ids)
        unmarked, _ = HistoryTopK(k=4, exclude_history=exclude_history)([scores, history])
        filled = np.array(want_ids) >= 0
        np.testing.assert_array_equal(unmarked.numpy()[filled], np.array(want_ids)[filled])


def test_history_top_k_k_may_be_a_tensor():
    layer = HistoryTopK(k=4, mark_unfilled=True)
    ids, _ = layer.select(tf.constant([[9.0, 8.0, 1.0, 3.0]]), tf.constant([[2]]),
                          k=tf.constant(2))
    assert ids.numpy().tolist() == [[3, -1]]


def test_padding_mask_and_last_position():
    np.testing.assert_array_equal(PaddingMask()(tf.constant([[0, 0, 4, 5]])),
                                  [[False, False, True, True]])
    np.testing.assert_array_equal(PaddingMask(pad_id=-1)(tf.constant([[-1, 0]])),
                                  [[False, True]])
    x = tf.reshape(tf.range(12.0), (2, 3, 2))
    np.testing.assert_array_equal(LastPosition()(x), [[4.0, 5.0], [10.0, 11.0]])


@pytest.mark.parametrize("layer", [
    HistoryTopK(k=3, exclude_history=False, first_item_id=1),
    HistoryTopK(k=2, mark_unfilled=True),
    ItemEmbedding(vocab_size=VOCAB, dim=4, scale_by_dim=True, l2=0.01),
    PaddingMask(pad_id=3),
    LastPosition(),
], ids=lambda layer: type(layer).__name__)
def test_non_attention_layers_round_trip(layer):
    cls = type(layer)
    assert keras.saving.get_registered_name(cls) == f"tfrec_attn>{cls.__name__}"
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(restored) is cls
    assert restored.get_config() == layer.get_config()
