import numpy as np
import pytest

from tfrec_attn._keras import keras, tf
from tfrec_attn.data import make_training_dataset, pad_left
from tfrec_attn.evaluation import PopularityRecommender, evaluate
from tfrec_attn.models import SASRec, SASRecConfig
from tfrec_attn.training import make_score_fn


def _train(sequences, vocab, loss, epochs=8, **config):
    tf.keras.utils.set_random_seed(1)
    train = [s[:-1] for s in sequences]
    model = SASRec(SASRecConfig(vocab_size=vocab, max_len=16, dim=32, loss=loss, **config))
    model.compile(optimizer=keras.optimizers.Adam(5e-3))
    history = model.fit(make_training_dataset(train, 16, 64), epochs=epochs, verbose=0)
    return model, history.history["loss"]


@pytest.fixture(scope="module")
def softmax_run(chain_sequences):
    """`(model, losses)`: the softmax SASRec of `test_every_loss_learns_planted_chains`, shared
    with the tests that only read a trained model (one training instead of four)."""
    sequences, vocab = chain_sequences
    return _train(sequences, vocab, "softmax")


@pytest.mark.parametrize(
    "kwargs, message",
    [({"loss": "hinge"}, "loss"), ({"dim": 0}, "dim"), ({"positional": "rope"}, "positional"),
     ({"dim": 10, "num_heads": 3}, "divisible"), ({"input_dropout": 1.0}, "input_dropout"),
     ({"input_dropout": True}, "input_dropout"),
     ({"attention": "linear", "attention_options": {"window": 8}},
      r"attention_options \['window'\] are not options of attention='linear'"),
     ({"attention": "local", "attention_options": {"windw": 8}},
      r"\['windw'\] are not options of attention='local' "
      r"\(its options: \['num_global', 'window'\], and BaseAttention's: \['bias_initializer', "
      r"'key_dim', 'use_bias', 'use_projections', 'value_dim'\]\)"),
     ({"attention_options": {"num_heads": 2}},
      r"attention_options must not set \['num_heads'\]: the encoder sets them"),
     ({"l2": -0.1}, r"l2 must be a number >= 0"), ({"exclude_seen": "no"}, "exclude_seen"),
     ({"norm_first": "no"}, "norm_first must be a bool"), ({"gated": 1}, "gated"),
     ({"vocab_size": 2}, r"vocab_size must be at least 3: ids 0 \(padding\) and 1")],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SASRecConfig(**{"vocab_size": 10, **kwargs})


@pytest.mark.parametrize(
    "loss", ["softmax", pytest.param("sampled", marks=pytest.mark.slow),
             pytest.param("bce", marks=pytest.mark.slow)])
def test_every_loss_learns_planted_chains(chain_sequences, loss, request):
    sequences, vocab = chain_sequences
    model, losses = (request.getfixturevalue("softmax_run") if loss == "softmax"
                     else _train(sequences, vocab, loss))
    assert losses[-1] < losses[0]
    histories = [s[:-1] for s in sequences]
    targets = np.array([s[-1] for s in sequences])
    ours = evaluate(make_score_fn(model.scorer, 16), histories, targets, vocab)
    train = [s[:-1] for s in sequences]
    popular = evaluate(PopularityRecommender(vocab).fit(train).score, histories, targets, vocab)
    # 80% of next items follow a planted chain: a model that learns it is far above popularity.
    assert ours["ndcg@10"] > popular["ndcg@10"] + 0.3, (ours["ndcg@10"], popular["ndcg@10"])


def test_topk_model_excludes_history_and_matches_scores(chain_sequences, softmax_run):
    sequences, _ = chain_sequences
    model, _ = softmax_run
    history = pad_left([s[:-1] for s in sequences[:8]], 16)
    top = model.topk_model(k=5)(tf.constant(history))
    ids = top["item_ids"].numpy()
    for row, hist in zip(ids, history):
        assert not set(row) & set(hist[hist > 0])
        assert (row >= 2).all()
    scores = model.scorer(tf.constant(history)).numpy()
    np.testing.assert_allclose(top["scores"].numpy(), np.take_along_axis(scores, ids, 1),
                               rtol=1e-5)


@pytest.mark.parametrize("positional", ["learned", "sinusoidal"])
@pytest.mark.parametrize("length", [5, 9])
def test_topk_model_rejects_a_history_longer_than_max_len_by_name(positional, length):
    """The serving graph does not cut long histories silently (`export_saved_model` keeps the
    last max_len): with the length known only at run time it fails naming max_len, not with
    the sliced position table's "Incompatible shapes"."""
    model = SASRec(SASRecConfig(vocab_size=20, max_len=4, dim=8, num_blocks=1,
                                positional=positional))
    topk = tf.function(model.topk_model(k=3),
                       input_signature=[tf.TensorSpec([None, None], tf.int64)])
    assert topk(tf.constant([[0, 2, 3, 4]], tf.int64))["item_ids"].shape == (1, 3)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"longer than max_length=4 \(max_len of the model\)"):
        topk(tf.constant([list(range(2, 2 + length))], tf.int64))


def test_variable_length_batches_give_same_last_state(chain_sequences, softmax_run):
    """Right-aligned positions: trimming left padding does not change the prediction."""
    sequences, _ = chain_sequences
    model, _ = softmax_run
    short = pad_left([sequences[0][:5]], 5)
    long = pad_left([sequences[0][:5]], 16)
    np.testing.assert_allclose(model.scorer(tf.constant(short)).numpy(),
                               model.scorer(tf.constant(long)).numpy(), atol=1e-5)


def test_weights_round_trip(tmp_path, chain_sequences, softmax_run):
    sequences, _ = chain_sequences
    model, _ = softmax_run
    model.save_weights(str(tmp_path / "w"))
    fresh = SASRec(SASRecConfig(**model.get_config()["config"]))
    history = tf.constant(pad_left([s[:-1] for s in sequences[:4]], 16))
    fresh(history)
    fresh.load_weights(str(tmp_path / "w"))
    np.testing.assert_allclose(fresh(history).numpy(), model(history).numpy(), atol=1e-6)


@pytest.mark.parametrize("vocab_size, loss", [(1_700, "softmax"), (8_192, "softmax"),
                                              (8_193, "sampled"), (24_000, "sampled")])
def test_auto_loss_resolves_by_catalogue_size(vocab_size, loss):
    config = SASRecConfig(vocab_size=vocab_size)
    assert config.loss == loss
    assert SASRecConfig(**config.to_dict()) == config  # the resolved loss round-trips


def test_input_dropout_hides_items_only_in_training():
    """`input_dropout` swaps history items for the OOV id while training; padding stays
    padding, and inference (serving, evaluation) reads the real items."""
    model = SASRec(SASRecConfig(vocab_size=30, max_len=6, dim=8, num_blocks=1,
                                input_dropout=0.5))
    layer = model.encoder.get_layer("input_dropout")
    history = tf.constant(np.repeat([[0, 0, 2, 3, 4, 5]], 256, 0), tf.int64)
    dropped = layer(history, training=True).numpy()
    assert (dropped[:, :2] == 0).all() and np.isin(dropped[:, 2:], [1, 2, 3, 4, 5]).all()
    assert 0.4 < (dropped[:, 2:] == 1).mean() < 0.6
    np.testing.assert_array_equal(model(history).numpy(), model(history).numpy())
    assert not np.allclose(model.encoder(history, training=True).numpy(),
                           model.encoder(history, training=False).numpy())
    assert SASRecConfig(**model.get_config()["config"]).input_dropout == 0.5
