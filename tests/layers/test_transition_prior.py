"""TransitionPrior: the co-occurrence baseline's transition distribution, mixed into scores."""

import numpy as np
import pytest

from tfrec_attn._keras import keras, tf
from tfrec_attn.data import pad_left
from tfrec_attn.evaluation import CooccurrenceRecommender
from tfrec_attn.export import assert_builtin_only
from tfrec_attn.layers import TransitionPrior

VOCAB = 30


@pytest.fixture(scope="module")
def fitted():
    """A baseline fitted on random sequences, and a prior holding its whole rows."""
    rng = np.random.default_rng(0)
    sequences = [rng.integers(2, VOCAB, size=int(rng.integers(3, 12))) for _ in range(60)]
    baseline = CooccurrenceRecommender(VOCAB).fit(sequences)
    width = int(np.diff(baseline.indptr).max())
    prior = TransitionPrior(VOCAB, width)
    prior.set_table(*baseline.neighbor_table(width))
    histories = [rng.integers(2, VOCAB, size=int(rng.integers(1, 9))) for _ in range(16)]
    return baseline, prior, histories


def _log_softmax(x):
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def test_transition_probabilities_are_the_baselines_normalized_scores(fitted):
    """With the whole rows, q is the baseline's decayed row sum (its tie-breaker aside),
    normalized to one."""
    baseline, prior, histories = fitted
    q = prior.transition_probabilities(tf.constant(pad_left(histories, 10))).numpy()
    expected = baseline.score(histories)[:, 2:] - baseline._tiebreak[2:]
    expected = expected / expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(q[:, 2:], expected, rtol=1e-5, atol=1e-7)
    assert np.all(q[:, :2] == 0.0)


def test_mix_zero_is_log_softmax_and_mix_interpolates(fitted):
    _, prior, histories = fitted
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(len(histories), VOCAB)).astype(np.float32)
    padded = tf.constant(pad_left(histories, 10))
    np.testing.assert_allclose(prior([scores, padded], mix=0.0).numpy(), _log_softmax(scores),
                               rtol=1e-5, atol=1e-5)
    q = prior.transition_probabilities(padded).numpy()
    p = np.exp(_log_softmax(scores))
    for mix in (0.3, 0.8):
        np.testing.assert_allclose(np.exp(prior([scores, padded], mix=mix).numpy()),
                                   (1 - mix) * p + mix * q, rtol=1e-4, atol=1e-7)


def test_mix_weight_is_used_without_override(fitted):
    _, prior, histories = fitted
    scores = np.zeros((len(histories), VOCAB), np.float32)
    padded = tf.constant(pad_left(histories, 10))
    try:
        prior.set_mix(0.6)
        np.testing.assert_allclose(prior([scores, padded]).numpy(),
                                   prior([scores, padded], mix=0.6).numpy())
    finally:
        prior.set_mix(0.0)


@pytest.mark.parametrize("history, expected", [
    ([[0, 0, 0]], 0.0),           # padding only: no successor anywhere
    ([[0, 1, 40]], 0.0),          # OOV and an id outside the vocabulary read as nothing
    ([[0, 0, 5]], 1.0),           # one real item with successors
])
def test_padding_oov_and_out_of_range_ids_contribute_nothing(fitted, history, expected):
    baseline, prior, _ = fitted
    assert baseline.indptr[6] > baseline.indptr[5]  # item 5 has successors
    q = prior.transition_probabilities(tf.constant(history)).numpy()
    assert q.sum() == pytest.approx(expected, abs=1e-5)


def test_only_the_last_num_recent_positions_count():
    prior = TransitionPrior(6, 1, num_recent=2)
    prior.set_table(np.array([[0], [0], [3], [4], [5], [0]]), np.ones((6, 1), np.float32))
    q = prior.transition_probabilities(tf.constant([[2, 3, 4]])).numpy()[0]
    # item 2 is outside the last num_recent=2 positions; 3 weighs 0.5 (decay), 4 weighs 1
    np.testing.assert_allclose(q, [0, 0, 0, 0, 0.5 / 1.5, 1.0 / 1.5], rtol=1e-6)


def test_neighbor_table_keeps_the_strongest_successors():
    baseline = CooccurrenceRecommender(8, window=1).fit(
        [np.array([2, 3, 2, 3, 2, 4, 2, 5, 2, 3])])
    ids, weights = baseline.neighbor_table(2)
    assert ids[2].tolist() == [3, 4]  # 3 follows 2 three times; 4 and 5 once each: 4 first
    np.testing.assert_allclose(weights[2], [0.6, 0.2], rtol=1e-6)
    assert ids.dtype == np.int32 and weights.dtype == np.float32 and ids.shape == (8, 2)
    with pytest.raises(RuntimeError, match="before fit"):
        CooccurrenceRecommender(8).neighbor_table(2)


def test_float16_scores_and_mixed_policy():
    prior = TransitionPrior(6, 1)
    prior.set_table(np.array([[0], [0], [3], [0], [0], [0]]), np.ones((6, 1), np.float32))
    out = prior([tf.zeros((1, 6), tf.float16), tf.constant([[2]])], mix=0.5)
    assert out.dtype == tf.float32 and int(tf.argmax(out[0])) == 3


