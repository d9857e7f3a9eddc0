"""The DIN ranker's serving contract: SavedModel signatures on TF Serving's REST payloads,
`saved_model_cli`, versioning, OOV/padding, bad input, pruned and QAT towers, and TFLite through
LiteRT (float, dynamic-range, int8)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter
from scipy.stats import spearmanr

from tfrec_attn._keras import keras, tf
from tfrec_attn.data import pad_left
from tfrec_attn.data.ranking_examples import make_ranking_dataset
from tfrec_attn.export import (
    LiteRTRanker,
    RankerModule,
    assert_builtin_only,
    convert_ranker_to_tflite,
    existing_versions,
    export_ranker,
)
from tfrec_attn.export.ranker_tflite import RANKER_SIGNATURE
from tfrec_attn.export.serving import parse_rest_response, rest_request
from tfrec_attn.models import DIN, DINConfig, build_din_tower
from tfrec_attn.optimization import make_qat_model, prune_model, pruning_callbacks, strip_pruning
from tfrec_attn.testing.serving import predict_like_tf_serving

MAX_LEN, C, MAX_K = 8, 6, 4
TINY = {"max_len": MAX_LEN, "dim": 8, "attention_units": (8, 4), "mlp_units": (16,)}


@pytest.fixture(scope="module")
def data(chain_sequences):
    """A DIN trained one epoch on the chain data, and 48 ranking requests: each history's true
    next item among C - 1 random candidates."""
    sequences, vocab = chain_sequences
    keras.utils.set_random_seed(0)
    din = DIN(DINConfig(vocab_size=vocab, **TINY))
    din.compile(optimizer=keras.optimizers.Adam(1e-2))
    din.fit(make_ranking_dataset([s[:-1] for s in sequences], MAX_LEN, vocab, batch_size=256),
            epochs=1, verbose=0)
    rng = np.random.default_rng(1)
    history = pad_left([s[:-1] for s in sequences[:48]], MAX_LEN)
    candidates = np.concatenate([np.array([[s[-1]] for s in sequences[:48]]),
                                 rng.integers(2, vocab, (48, C - 1))], axis=1)
    return din, history, candidates


def keras_scores(tower, history, candidates) -> np.ndarray:
    """The tower's logits, one `(history, candidate)` pair at a time: `(n, C)`."""
    return np.stack([tower({"history": history, "candidate": candidates[:, j]},
                           training=False).numpy()[:, 0]
                     for j in range(candidates.shape[1])], axis=1)


@pytest.fixture(scope="module")
def exported(data, tmp_path_factory):
    din, history, candidates = data
    root = tmp_path_factory.mktemp("ranker")
    path = export_ranker(din, root, max_k=MAX_K, metadata={"run": "test"},
                         warmup={"history": history[:5], "candidates": candidates[:5]})
    return path, tf.saved_model.load(str(path))


def test_layout_metadata_and_warmup(data, exported):
    din, history, candidates = data
    path, _ = exported
    assert path.parts[-2:] == ("din", "1") and (path / "saved_model.pb").exists()
    info = json.loads((path / "assets.extra" / "tfrec_attn.json").read_text())
    assert info["config"] == json.loads(json.dumps(din.config.to_dict()))
    assert (info["max_len"], info["vocab_size"], info["max_k"]) == (MAX_LEN, 202, MAX_K)
    assert info["signatures"] == ["rank", "serving_default"] and info["run"] == "test"
    from tensorflow_serving.apis import prediction_log_pb2

    records = list(tf.data.TFRecordDataset(
        str(path / "assets.extra" / "tf_serving_warmup_requests")).as_numpy_iterator())
    assert len(records) == 5
    request = prediction_log_pb2.PredictionLog.FromString(records[1]).predict_log.request
    np.testing.assert_array_equal(tf.make_ndarray(request.inputs["candidates"]), candidates[1:2])
    np.testing.assert_array_equal(tf.make_ndarray(request.inputs["history"]), history[1:2])


@pytest.mark.parametrize("signature, columnar", [
    ("serving_default", False), ("rank", True)], ids=["instances", "inputs"])
