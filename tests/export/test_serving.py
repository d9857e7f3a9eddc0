"""The TF Serving contract: every signature, REST payloads (row and columnar), gRPC requests,
warm-up records and models.config, through the SavedModel loader."""

import json

import numpy as np
import pytest

from tfrec_attn._keras import tf
from tfrec_attn.data import pad_left
from tfrec_attn.export import export_saved_model
from tfrec_attn.export.serving import (
    grpc_request,
    parse_rest_response,
    read_models_config,
    rest_request,
    write_models_config,
)
from tfrec_attn.testing.serving import predict_like_tf_serving

MAX_LEN = 12  # the `tiny_sasrec` fixture's max_len


@pytest.fixture(scope="module")
def model(tiny_sasrec):
    return tiny_sasrec


@pytest.fixture(scope="module")
def histories(chain_sequences):
    sequences, _ = chain_sequences
    return pad_left([s[:-1] for s in sequences[:6]], MAX_LEN)


@pytest.fixture(scope="module")
def export(model, histories, tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    return export_saved_model(model, root, "rec", k=8, warmup_histories=histories)


def _keras_scores(model, histories):
    return model.scorer(tf.constant(histories)).numpy()


def test_row_format_matches_keras(model, histories, export):
    body = predict_like_tf_serving(export, rest_request(histories))
    got = parse_rest_response(body)
    want = model.topk_model(k=8)(tf.constant(histories))
    np.testing.assert_array_equal(got["item_ids"], want["item_ids"].numpy())


def test_recommend_takes_k_per_request(model, histories, export):
    body = rest_request(histories, signature_name="recommend", k=3)
    assert '"inputs"' in body  # a scalar input needs the columnar format
    got = parse_rest_response(predict_like_tf_serving(export, body))
    assert got["item_ids"].shape == (len(histories), 3)
    full = model.topk_model(k=8)(tf.constant(histories))["item_ids"].numpy()
    np.testing.assert_array_equal(got["item_ids"], full[:, :3])


def test_k_above_max_is_an_error(histories, export):
    recommend = tf.saved_model.load(str(export)).signatures["recommend"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="k must be <= 8"):
        recommend(history=tf.constant(histories), k=tf.constant(9))


def test_score_signature_scores_given_candidates(model, histories, export):
    candidates = np.array([[2, 3, 4]] * len(histories))
    body = rest_request(histories, signature_name="score", candidate_ids=candidates)
    got = parse_rest_response(predict_like_tf_serving(export, body), output_name="scores")
    want = _keras_scores(model, histories)[:, [2, 3, 4]]
    np.testing.assert_allclose(got["scores"], want, rtol=1e-4, atol=1e-5)


def test_score_reads_out_of_vocabulary_candidates_as_the_unknown_item(model, histories, export):
    """README "TF Serving signatures": ids outside the vocabulary score as id 1; history items
    and the reserved ids are scored, not dropped."""
    vocab = model.config.vocab_size
    history_item = int(histories[0][-1])
    candidates = np.array([[0, 1, vocab, vocab + 7, -3, history_item]] * len(histories))
    score = tf.saved_model.load(str(export)).signatures["score"]
    got = score(history=tf.constant(histories),
                candidate_ids=tf.constant(candidates, tf.int64))["scores"].numpy()
    want = _keras_scores(model, histories)
    assert np.isfinite(got).all()
    for column in (2, 3, 4):
        np.testing.assert_allclose(got[:, column], got[:, 1])
    np.testing.assert_allclose(got[:, [0, 1, 5]], want[:, [0, 1, history_item]], rtol=1e-4,
                               atol=1e-5)


@pytest.mark.parametrize("history_rows, candidate_rows", [(1, 2), (2, 1)])
def test_score_signature_refuses_different_batch_sizes(histories, export, history_rows,
                                                       candidate_rows):
    """As DIN's signatures do; a batch of 1 used to broadcast against the other input."""
    score = tf.saved_model.load(str(export)).signatures["score"]
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="history and candidate_ids must have the same batch size"):
        score(history=tf.constant(histories[:history_rows]),
              candidate_ids=tf.constant([[5, 6]] * candidate_rows, tf.int64))


