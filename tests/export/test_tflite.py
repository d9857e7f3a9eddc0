import numpy as np
import pytest

from tfrec_attn._keras import keras, tf
from tfrec_attn.data import make_training_dataset, pad_left
from tfrec_attn.export import (
    LiteRTRecommender,
    assert_builtin_only,
    convert_ranker_to_tflite,
    convert_to_tflite,
    tflite_ops,
)
from tfrec_attn.export.tflite import QUANTIZATIONS
from tfrec_attn.models import DIN, DINConfig, SASRec, SASRecConfig

MAX_LEN = 12  # the `tiny_sasrec` fixture's max_len
K = 10
QUANTIZED = ("float16", "dynamic", "int8")
MIN_OVERLAP = 0.9  # the bar for quantized variants against the float Keras model


@pytest.fixture(scope="module")
def trained(chain_sequences, tiny_sasrec):
    """A tiny SASRec, a fixed sample of histories and held-out histories for int8 calibration."""
    sequences, _ = chain_sequences
    model = tiny_sasrec
    sample = pad_left([s[:-1] for s in sequences[:64]], MAX_LEN)
    validation = pad_left(sequences[-100:], MAX_LEN)
    return model, sample, validation


@pytest.fixture(scope="module")
def keras_topk(trained):
    model, sample, _ = trained
    outputs = model.topk_model(k=K)(tf.constant(sample))
    return {name: value.numpy() for name, value in outputs.items()}


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """One `.tflite` file per quantization mode, converted once for the module."""
    model, _, validation = trained
    root = tmp_path_factory.mktemp("tflite")
    return {
        mode: convert_to_tflite(model, root / f"{mode}.tflite", k=K, quantization=mode,
                                representative_histories=validation)
        for mode in QUANTIZATIONS
    }


@pytest.fixture(scope="module")
def runners(exported):
    return {mode: LiteRTRecommender(path) for mode, path in exported.items()}


def mean_overlap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([len(set(x) & set(y)) / a.shape[1] for x, y in zip(a, b)]))


@pytest.mark.parametrize("mode", QUANTIZATIONS)
def test_builtin_ops_only(exported, mode):
    assert_builtin_only(exported[mode])
    ops = tflite_ops(exported[mode])
    assert {"TOPK_V2", "FULLY_CONNECTED", "GATHER"} <= ops
    assert not [op for op in ops if op.startswith("Flex")]


@pytest.mark.parametrize("mode", QUANTIZATIONS)
def test_recommend_signature(runners, mode):
    runner = runners[mode]
    assert (runner.max_len, runner.k, runner.dynamic_batch) == (MAX_LEN, K, True)
    out = runner.recommend(np.zeros((3, MAX_LEN), np.int64))
    assert out["item_ids"].dtype == np.int64 and out["item_ids"].shape == (3, K)
    assert out["scores"].dtype == np.float32 and out["scores"].shape == (3, K)