def test_rest_payloads_match_keras_tower(data, exported, signature, columnar):
    din, history, candidates = data
    path, _ = exported
    body = rest_request(history, signature_name=signature, columnar=columnar,
                        candidates=candidates)
    assert ('"inputs"' in body) == columnar and '"candidates"' in body
    got = parse_rest_response(predict_like_tf_serving(path, body), output_name="scores")
    want = keras_scores(din.tower, history, candidates)
    if signature == "serving_default":
        np.testing.assert_allclose(got["scores"], want, rtol=1e-5, atol=1e-5)
        return
    order = np.argsort(-want, axis=1, kind="stable")[:, :MAX_K]
    np.testing.assert_array_equal(got["item_ids"], np.take_along_axis(candidates, order, 1))
    np.testing.assert_allclose(got["scores"], np.take_along_axis(want, order, 1), rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("count", [1, 3, MAX_K + 5])
def test_candidate_count_varies_per_request(data, exported, count):
    din, history, _ = data
    _, loaded = exported
    candidates = np.tile(np.arange(2, 2 + count), (4, 1))
    rank = loaded.signatures["rank"](history=tf.constant(history[:4]),
                                     candidates=tf.constant(candidates))
    assert rank["item_ids"].shape == (4, min(MAX_K, count))
    scores = loaded.signatures["serving_default"](history=tf.constant(history[:4]),
                                                  candidates=tf.constant(candidates))["scores"]
    np.testing.assert_allclose(scores, keras_scores(din.tower, history[:4], candidates),
                               rtol=1e-5, atol=1e-5)


def test_padding_candidates_never_outrank_real_ones(data, exported):
    _, history, candidates = data
    _, loaded = exported
    padded = candidates.copy()
    padded[:, 2:] = 0  # two real candidates a row, the rest padding
    out = loaded.signatures["rank"](history=tf.constant(history), candidates=tf.constant(padded))
    ids, scores = out["item_ids"].numpy(), out["scores"].numpy()
    assert (ids[:, :2] > 0).all() and (ids[:, 2:] == 0).all()
    assert (scores[:, 2:] < scores[:, 1:2]).all()


@pytest.mark.parametrize("others", [
    [999, -5, 0],   # the walkthrough's request: 999 and -5 used to rank first
    [-1, 202, 1],   # 202 == vocab_size: just outside
    [10**12, 1],    # OOV (1), which a client maps unknown items to, used to rank first
], ids=["walkthrough", "vocab_edge", "oov"])
def test_unknown_candidates_rank_last_and_come_back_as_sent(data, exported, others):
    """Candidates the model does not know (padding, OOV, ids the vocabulary cannot hold)
    rank after every known one with a lower score, and come back unchanged. The known
    candidate is each row's worst item, below the OOV logit they used to be scored with."""
    _, history, _ = data
    _, loaded = exported
    rows = tf.constant(history[:4])
    serve, rank = loaded.signatures["serving_default"], loaded.signatures["rank"]
    every = serve(history=rows, candidates=tf.constant(np.tile(np.arange(1, 202), (4, 1))))
    every = every["scores"].numpy()
    assert (every[:, 0] > every[:, 1:].min(1)).all()  # OOV outscores the worst item
    candidates = np.array([[2 + np.argmin(row[1:]), *others] for row in every], np.int64)
    out = rank(history=rows, candidates=tf.constant(candidates))
    logits = serve(history=rows, candidates=tf.constant(candidates))["scores"].numpy()
    for ids, scores, row, row_logits in zip(out["item_ids"].numpy(), out["scores"].numpy(),
                                            candidates, logits):
        real = (row > 1) & (row < 202)
        order = np.argsort(-row_logits[real], kind="stable")
        np.testing.assert_array_equal(ids[:real.sum()], row[real][order])
        assert sorted(ids[real.sum():]) == sorted(row[~real])  # as sent
        assert (scores[real.sum():] < scores[real.sum() - 1]).all()


def test_history_padding_and_length_are_masked(data, exported):
    """Shorter rows are left-padded, longer rows cut to the last max_len: same scores as the
    padded request."""
    _, history, candidates = data
    _, loaded = exported
    serve = loaded.signatures["serving_default"]
    rows = history[(history > 0).sum(1) <= 5][:6]  # rows with at most 5 real items
    want = serve(history=tf.constant(rows), candidates=tf.constant(candidates[:len(rows)]))
    for variant in (rows[:, -5:], np.pad(rows, [(0, 0), (7, 0)])):
        got = serve(history=tf.constant(variant), candidates=tf.constant(candidates[:len(rows)]))
        np.testing.assert_allclose(got["scores"], want["scores"], rtol=1e-6, atol=1e-6)


def test_out_of_range_ids_score_as_oov(exported, data):
    _, history, candidates = data
    _, loaded = exported
    serve = loaded.signatures["serving_default"]
    bad_h, oov_h = history.copy(), history.copy()
    bad_c, oov_c = candidates.copy(), candidates.copy()
    bad_h[:, -1], bad_c[:, 0], bad_c[:, 1] = 10**9, -3, 202
    oov_h[:, -1], oov_c[:, :2] = 1, 1
    got = serve(history=tf.constant(bad_h), candidates=tf.constant(bad_c))["scores"]
    want = serve(history=tf.constant(oov_h), candidates=tf.constant(oov_c))["scores"]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    rank = loaded.signatures["rank"](history=tf.constant(bad_h), candidates=tf.constant(bad_c))
    assert set(rank["item_ids"].numpy().ravel()) <= set(bad_c.ravel())  # ids as sent


@pytest.mark.parametrize("history, candidates, match", [
    (np.zeros(MAX_LEN, np.int64), np.zeros((1, C), np.int64), "tensor history"),
    (np.zeros((1, MAX_LEN), np.int64), np.zeros(C, np.int64), "tensor candidates"),
    (np.zeros((2, MAX_LEN), np.int64), np.zeros((3, C), np.int64), "same batch size"),
    (np.zeros((1, MAX_LEN), np.float32), np.zeros((1, C), np.int64), "int64"),
])
def test_signature_rejects_bad_input(exported, history, candidates, match):
    _, loaded = exported
    with pytest.raises(tf.errors.InvalidArgumentError, match=match):
        loaded.signatures["rank"](history=tf.constant(history),
                                  candidates=tf.constant(candidates))


def test_bad_export_arguments_name_the_argument(data, tmp_path):
    din, history, _ = data
    with pytest.raises(ValueError, match="max_k must be a positive int"):
        RankerModule(din, max_k=0)
    with pytest.raises(ValueError, match="model_or_tower must be a DIN"):
        export_ranker(keras.Sequential([keras.layers.Dense(1)]), tmp_path)
    with pytest.raises(ValueError, match="warmup must be a dict"):
        export_ranker(din, tmp_path, warmup=history)
    floats = {"history": history.astype(np.float32), "candidates": np.full((len(history), 2), 2)}
    with pytest.raises(ValueError, match=r"warmup\['history'\] must be an integer array"):
        export_ranker(din, tmp_path, warmup=floats)  # used to be cast to int silently
    floats = {"history": history, "candidates": np.full((len(history), 2), 2.5)}
    with pytest.raises(ValueError, match=r"warmup\['candidates'\] must be an integer array"):
        export_ranker(din, tmp_path, warmup=floats)
    for name in ("a/b", "../escaped", ""):
        with pytest.raises(ValueError, match="name must be one directory name"):
            export_ranker(din, tmp_path / "models", name)
    assert not (tmp_path / "models").exists() and not (tmp_path / "escaped").exists()
    tiny = build_din_tower(DINConfig(vocab_size=20, max_len=4, dim=4, mlp_units=(4,)))
    with pytest.raises(ValueError, match="strip_pruning"):
        RankerModule(prune_model(tiny, target_sparsity=0.5, schedule="constant"))
    assert not (tmp_path / "din").exists() or existing_versions(tmp_path / "din") == []


def test_signature_specs(exported):
    """The dtypes and shapes TF Serving reads (the slow test below checks saved_model_cli)."""
    _, loaded = exported
    for name, outputs in (("serving_default", {"scores": tf.float32}),
                          ("rank", {"item_ids": tf.int64, "scores": tf.float32})):
        signature = loaded.signatures[name]
        specs = signature.structured_input_signature[1]
        assert {key: (spec.dtype, spec.shape.as_list()) for key, spec in specs.items()} == {
            "history": (tf.int64, [None, None]), "candidates": (tf.int64, [None, None])}
        assert {key: (spec.dtype, spec.shape.as_list())
                for key, spec in signature.structured_outputs.items()} == {
            key: (dtype, [None, None]) for key, dtype in outputs.items()}


@pytest.mark.slow  # ~8 s: a subprocess importing TensorFlow
def test_saved_model_cli_shows_signatures(exported):
    path, _ = exported
    cli = shutil.which("saved_model_cli") or str(Path(sys.executable).parent / "saved_model_cli")
    out = subprocess.run([cli, "show", "--dir", str(path), "--all"], capture_output=True,
                         text=True, check=True, env={"TF_USE_LEGACY_KERAS": "1",
                                                     "TF_CPP_MIN_LOG_LEVEL": "3"}).stdout
    blocks = {name: text for name, text in
              (part.split("']", 1) for part in out.split("signature_def['")[1:])}
    assert {"serving_default", "rank"} <= set(blocks)
    for name in ("serving_default", "rank"):
        for tensor in ("inputs['history']", "inputs['candidates']"):
            entry = blocks[name].split(tensor, 1)[1][:120]
            assert "dtype: DT_INT64" in entry and "shape: (-1, -1)" in entry, (name, entry)
    scores = blocks["serving_default"].split("outputs['scores']", 1)[1][:120]
    assert "dtype: DT_FLOAT" in scores and "shape: (-1, -1)" in scores
    ranked = blocks["rank"].split("outputs['item_ids']", 1)[1][:120]
    assert "dtype: DT_INT64" in ranked and "shape: (-1, -1)" in ranked


def test_versions_keep_and_atomic_write(tmp_path, monkeypatch):
    tower = build_din_tower(DINConfig(vocab_size=20, max_len=4, dim=4, attention_units=(4,),
                                      mlp_units=(4,)))
    assert export_ranker(tower, tmp_path, "m").name == "1"
    real_save = tf.saved_model.save

    def save_aside(obj, export_dir, **kwargs):
        real_save(obj, export_dir, **kwargs)
        assert existing_versions(tmp_path / "m") == [1]  # written aside, not yet version 2

    monkeypatch.setattr(tf.saved_model, "save", save_aside)
    assert export_ranker(tower, tmp_path, "m", keep=1).name == "2"
    assert existing_versions(tmp_path / "m") == [2]

    def crash(obj, export_dir, **kwargs):
        (Path(export_dir) / "saved_model.pb").write_bytes(b"half")  # a partial write...
        raise OSError("disk full")                                   # ...then the writer dies

    monkeypatch.setattr(tf.saved_model, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        export_ranker(tower, tmp_path, "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["2"]


def _copy(tower: keras.Model) -> keras.Model:
    """A copy with its own weights (pruning wraps, and then trains, the layers it is given)."""
    copy = keras.models.clone_model(tower)
    copy.set_weights(tower.get_weights())
    return copy


def _fit_one_step(model, history, candidates):
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.BinaryCrossentropy(from_logits=True), run_eagerly=True)
    labels = (np.arange(len(history)) % 2).astype(np.float32)[:, None]
    return {"x": {"history": history, "candidate": candidates[:, 0]}, "y": labels,
            "batch_size": len(history), "epochs": 1, "verbose": 0}


@pytest.mark.slow  # ~6 s (prune, one step, strip, export); a stripped tower is a plain tower
def test_pruned_tower_exports_sparse_and_matches_keras(data, tmp_path):
    din, history, candidates = data
    pruned = prune_model(_copy(din.tower), target_sparsity=0.5, schedule="constant",
                         frequency=1)
    fit = _fit_one_step(pruned, history, candidates)
    pruned.fit(**fit, callbacks=pruning_callbacks())
    stripped = strip_pruning(pruned)
    path = export_ranker(stripped, tmp_path, metadata={"config": din.config.to_dict()})
    loaded = tf.saved_model.load(str(path))
    got = loaded.signatures["serving_default"](history=tf.constant(history),
                                               candidates=tf.constant(candidates))["scores"]
    np.testing.assert_allclose(got, keras_scores(stripped, history, candidates), rtol=1e-5,
                               atol=1e-5)
    kernel = [v for v in loaded.tower.variables if "mlp_0/kernel" in v.name][0]
    assert np.mean(kernel.numpy() == 0) == pytest.approx(0.5, abs=0.05)
    assert json.loads((path / "assets.extra" / "tfrec_attn.json").read_text())["config"]


def test_qat_tower_exports_and_matches_keras(data, tmp_path):
    din, history, candidates = data
    qat = make_qat_model(din.tower)
    qat.fit(**_fit_one_step(qat, history, candidates))
    loaded = tf.saved_model.load(str(export_ranker(qat, tmp_path, max_k=2)))
    got = loaded.signatures["serving_default"](history=tf.constant(history),
                                               candidates=tf.constant(candidates))["scores"]
    np.testing.assert_allclose(got, keras_scores(qat, history, candidates), rtol=1e-4, atol=1e-4)
    ranked = loaded.signatures["rank"](history=tf.constant(history),
                                       candidates=tf.constant(candidates))["item_ids"]
    assert ranked.shape == (len(history), 2)


# Measured on these 48 requests: float max |diff| 2e-7; dynamic 9e-3; int8 1.7e-2 with top-1
# agreement 1.0 and mean Spearman 0.999. The bars leave room for other seeds and platforms.
TFLITE_BARS = {"none": (1.0, 0.999), "dynamic": (0.9, 0.95), "int8": (0.9, 0.95)}


@pytest.fixture(scope="module")
def tflite_file(data, tmp_path_factory):
    """Converts (once per mode for the module) the trained DIN's ranker to `.tflite`."""
    din, history, candidates = data
    root, files = tmp_path_factory.mktemp("ranker_tflite"), {}

    def convert(quantization: str) -> Path:
        if quantization not in files:
            calibration = {"history": history[24:], "candidates": candidates[::-1][:24]}
            files[quantization] = convert_ranker_to_tflite(
                din, root / f"{quantization}.tflite", num_candidates=C,
                quantization=quantization, representative_data=calibration)
        return files[quantization]

    return convert


@pytest.mark.parametrize("quantization", [
    "none", pytest.param("dynamic", marks=pytest.mark.slow), "int8"])
def test_tflite_ranker_matches_keras(data, tflite_file, quantization):
    din, history, candidates = data
    path = tflite_file(quantization)
    assert_builtin_only(path)
    runner = Interpreter(model_path=str(path)).get_signature_runner(RANKER_SIGNATURE)
    got = runner(history=history, candidates=candidates)["scores"]
    want = keras_scores(din.tower, history, candidates)
    assert got.shape == want.shape and got.dtype == np.float32
    if quantization == "none":
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    top1 = np.mean(got.argmax(1) == want.argmax(1))
    spearman = np.mean([spearmanr(a, b).statistic for a, b in zip(got, want)])
    min_top1, min_spearman = TFLITE_BARS[quantization]
    assert top1 >= min_top1 and spearman >= min_spearman, (quantization, top1, spearman)
    np.testing.assert_allclose(LiteRTRanker(path).score(history, candidates), got)


def test_tflite_bad_arguments_and_inputs(data, tflite_file, tmp_path):
    din, history, candidates = data
    with pytest.raises(ValueError, match="num_candidates must be a positive int"):
        convert_ranker_to_tflite(din, tmp_path / "a.tflite", num_candidates=0)
    with pytest.raises(ValueError, match="representative_data"):
        convert_ranker_to_tflite(din, tmp_path / "b.tflite", C, quantization="int8")
    with pytest.raises(ValueError, match="quantization must be one of"):
        convert_ranker_to_tflite(din, tmp_path / "c.tflite", C, quantization="int4")
    assert not list(tmp_path.iterdir())
    runner = LiteRTRanker(tflite_file("none"))
    assert (runner.max_len, runner.num_candidates) == (MAX_LEN, C)
    with pytest.raises(ValueError, match="history must be integer"):
        runner.score(history.astype(np.float32), candidates)
    with pytest.raises(ValueError, match=f"candidates must have num_candidates={C} columns"):
        runner.score(history, candidates[:, :2])
    with pytest.raises(ValueError, match="same number of rows"):
        runner.score(history[:2], candidates[:3])
    assert runner.score(history[:0], candidates[:0]).shape == (0, C)