@pytest.mark.parametrize("columnar", [False, True])
def test_one_output_answers_parse_under_the_given_name(model, histories, export, columnar):
    """The columnar answer used to raise AttributeError; the row answer came back as
    'output' (the README's score example)."""
    candidates = np.array([[2, 3, 4]] * len(histories))
    body = rest_request(histories, signature_name="score", columnar=columnar,
                        candidate_ids=candidates)
    answer = predict_like_tf_serving(export, body)  # one output: TF Serving omits its name
    assert '"scores"' not in answer
    got = parse_rest_response(answer, output_name="scores")
    assert list(got) == ["scores"]
    np.testing.assert_allclose(got["scores"], _keras_scores(model, histories)[:, [2, 3, 4]],
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="no output names .* pass output_name"):
        parse_rest_response(answer)


def test_named_answers_ignore_output_name():
    body = {"outputs": {"item_ids": [[4, 2]], "scores": [[0.5, 0.25]]}}
    assert sorted(parse_rest_response(body, output_name="scores")) == ["item_ids", "scores"]
    with pytest.raises(ValueError, match="body must be TF Serving's :predict answer"):
        parse_rest_response({"prediction": [1.0]})


@pytest.mark.parametrize("columnar", [False, True])
def test_ragged_extra_rows_are_right_padded_with_the_padding_id(columnar):
    """Ragged `candidates` lists used to fail inside NumPy."""
    body = json.loads(rest_request([[3, 4], [5]], columnar=columnar,
                                   candidates=[[7, 8, 9], [6]]))
    want = [[7, 8, 9], [6, 0, 0]]
    if columnar:
        assert body["inputs"] == {"history": [[3, 4], [0, 5]], "candidates": want}
    else:
        assert [row["candidates"] for row in body["instances"]] == want
    request = grpc_request([[3, 4], [5]], "din", candidates=[[7, 8, 9], [6]])
    np.testing.assert_array_equal(tf.make_ndarray(request.inputs["candidates"]), want)


@pytest.mark.parametrize("extra, message", [
    ({"candidates": [[7, 8], [6.5]]}, "candidates must be an array, or one list of integer ids"),
    ({"candidates": [[7, 8]]}, r"candidates must have one row per history \(2\)"),
])
def test_extra_inputs_that_cannot_be_rows_are_named(extra, message):
    with pytest.raises(ValueError, match=message):
        rest_request([[3, 4], [5]], **extra)


@pytest.mark.parametrize("signature", ["serving_default", "rank", "score", "user_embedding"])
def test_k_outside_the_recommend_signature_is_refused(signature):
    with pytest.raises(ValueError, match=f"k is not an input of '{signature}'.*'recommend'"):
        rest_request([[3, 4]], signature_name=signature, k=5)
    assert '"k": 5' in rest_request([[3, 4]], signature_name="recommend", k=5)


def test_embeddings_reproduce_scores(model, histories, export):
    loaded = tf.saved_model.load(str(export))
    user = loaded.signatures["user_embedding"](history=tf.constant(histories))["embedding"]
    ids = tf.range(model.config.vocab_size, dtype=tf.int64)
    items = loaded.signatures["item_embeddings"](item_ids=ids)["embedding"]
    np.testing.assert_allclose(user.numpy() @ items.numpy().T, _keras_scores(model, histories),
                               rtol=1e-4, atol=1e-4)


def test_longer_histories_keep_the_last_max_len(histories, export):
    serve = tf.saved_model.load(str(export)).signatures["serving_default"]
    longer = np.concatenate([np.full((len(histories), 5), 7), histories], axis=1)
    np.testing.assert_array_equal(serve(history=tf.constant(longer))["item_ids"].numpy(),
                                  serve(history=tf.constant(histories))["item_ids"].numpy())


def test_empty_history_returns_valid_items(export):
    serve = tf.saved_model.load(str(export)).signatures["serving_default"]
    ids = serve(history=tf.zeros((2, MAX_LEN), tf.int64))["item_ids"].numpy()
    assert (ids >= 2).all() and len(set(ids[0])) == 8


def test_wrong_dtype_is_rejected(histories, export):
    serve = tf.saved_model.load(str(export)).signatures["serving_default"]
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
        serve(history=tf.constant(histories.astype(np.float32)))


def test_candidate_set_restricts_recommendations(model, histories, tmp_path):
    allowed = np.arange(20, 60)
    path = export_saved_model(model, tmp_path, "rec", k=5, candidate_ids=allowed)
    ids = tf.saved_model.load(str(path)).signatures["serving_default"](
        history=tf.constant(histories))["item_ids"].numpy()
    assert np.isin(ids, allowed).all()


