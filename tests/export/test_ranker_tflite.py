"""`convert_ranker_to_tflite` / `LiteRTRanker` refusals: calibration ids outside the vocabulary,
histories of the wrong length, and files of the other kind (a ranker file opened by
`LiteRTRecommender`, a top-k file by `LiteRTRanker`). Scores against Keras:
tests/export/test_ranker_export.py."""

import numpy as np
import pytest

from tfrec_attn.export import (
    LiteRTRanker,
    LiteRTRecommender,
    convert_ranker_to_tflite,
    convert_to_tflite,
)
from tfrec_attn.models import DIN, DINConfig, SASRec, SASRecConfig

VOCAB, MAX_LEN, C = 32, 20, 5


@pytest.fixture(scope="module")
def din():
    return DIN(DINConfig(vocab_size=VOCAB, max_len=MAX_LEN, dim=4, attention_units=(4,),
                         mlp_units=(4,)))


@pytest.fixture(scope="module")
def files(din, tmp_path_factory):
    """A float ranker file and a float top-k (SASRec) file, converted once for the module."""
    root = tmp_path_factory.mktemp("kinds")
    sasrec = SASRec(SASRecConfig(vocab_size=VOCAB, max_len=MAX_LEN, dim=8, num_blocks=1))
    return {"ranker": convert_ranker_to_tflite(din, root / "ranker.tflite", C),
            "topk": convert_to_tflite(sasrec, root / "topk.tflite", k=5)}


def _requests(n: int = 8) -> dict:
    rng = np.random.default_rng(0)
    return {"history": rng.integers(0, VOCAB, (n, MAX_LEN)),
            "candidates": rng.integers(2, VOCAB, (n, C))}


@pytest.mark.parametrize("key, value", [("candidates", 500), ("candidates", VOCAB),
                                        ("history", 999), ("history", -1)])
def test_int8_calibration_ids_outside_the_vocabulary_are_refused(din, key, value, tmp_path):
    """Such rows all read as OOV in the file, so the int8 ranges would fit nothing real."""
    data = _requests()
    data[key][3, 1] = value
    pattern = (rf"representative_data\['{key}'\] must hold item ids in \[0, vocab_size\) = "
               rf"\[0, {VOCAB}\)\. Received: {value} at index \(3, 1\)")
    with pytest.raises(ValueError, match=pattern):
        convert_ranker_to_tflite(din, tmp_path / "e.tflite", num_candidates=C,
                                 quantization="int8", representative_data=data)
    assert not list(tmp_path.iterdir())


def test_int8_calibration_ids_must_be_integers(din, tmp_path):
    data = _requests()
    data["candidates"] = data["candidates"].astype(np.float32)
    with pytest.raises(ValueError, match=r"representative_data\['candidates'\] must hold "
                                         "integer item ids. Received dtype float32"):
        convert_ranker_to_tflite(din, tmp_path / "e.tflite", C, quantization="int8",
                                 representative_data=data)


@pytest.mark.parametrize("length", [5, MAX_LEN + 1])
def test_history_of_another_length_says_to_left_pad(files, length):
    runner, data = LiteRTRanker(files["ranker"]), _requests(2)
    history = np.zeros((2, length), np.int64)
    message = (rf"history must have length max_len={MAX_LEN} \(left-pad with 0, see "
               rf"tfrec_attn.data.pad_left\). Received shape \(2, {length}\)")
    with pytest.raises(ValueError, match=message):
        runner.score(history, data["candidates"])
    with pytest.raises(ValueError, match=rf"history must be 2-D \(n, max_len={MAX_LEN}\); use "
                                         r"history\[None\] for one row"):
        runner.score(data["history"][0], data["candidates"])


@pytest.mark.parametrize("runner, kind, what, signature, other, use", [
    (LiteRTRanker, "topk", "a ranker file (convert_ranker_to_tflite)", "score", "recommend",
     "LiteRTRecommender"),
    (LiteRTRecommender, "ranker", "a top-k recommender file (convert_to_tflite)", "recommend",
     "score", "LiteRTRanker"),
])
def test_a_file_of_the_other_kind_is_named(files, runner, kind, what, signature, other, use):
    path = files[kind]
    message = (f"{path} is not {what}: it has no '{signature}' signature (its signatures: "
               f"['{other}']); open it with {use}.")
    with pytest.raises(ValueError) as error:
        runner(path)
    assert str(error.value) == message