def test_float32_matches_keras(trained, keras_topk, runners):
    _, sample, _ = trained
    got = runners["none"].recommend(sample)
    np.testing.assert_array_equal(got["item_ids"], keras_topk["item_ids"])
    np.testing.assert_allclose(got["scores"], keras_topk["scores"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", QUANTIZED)
def test_quantized_top_k_overlaps_keras(trained, keras_topk, runners, mode):
    _, sample, _ = trained
    overlap = mean_overlap(runners[mode].recommend(sample)["item_ids"], keras_topk["item_ids"])
    assert overlap >= MIN_OVERLAP, (
        f"{mode}: mean top-{K} overlap with Keras is {overlap:.3f} < {MIN_OVERLAP} "
        f"on {len(sample)} histories")


@pytest.mark.parametrize("mode", QUANTIZATIONS)
def test_batch_of_one_matches_batch(trained, runners, mode):
    _, sample, _ = trained
    runner = runners[mode]
    batch = runner.recommend(sample[:8])
    for i, row in enumerate(sample[:8]):
        one = runner.recommend(row[None])
        np.testing.assert_array_equal(one["item_ids"][0], batch["item_ids"][i])
        np.testing.assert_allclose(one["scores"][0], batch["scores"][i], rtol=1e-5, atol=1e-6)


def test_fixed_batch_files_run_row_by_row(trained, exported, runners):
    _, sample, _ = trained
    runner = LiteRTRecommender(exported["none"])
    runner.dynamic_batch = False  # what a file with a static batch of one gets
    want = runners["none"].recommend(sample[:5])
    np.testing.assert_array_equal(runner.recommend(sample[:5])["item_ids"], want["item_ids"])


@pytest.mark.parametrize("mode", QUANTIZATIONS)
def test_history_items_never_returned(trained, runners, mode):
    _, sample, _ = trained
    for row, history in zip(runners[mode].recommend(sample)["item_ids"], sample):
        assert not set(row) & set(history[history > 0])
        assert row.min() >= 2  # never padding (0) or OOV (1)


def test_out_of_range_ids_map_to_oov(trained, runners):
    _, sample, _ = trained
    runner = runners["none"]
    bad, oov = sample.copy(), sample.copy()
    bad[:, 0], bad[:, 1] = 10**9, -5
    oov[:, 0] = oov[:, 1] = 1
    np.testing.assert_array_equal(runner.recommend(bad)["item_ids"],
                                  runner.recommend(oov)["item_ids"])


def test_empty_batch(runners):
    out = runners["none"].recommend(np.zeros((0, MAX_LEN), np.int64))
    assert out["item_ids"].shape == out["scores"].shape == (0, K)


@pytest.mark.parametrize("histories, match", [
    (np.zeros(MAX_LEN, np.int64), "2-D"),
    (np.zeros((2, MAX_LEN + 1), np.int64), f"max_len={MAX_LEN}"),
    (np.zeros((2, MAX_LEN), np.float32), "integer"),
])
def test_runner_rejects_bad_input(runners, histories, match):
    with pytest.raises(ValueError, match=match):
        runners["none"].recommend(histories)


def test_converts_functional_topk_model(trained, keras_topk, tmp_path):
    model, sample, _ = trained
    path = convert_to_tflite(model.topk_model(k=5), tmp_path / "top5.tflite")
    runner = LiteRTRecommender(path)
    assert (runner.k, runner.max_len) == (5, MAX_LEN)
    np.testing.assert_array_equal(runner.recommend(sample)["item_ids"],
                                  keras_topk["item_ids"][:, :5])


def test_int8_without_representative_data_raises(trained, tmp_path):
    model, _, _ = trained
    with pytest.raises(ValueError, match="representative_histories"):
        convert_to_tflite(model, tmp_path / "m.tflite", quantization="int8")
    assert not (tmp_path / "m.tflite").exists()


@pytest.mark.parametrize("value", [999, 202, -1])  # the tiny SASRec's vocab_size is 202
def test_int8_calibration_ids_outside_the_vocabulary_are_refused(trained, value, tmp_path):
    """Such histories read as all-OOV in the file: the int8 ranges would fit nothing real."""
    model, _, validation = trained
    histories = validation.copy()
    histories[2, 5] = value
    pattern = (r"representative_histories must hold item ids in \[0, vocab_size\) = "
               rf"\[0, 202\)\. Received: {value} at index \(2, 5\)")
    with pytest.raises(ValueError, match=pattern):
        convert_to_tflite(model, tmp_path / "h.tflite", k=5, quantization="int8",
                          representative_histories=histories)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("kind", ["sasrec", "din"])
def test_int8_conversion_hides_tfs_interpreter_deprecation_warning(kind, trained, tmp_path,
                                                                   recwarn):
    """TF's int8 calibrator builds a `tf.lite.Interpreter`, which warns on every conversion
    that it is deprecated; `convert_module` silences exactly that warning (`recwarn` records
    every warning, whatever the suite's filters)."""
    if kind == "sasrec":
        model, _, validation = trained
        path = convert_to_tflite(model, tmp_path / "m.tflite", k=K, quantization="int8",
                                 representative_histories=validation[:8])
    else:
        din = DIN(DINConfig(vocab_size=9, max_len=3, dim=4, mlp_units=(4,)))
        data = {"history": np.array([[0, 2, 3]] * 4), "candidates": np.array([[4, 5]] * 4)}
        path = convert_ranker_to_tflite(din, tmp_path / "m.tflite", 2, quantization="int8",
                                        representative_data=data)
    assert path.stat().st_size > 0
    messages = [str(w.message) for w in recwarn]
    assert not [m for m in messages if "tf.lite.Interpreter is deprecated" in m], messages



@pytest.mark.parametrize("attention, options", [("local", {"window": 4}),
                                                ("low_rank", {"projection_length": 2}),
                                                ("linear", {}),
                                                ("top_k", {"k": 4})])
def test_int8_of_efficient_attention_overlaps_keras(attention, options, chain_sequences,
                                                    tmp_path):
    """`local` and `low_rank`: their 5-D block tensors (3 blocks of 4 over max_len 12) once
    aborted TF 2.20's int8 calibrator (a broadcasting LOGICAL_AND above rank 4 in
    `masking.masked_softmax`). `linear`: its normalization was an int8 DIV whose divisor
    rounded to the zero point on padded rows, so the file aborted at its first inference."""
    sequences, vocab = chain_sequences
    keras.utils.set_random_seed(0)
    model = SASRec(SASRecConfig(vocab_size=vocab, max_len=MAX_LEN, dim=16, num_blocks=1,
                                attention=attention, attention_options=options))
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(make_training_dataset([s[:-1] for s in sequences], MAX_LEN, 128), epochs=1,
              verbose=0)
    sample = pad_left([s[:-1] for s in sequences[:64]], MAX_LEN)
    path = convert_to_tflite(model, tmp_path / f"{attention}.tflite", k=K, quantization="int8",
                             representative_histories=pad_left(sequences[-100:], MAX_LEN))
    assert_builtin_only(path)
    want = model.topk_model(k=K)(tf.constant(sample))["item_ids"].numpy()
    overlap = mean_overlap(LiteRTRecommender(path).recommend(sample)["item_ids"], want)
    assert overlap >= MIN_OVERLAP, f"{attention}: mean top-{K} overlap {overlap:.3f}"


def test_unknown_quantization_raises(trained, tmp_path):
    with pytest.raises(ValueError, match="quantization must be one of"):
        convert_to_tflite(trained[0], tmp_path / "m.tflite", quantization="int4")


def test_assert_builtin_only_lists_flex_ops(tmp_path):
    @tf.function(input_signature=[tf.TensorSpec([4], tf.float32)])
    def cumprod(x):
        return tf.math.cumprod(x)  # no builtin kernel: converts only as a Flex op

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [cumprod.get_concrete_function()], cumprod)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS,
                                           tf.lite.OpsSet.SELECT_TF_OPS]
    path = tmp_path / "flex.tflite"
    path.write_bytes(converter.convert())
    assert "FlexCumprod" in tflite_ops(path)
    with pytest.raises(ValueError, match="FlexCumprod"):
        assert_builtin_only(path)