def test_warmup_records_are_prediction_logs(histories, export):
    from tensorflow_serving.apis import prediction_log_pb2

    path = export / "assets.extra" / "tf_serving_warmup_requests"
    records = list(tf.data.TFRecordDataset(str(path)).as_numpy_iterator())
    assert len(records) == len(histories)
    log = prediction_log_pb2.PredictionLog.FromString(records[0])
    request = log.predict_log.request
    assert request.model_spec.name == "rec"
    np.testing.assert_array_equal(tf.make_ndarray(request.inputs["history"]), histories[:1])


def test_grpc_request_round_trips(histories):
    request = grpc_request(histories, "rec", signature_name="recommend", k=4)
    assert request.model_spec.signature_name == "recommend"
    np.testing.assert_array_equal(tf.make_ndarray(request.inputs["history"]), histories)
    assert tf.make_ndarray(request.inputs["k"]) == 4


def _served(path) -> dict:
    """name -> (base_path, num_versions) of each model a models.config lists, in order."""
    config = read_models_config(path)
    return {e.name: (e.base_path, e.model_version_policy.latest.num_versions)
            for e in config.model_config_list.config}


def test_models_config(tmp_path):
    path = write_models_config(tmp_path / "models.config", {"rec": "/models/rec"},
                               num_versions=2)
    text = path.read_text()
    assert 'name: "rec"' in text and "num_versions: 2" in text
    assert text.count("{") == text.count("}")
    assert _served(path) == {"rec": ("/models/rec", 2)}
    assert not list(tmp_path.glob("*.tmp"))


def test_models_config_keeps_other_models_and_replaces_the_same_name(tmp_path):
    path = tmp_path / "models.config"
    write_models_config(path, {"sasrec": "/models/sasrec", "other": "/models/other"})
    write_models_config(path, {"din": "/models/din"})
    assert _served(path) == {"sasrec": ("/models/sasrec", 1), "other": ("/models/other", 1),
                             "din": ("/models/din", 1)}
    write_models_config(path, {"sasrec": "/models/sasrec_v2"}, num_versions=3)
    assert list(_served(path).items()) == [("sasrec", ("/models/sasrec_v2", 3)),
                                           ("other", ("/models/other", 1)),
                                           ("din", ("/models/din", 1))]
    assert path.read_text().count('name: "sasrec"') == 1


def test_models_config_written_by_hand_is_merged(tmp_path):
    """The old one-line-per-field layout (and any TF Serving text proto) parses."""
    path = tmp_path / "models.config"
    path.write_text('model_config_list {\n  config {\n    name: "sasrec"\n'
                    '    base_path: "/models/sasrec"\n    model_platform: "tensorflow"\n'
                    "    model_version_policy { latest { num_versions: 1 } }\n  }\n}\n")
    write_models_config(path, {"din": "/models/din"})
    assert _served(path) == {"sasrec": ("/models/sasrec", 1), "din": ("/models/din", 1)}


@pytest.mark.parametrize("text, message", [
    ("model_config_list {\n  config {\n    name: \"sasrec\"\n", "not a TF Serving model config"),
    ("name: sasrec base_path: /models/sasrec\n", "not a TF Serving model config"),
    ('custom_model_config { type_url: "x" }\n', "custom_model_config"),
    ('model_config_list { config { name: "a" } config { name: "a" } }\n', "more than once"),
])
def test_unparsable_models_config_is_reported_and_left_unchanged(tmp_path, text, message):
    path = tmp_path / "models.config"
    path.write_bytes(text.encode())
    with pytest.raises(ValueError, match=message) as error:
        write_models_config(path, {"din": "/models/din"})
    assert str(path) in str(error.value)
    assert path.read_bytes() == text.encode()
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("models, num_versions, message", [
    ({"din": "/models/din"}, 0, "num_versions must be a positive int"),
    ({"": "/models/din"}, 1, "models must map non-empty model names"),
    (["din"], 1, "models must map"),
])
def test_models_config_bad_arguments(tmp_path, models, num_versions, message):
    with pytest.raises(ValueError, match=message):
        write_models_config(tmp_path / "models.config", models, num_versions=num_versions)
    assert not (tmp_path / "models.config").exists()


def test_unknown_input_and_error_responses(histories, export):
    body = json.dumps({"instances": [{"histroy": histories[0].tolist()}]})
    with pytest.raises(RuntimeError, match="histroy"):
        parse_rest_response(predict_like_tf_serving(export, body))
