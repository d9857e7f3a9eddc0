"""The attention autoencoder's serving contract: top-k items of a user's item set on TF Serving's
REST payloads (as `recommend_from_item_sets` computes them), input exclusion, padding/OOV,
repeats, order, bad input, versioning, pruned and QAT models, and TFLite through LiteRT."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tfrec_attn._keras import keras, tf
from tfrec_attn.data import build_sequences, generate_synthetic, pad_left
from tfrec_attn.data.item_sets import make_item_set_dataset, split_item_sets
from tfrec_attn.export import (
    AutoencoderModule,
    LiteRTAutoencoder,
    assert_builtin_only,
    convert_autoencoder_to_tflite,
    existing_versions,
    export_autoencoder,
)
from tfrec_attn.export.serving import parse_rest_response, rest_request
from tfrec_attn.models import (
    AttentionAutoencoderConfig,
    build_attention_autoencoder,
    multinomial_loss,
    recommend_from_item_sets,
)
from tfrec_attn.optimization import make_qat_model, prune_model, pruning_callbacks, strip_pruning
from tfrec_attn.testing.serving import predict_like_tf_serving

MAX_LEN, K = 6, 4


def tiny_config(vocab_size: int, **overrides) -> AttentionAutoencoderConfig:
    return AttentionAutoencoderConfig(vocab_size, max_len=MAX_LEN, dim=8, num_heads=2,
                                      **overrides)


@pytest.fixture(scope="module")
def data():
    """A tiny autoencoder trained 3 epochs on synthetic item sets (so its scores are spread
    enough to compare rankings; eagerly: 9 steps do not pay for tracing), and 24 fold-in sets
    of 2 to 20 distinct items. No Transformer block: the export does not depend on the encoder,
    and a block doubles the TFLite and QAT export times (the positional test below has one)."""
    keras.utils.set_random_seed(0)
    sequences = build_sequences(generate_synthetic(num_users=96, num_items=28, mean_length=8))
    sets = split_item_sets(sequences.sequences, 0.2).fold_in
    vocab = sequences.vocab_size
    model = build_attention_autoencoder(tiny_config(vocab, num_blocks=0))
    model.compile(keras.optimizers.Adam(1e-2), loss=multinomial_loss(), run_eagerly=True)
    model.fit(make_item_set_dataset(sets, vocab, MAX_LEN, 32), epochs=3, verbose=0)
    return model, sets[:24], vocab


@pytest.fixture(scope="module")
def exported(data, tmp_path_factory):
    model, sets, _ = data
    path = export_autoencoder(model, tmp_path_factory.mktemp("autoencoder"), max_k=K,
                              metadata={"run": "test"}, warmup=pad_left(sets[:5], MAX_LEN))
    return path, tf.saved_model.load(str(path))


def assert_same_top_k(got: dict, want: dict, atol: float = 1e-5) -> None:
    np.testing.assert_array_equal(got["item_ids"], want["item_ids"])
    np.testing.assert_allclose(got["scores"], want["scores"], rtol=atol, atol=atol)


def test_layout_metadata_and_warmup(data, exported):
    _, sets, vocab = data
    path, loaded = exported
    assert path.parts[-2:] == ("autoencoder", "1") and (path / "saved_model.pb").exists()
    info = json.loads((path / "assets.extra" / "tfrec_attn.json").read_text())
    assert info == {"config": None, "max_len": MAX_LEN, "vocab_size": vocab, "positional": False,
                    "max_k": K, "exclude_input": True, "run": "test",
                    "signatures": ["serving_default"]}
    from tensorflow_serving.apis import prediction_log_pb2

    records = list(tf.data.TFRecordDataset(
        str(path / "assets.extra" / "tf_serving_warmup_requests")).as_numpy_iterator())
    assert len(records) == 5
    request = prediction_log_pb2.PredictionLog.FromString(records[1]).predict_log.request
    np.testing.assert_array_equal(tf.make_ndarray(request.inputs["items"]),
                                  pad_left(sets[1:2], MAX_LEN))
    signature = loaded.signatures["serving_default"]
    spec = signature.structured_input_signature[1]
    assert {key: (s.dtype, s.shape.as_list()) for key, s in spec.items()} == {
        "items": (tf.int64, [None, None])}
    assert {key: (s.dtype, s.shape.as_list()) for key, s in
            signature.structured_outputs.items()} == {"item_ids": (tf.int64, [None, K]),
                                                      "scores": (tf.float32, [None, K])}


@pytest.mark.parametrize("columnar", [False, True], ids=["instances", "inputs"])
def test_rest_payloads_match_keras(data, exported, columnar):
    """Sets of 2 to 20 items, padded to the longest: longer ones are read from their last
    `max_len` items, and every item of the request is excluded."""
    model, sets, _ = data
    path, _ = exported
    body = rest_request(sets, columnar=columnar, input_name="items")
    assert ('"inputs"' in body) == columnar and '"items"' in body
    got = parse_rest_response(predict_like_tf_serving(path, body))
    assert max(len(s) for s in sets) > MAX_LEN
    assert_same_top_k(got, recommend_from_item_sets(model, sets, k=K))
    for row, items in zip(got["item_ids"], sets):
        assert row.min() >= 2 and not set(row) & set(items)


def test_layouts_repeats_and_order_do_not_change_results(data, exported):
    """Over-padded, unpadded, right-padded, repeated and shuffled requests of the same sets
    (`positional=False`: the order of a set carries nothing)."""
    _, sets, _ = data
    _, loaded = exported
    serve = loaded.signatures["serving_default"]
    small = [s for s in sets if len(s) <= MAX_LEN][:8]
    rows = pad_left(small, MAX_LEN)
    want = serve(items=tf.constant(rows))
    rng = np.random.default_rng(0)
    right = np.array([np.roll(row, -int((row == 0).sum())) for row in rows])
    repeated = np.concatenate([rows, rows[:, ::-1]], axis=1)  # every item twice
    shuffled = pad_left([rng.permutation(s) for s in small], MAX_LEN + 3)
    for variant in (np.pad(rows, [(0, 0), (5, 0)]), right, repeated, shuffled):
        got = serve(items=tf.constant(variant))
        assert_same_top_k({k: v.numpy() for k, v in got.items()},
                          {k: v.numpy() for k, v in want.items()})


def test_short_rows_are_left_padded(data, exported):
    _, sets, _ = data
    _, loaded = exported
    serve = loaded.signatures["serving_default"]
    pairs = [s[-2:] for s in sets[:6]]
    got = serve(items=tf.constant(np.stack(pairs)))
    want = serve(items=tf.constant(pad_left(pairs, MAX_LEN)))
    np.testing.assert_array_equal(got["item_ids"], want["item_ids"])
    np.testing.assert_allclose(got["scores"], want["scores"], rtol=1e-5, atol=1e-5)


def test_out_of_range_ids_read_as_oov_and_never_returned(data, exported):
    _, sets, vocab = data
    _, loaded = exported
    serve = loaded.signatures["serving_default"]
    rows = pad_left(sets[:8], MAX_LEN)
    bad, oov = rows.copy(), rows.copy()
    bad[:, :3] = [10**9, -3, vocab]
    oov[:, :3] = [0, 0, 1]  # three unknown ids are one OOV item: a set holds it once
    got, want = serve(items=tf.constant(bad)), serve(items=tf.constant(oov))
    np.testing.assert_array_equal(got["item_ids"], want["item_ids"])
    assert got["item_ids"].numpy().min() >= 2


def test_positional_model_reads_the_most_recent_items_in_order(data):
    """With positions the order matters: the module reads what `recommend_from_item_sets`
    reads (repeats dropped at their earlier occurrence, most recent `max_len` kept)."""
    _, sets, vocab = data
    model = build_attention_autoencoder(tiny_config(vocab, positional=True))
    module = AutoencoderModule(model, max_k=K)
    histories = [np.concatenate([s, s[:2]]) for s in sets[:8]]  # two items repeated last
    got = module.serve(tf.constant(pad_left(histories, 25)))
    assert_same_top_k({k: v.numpy() for k, v in got.items()},
                      recommend_from_item_sets(model, histories, k=K))
    reordered = module.serve(tf.constant(pad_left([s[::-1] for s in sets[:8]], 25)))
    assert not np.allclose(reordered["scores"], module.serve(
        tf.constant(pad_left(sets[:8], 25)))["scores"])


def test_including_input_items(data):
    model, sets, vocab = data
    module = AutoencoderModule(model, max_k=vocab - 2, exclude_input=False)
    got = module.serve(tf.constant(pad_left(sets, MAX_LEN)))
    logits = model(pad_left(sets, MAX_LEN)).numpy()
    np.testing.assert_array_equal(np.sort(got["item_ids"].numpy(), axis=1),
                                  np.tile(np.arange(2, vocab), (len(sets), 1)))
    ids = got["item_ids"].numpy()
    np.testing.assert_allclose(got["scores"], np.take_along_axis(logits, ids, 1), rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("items, match", [
    (np.zeros(MAX_LEN, np.int64), "tensor items"),
    (np.zeros((1, MAX_LEN), np.float32), "int64"),
])
def test_signature_rejects_bad_input(exported, items, match):
    _, loaded = exported
    with pytest.raises(tf.errors.InvalidArgumentError, match=match):
        loaded.signatures["serving_default"](items=tf.constant(items))


def test_bad_export_arguments_name_the_argument(data, tmp_path):
    model, sets, vocab = data
    for kwargs, match in [
            ({"max_k": 0}, f"max_k must be an int in \\[1, {vocab - 2}\\]"),
            ({"max_k": vocab - 1}, "max_k must be an int in"),
            ({"max_k": True}, "max_k must be an int in"),
            ({"warmup": np.zeros((2, MAX_LEN), np.float32)}, "warmup must be an integer array")]:
        with pytest.raises(ValueError, match=match):
            export_autoencoder(model, tmp_path, **kwargs)
    with pytest.raises(ValueError, match="model must be an attention autoencoder"):
        export_autoencoder(keras.Sequential([keras.layers.Dense(2)]), tmp_path)
    dense = keras.Model(inputs := keras.Input((3,)), keras.layers.Dense(5)(inputs))
    with pytest.raises(ValueError, match="model must be an attention autoencoder"):
        export_autoencoder(dense, tmp_path)  # float input
    with pytest.raises(ValueError, match="strip_pruning"):
        export_autoencoder(prune_model(build_attention_autoencoder(tiny_config(vocab)),
                                       schedule="constant"), tmp_path)
    assert not (tmp_path / "autoencoder").exists() \
        or existing_versions(tmp_path / "autoencoder") == []


def test_second_export_is_the_next_version_and_keep_prunes(data, exported, tmp_path):
    model, sets, _ = data
    shutil.copytree(exported[0], tmp_path / "ae" / "1")  # version 1 (saves a second export)
    path = export_autoencoder(model, tmp_path, "ae", max_k=3, keep=1)
    assert path.name == "2" and existing_versions(tmp_path / "ae") == [2]
    assert json.loads((path / "assets.extra" / "tfrec_attn.json").read_text())["max_k"] == 3


@pytest.mark.slow  # ~8 s: a subprocess importing TensorFlow
def test_saved_model_cli_shows_the_signature(exported):
    path, _ = exported
    cli = shutil.which("saved_model_cli") or str(Path(sys.executable).parent / "saved_model_cli")
    out = subprocess.run([cli, "show", "--dir", str(path), "--all"], capture_output=True,
                         text=True, check=True, env={"TF_USE_LEGACY_KERAS": "1",
                                                     "TF_CPP_MIN_LOG_LEVEL": "3"}).stdout
    block = out.split("signature_def['serving_default']", 1)[1]
    for tensor, dtype, shape in (("inputs['items']", "DT_INT64", "(-1, -1)"),
                                 ("outputs['item_ids']", "DT_INT64", f"(-1, {K})"),
                                 ("outputs['scores']", "DT_FLOAT", f"(-1, {K})")):
        entry = block.split(tensor, 1)[1][:120]
        assert f"dtype: {dtype}" in entry and f"shape: {shape}" in entry, (tensor, entry)


def _fit_one_step(model, sets, vocab, callbacks=()):
    # Eager: one step does not pay for tracing the wrapped train step.
    model.compile(keras.optimizers.Adam(1e-3), loss=multinomial_loss(), run_eagerly=True)
    model.fit(make_item_set_dataset(sets, vocab, MAX_LEN, len(sets)).take(1), epochs=1,
              verbose=0, callbacks=list(callbacks))


def _reload_and_check(model, path, sets):
    """The reloaded SavedModel returns the model's top-k: the Keras logits of the returned
    ids, in order (ids compared through their logits: fake-quantized logits can tie)."""
    feed = pad_left(sets, MAX_LEN)
    got = tf.saved_model.load(str(path)).signatures["serving_default"](items=tf.constant(feed))
    want = recommend_from_item_sets(model, feed, k=K)
    np.testing.assert_allclose(got["scores"], want["scores"], rtol=1e-4, atol=1e-4)
    logits = model(feed, training=False).numpy()
    np.testing.assert_allclose(np.take_along_axis(logits, got["item_ids"].numpy(), 1),
                               got["scores"], rtol=1e-4, atol=1e-4)
    return got


def test_pruned_model_exports_sparse_and_matches_keras(data, tmp_path):
    model, sets, vocab = data
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    pruned = prune_model(copy, target_sparsity=0.5, schedule="constant", frequency=1)
    _fit_one_step(pruned, sets, vocab, pruning_callbacks())
    stripped = strip_pruning(pruned)
    path = export_autoencoder(stripped, tmp_path, max_k=K)
    _reload_and_check(stripped, path, sets)
    loaded = tf.saved_model.load(str(path))
    kernel = [v for v in loaded.model.variables if "decoder/kernel" in v.name][0]
    assert np.mean(kernel.numpy() == 0) == pytest.approx(0.5, abs=0.05)


def test_qat_model_exports_and_matches_keras(data, tmp_path):
    model, sets, vocab = data
    qat = make_qat_model(model)
    _fit_one_step(qat, sets, vocab)
    got = _reload_and_check(qat, export_autoencoder(qat, tmp_path, max_k=K), sets)
    for row, items in zip(got["item_ids"].numpy(), pad_left(sets, MAX_LEN)):
        assert row.min() >= 2 and not set(row) & set(items)


# Measured on these 24 sets (the fixture): float max |score diff| 2e-7 with identical ids;
# int8 top-1 agreement 0.875 (the flips are near-ties), top-4 overlap 0.97, max |score diff|
# 0.024, 2.7% of the scores' spread (0.89). With one Transformer block: top-1 0.875, overlap
# 0.94, 4.4%. The bars leave room for other seeds and platforms.
INT8_MIN_TOP1, INT8_MIN_OVERLAP, INT8_MAX_DIFF = 0.8, 0.85, 0.1


@pytest.fixture(scope="module")
def tflite_file(data, tmp_path_factory):
    """Converts (once per mode for the module) the trained autoencoder to `.tflite`."""
    model, sets, _ = data
    root, files = tmp_path_factory.mktemp("autoencoder_tflite"), {}

    def convert(quantization: str) -> Path:
        if quantization not in files:
            files[quantization] = convert_autoencoder_to_tflite(
                model, root / f"{quantization}.tflite", k=K, quantization=quantization,
                representative_data=pad_left(sets, MAX_LEN))
        return files[quantization]

    return convert


@pytest.mark.parametrize("quantization", ["none", "int8"])
def test_tflite_matches_keras(data, tflite_file, quantization):
    model, sets, _ = data
    path = tflite_file(quantization)
    assert_builtin_only(path)
    runner = LiteRTAutoencoder(path)
    assert (runner.max_len, runner.k) == (MAX_LEN, K)
    feed = pad_left(sets, MAX_LEN)  # the file reads (and excludes) the last max_len items
    got = runner.recommend(feed)  # every row in one call: the batch is dynamic
    want = recommend_from_item_sets(model, feed, k=K)
    assert got["item_ids"].dtype == np.int64 and got["scores"].dtype == np.float32
    if quantization == "none":
        assert_same_top_k(got, want)
        return
    top1 = np.mean(got["item_ids"][:, 0] == want["item_ids"][:, 0])
    overlap = np.mean([len(set(a) & set(b)) / K
                       for a, b in zip(got["item_ids"], want["item_ids"])])
    spread = np.ptp(want["scores"])
    diff = np.abs(got["scores"] - want["scores"]).max() / spread
    assert top1 >= INT8_MIN_TOP1 and overlap >= INT8_MIN_OVERLAP and diff <= INT8_MAX_DIFF, (
        top1, overlap, diff)
    # Where the top-1 differs, the file's choice is a near-tie of Keras' best in Keras' scores.
    logits = model(feed, training=False).numpy()
    regret = want["scores"][:, 0] - np.take_along_axis(logits, got["item_ids"][:, :1], 1)[:, 0]
    assert regret.max() <= INT8_MAX_DIFF * spread, regret.max()
    for row, items in zip(got["item_ids"], feed):
        assert row.min() >= 2 and not set(row) & set(items)


def test_tflite_bad_arguments_and_inputs(data, tflite_file, tmp_path):
    model, sets, vocab = data
    with pytest.raises(ValueError, match="quantization must be one of"):
        convert_autoencoder_to_tflite(model, tmp_path / "a.tflite", quantization="int4")
    with pytest.raises(ValueError, match="representative_data"):
        convert_autoencoder_to_tflite(model, tmp_path / "b.tflite", quantization="int8")
    with pytest.raises(ValueError, match="representative_data must be an int array"):
        convert_autoencoder_to_tflite(model, tmp_path / "c.tflite", quantization="int8",
                                      representative_data=np.zeros((2, MAX_LEN + 1), int))
    with pytest.raises(ValueError, match=r"representative_data must hold item ids in \[0, "):
        convert_autoencoder_to_tflite(model, tmp_path / "c.tflite", quantization="int8",
                                      representative_data=np.full((2, MAX_LEN), -1))
    for k in (vocab, 0):  # named by this function's argument, not the module's `max_k`
        with pytest.raises(ValueError, match=rf"^k must be an int in \[1, \d+\] .* "
                                             rf"Received: k={k}$"):
            convert_autoencoder_to_tflite(model, tmp_path / "d.tflite", k=k)
    assert not list(tmp_path.iterdir())
    runner = LiteRTAutoencoder(tflite_file("none"))
    feed = pad_left(sets, MAX_LEN)
    with pytest.raises(ValueError, match="item_sets must be integer"):
        runner.recommend(feed.astype(np.float32))
    with pytest.raises(ValueError, match=f"item_sets must have length max_len={MAX_LEN}"):
        runner.recommend(feed[:, 1:])
    with pytest.raises(ValueError, match=f"item_sets must be 2-D \\(n, max_len={MAX_LEN}\\)"):
        runner.recommend(feed[0])
    assert runner.recommend(feed[:0])["item_ids"].shape == (0, K)