@pytest.mark.parametrize("kwargs, message", [
    ({"vocab_size": 0, "num_neighbors": 2}, "vocab_size"),
    ({"vocab_size": 5, "num_neighbors": 0}, "num_neighbors"),
    ({"vocab_size": 5, "num_neighbors": 2, "num_recent": 0}, "num_recent"),
    ({"vocab_size": 5, "num_neighbors": 2, "recency_decay": 0.0}, "recency_decay"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TransitionPrior(**kwargs)


def test_bad_table_and_mix_are_refused():
    prior = TransitionPrior(5, 2)
    with pytest.raises(ValueError, match=r"shape \(5, 2\)"):
        prior.set_table(np.zeros((5, 3), np.int32), np.zeros((5, 3), np.float32))
    for mix in (-0.1, 1.0):
        with pytest.raises(ValueError, match="mix must be in"):
            prior.set_mix(mix)


def test_config_round_trip_and_weights(fitted):
    _, prior, histories = fitted
    copy = TransitionPrior.from_config(prior.get_config())
    assert copy.get_config() == prior.get_config()
    copy.set_weights(prior.get_weights())
    scores = np.random.default_rng(2).normal(size=(len(histories), VOCAB)).astype(np.float32)
    padded = tf.constant(pad_left(histories, 10))
    np.testing.assert_allclose(copy([scores, padded], mix=0.4).numpy(),
                               prior([scores, padded], mix=0.4).numpy())
    assert not copy.trainable_weights and len(copy.non_trainable_weights) == 3


def test_saved_model_and_tflite_carry_the_table(fitted, tmp_path):
    """A functional model with the prior: SavedModel reload and a TFLite file with dynamic
    batch and length (builtin ops) give the Keras outputs."""
    _, prior, histories = fitted
    prior.set_mix(0.5)
    try:
        scores_in = keras.Input((VOCAB,))
        history_in = keras.Input((None,), dtype="int64")
        model = keras.Model([scores_in, history_in], prior([scores_in, history_in]))
        scores = np.random.default_rng(3).normal(size=(4, VOCAB)).astype(np.float32)
        padded = pad_left(histories[:4], 10)
        expected = model([scores, padded]).numpy()
        tf.saved_model.save(model, str(tmp_path / "sm"))
        signature = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"]
        got = list(signature(**{model.input_names[0]: tf.constant(scores),
                                model.input_names[1]: tf.constant(padded)}).values())[0]
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-5)

        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        path = tmp_path / "prior.tflite"
        path.write_bytes(converter.convert())
        assert_builtin_only(path)
        from ai_edge_litert.interpreter import Interpreter

        runner = Interpreter(model_path=str(path)).get_signature_runner()
        names = sorted(runner.get_input_details())
        inputs = dict(zip(names, (scores, padded)))
        if runner.get_input_details()[names[0]]["dtype"] != np.float32:
            inputs = dict(zip(names, (padded, scores)))
        out = list(runner(**inputs).values())[0]
        np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    finally:
        prior.set_mix(0.0)


def test_mix_zero_ranks_exactly_as_the_scores_even_far_below_the_floor():
    """Logits 100 apart put log-softmax values below the log floor (-69): the prior's share
    (zero at mix 0, or where q is 0) must not lift or tie them."""
    prior = TransitionPrior(8, 2)
    prior.set_table(np.tile([[6, 7]], (8, 1)), np.full((8, 2), 0.5, np.float32))
    scores = np.array([[0.0, 0.0, 200.0, 100.0, 0.0, -50.0, -100.0, -150.0]], np.float32)
    out = prior([scores, tf.constant([[0, 3]])], mix=0.0).numpy()
    np.testing.assert_array_equal(np.argsort(-out[0], kind="stable"),
                                  np.argsort(-scores[0], kind="stable"))
    out = prior([scores, tf.constant([[0, 3]])], mix=0.5).numpy()[0]
    np.testing.assert_allclose(out[5], scores[0, 5] - 200.0 + np.log(0.5), rtol=1e-6)


def test_table_round_trips_and_is_stored_as_integers(fitted):
    baseline, prior, _ = fitted
    ids, weights = baseline.neighbor_table(prior.num_neighbors)
    got_ids, got_weights = prior.table()
    np.testing.assert_array_equal(got_ids, ids)
    np.testing.assert_allclose(got_weights, weights, atol=2.0 ** -25)
    assert prior.neighbor_weights.dtype == tf.int32
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        prior.set_table(ids, weights + 2.0)


@pytest.mark.parametrize("bad_id", [1, VOCAB, -3])
def test_successor_ids_outside_the_catalogue_are_refused(bad_id):
    """Else the table is stored and the first call fails inside a TensorFlow scatter."""
    prior = TransitionPrior(VOCAB, 2)
    ids = np.zeros((VOCAB, 2), np.int64)
    ids[4, 1] = bad_id
    with pytest.raises(ValueError, match=rf"neighbor_ids must be 0 .* Received: {bad_id} "
                                         r"at index \(4, 1\)"):
        prior.set_table(ids, np.full((VOCAB, 2), 0.5))


# -- the item-item (EASE) term -------------------------------------------------------------------
def _ease_dense(sequences, vocab, l2):
    """EASE by its definition, on numpy: B = I - P / diag(P), P = (X^T X + l2 I)^-1."""
    x = np.zeros((len(sequences), vocab - 2))
    for u, s in enumerate(sequences):
        x[u, np.asarray(s) - 2] = 1.0
    p = np.linalg.inv(x.T @ x + l2 * np.eye(vocab - 2))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b


def test_ease_table_holds_the_largest_weights_of_each_row():
    from tfrec_attn.training.transition_prior import ease_table

    rng = np.random.default_rng(1)
    sequences = [rng.choice(np.arange(2, 12), size=4, replace=False) for _ in range(40)]
    dense = _ease_dense(sequences, 12, l2=5.0)
    ids, weights = ease_table(sequences, 12, l2=5.0, width=10)  # width >= items: every weight
    rebuilt = np.zeros_like(dense)
    for i in range(10):
        for j, w in zip(ids[i + 2], weights[i + 2]):
            if j:
                rebuilt[i, j - 2] += w
    np.testing.assert_allclose(rebuilt, dense, atol=1e-9)
    assert not ids[:2].any() and not weights[:2].any()  # padding and OOV have no row
    ids, weights = ease_table(sequences, 12, l2=5.0, width=3)
    for i in range(10):
        kept = np.sort(np.abs(weights[i + 2]))
        np.testing.assert_allclose(kept, np.sort(np.abs(dense[i]))[-3:], atol=1e-9)


def test_item_item_term_adds_its_scaled_rows_over_the_whole_history(fitted):
    baseline, prior, histories = fitted
    vocab, width = VOCAB, 4
    layer = TransitionPrior(vocab, prior.num_neighbors, item_item_neighbors=width)
    layer.set_table(*prior.table())
    layer.set_mix(0.3)
    rng = np.random.default_rng(2)
    ids = rng.integers(2, vocab, size=(vocab, width))
    ids[:2] = 0
    weights = np.where(ids > 0, rng.uniform(-1, 1, size=(vocab, width)), 0.0)
    layer.set_item_item_table(ids, weights)
    padded = pad_left(histories, 10)
    scores = tf.constant(rng.normal(size=(len(histories), vocab)).astype(np.float32))
    without = layer([scores, padded], item_item_scale=0.0).numpy()
    np.testing.assert_allclose(without, prior([scores, padded], mix=0.3).numpy(), rtol=1e-6)
    expected = np.zeros((len(histories), vocab))
    for u, row in enumerate(padded):
        for item in row[row >= 2]:  # every valid position, the older ones too
            np.add.at(expected[u], ids[item], weights[item])
    layer.set_item_item_scale(2.5)
    np.testing.assert_allclose(layer([scores, padded]).numpy(), without + 2.5 * expected,
                               rtol=1e-5, atol=1e-5)


def test_item_item_config_weights_and_refusals():
    layer = TransitionPrior(VOCAB, 3, item_item_neighbors=2)
    assert layer.get_config()["item_item_neighbors"] == 2
    assert "item_item_neighbors" not in TransitionPrior(VOCAB, 3).get_config()  # as before
    assert len(TransitionPrior(VOCAB, 3).weights) == 3
    names = [w.name.split("/")[-1] for w in layer.weights]
    assert names[3:] == ["item_item_ids:0", "item_item_weights:0", "item_item_scale:0"]
    ids = np.zeros((VOCAB, 2), np.int64)
    ids[2:, 0] = 3
    layer.set_item_item_table(ids, np.where(ids > 0, -0.5, 0.0))
    layer.set_item_item_scale(1.5)
    copy = TransitionPrior.from_config(layer.get_config())
    copy.set_weights(layer.get_weights())
    history = tf.constant([[0, 2, 4]])
    scores = tf.zeros((1, VOCAB))
    np.testing.assert_array_equal(copy([scores, history]).numpy(),
                                  layer([scores, history]).numpy())
    assert layer.item_item_weights.dtype == tf.int32
    with pytest.raises(ValueError, match=r"item-item weights must lie in \[-127, 127\]"):
        layer.set_item_item_table(ids, np.full((VOCAB, 2), 200.0))
    with pytest.raises(ValueError, match="item-item ids must be 0 .* Received: 30"):
        layer.set_item_item_table(np.full((VOCAB, 2), VOCAB), np.zeros((VOCAB, 2)))
    with pytest.raises(ValueError, match="item_item_scale must be a finite number >= 0"):
        layer.set_item_item_scale(-1.0)
    with pytest.raises(ValueError, match="no item-item table"):
        TransitionPrior(VOCAB, 3).set_item_item_table(ids, np.zeros((VOCAB, 2)))
    with pytest.raises(ValueError, match="item_item_neighbors must be >= 0"):
        TransitionPrior(VOCAB, 3, item_item_neighbors=-1)
