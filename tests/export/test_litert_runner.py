"""The LiteRT runners of the three `recommend` files (SASRec top-k, policy, autoencoder): each
opens its own file, and names the file's kind and its runner when given another's (policy and
autoencoder files used to fail with a bare KeyError on the input name)."""

import numpy as np
import pytest

from tfrec_attn._keras import keras
from tfrec_attn.export import (
    LiteRTAutoencoder,
    LiteRTPolicy,
    LiteRTRecommender,
    convert_autoencoder_to_tflite,
    convert_policy_to_tflite,
    convert_to_tflite,
)
from tfrec_attn.models import (
    AttentionAutoencoderConfig,
    AttentionPolicy,
    AttentionPolicyConfig,
    SASRec,
    SASRecConfig,
    build_attention_autoencoder,
)

VOCAB, MAX_LEN, K = 12, 4, 3

# runner, what its file is, what the runner's file takes and returns
RUNNERS = {
    "topk": (LiteRTRecommender, "a top-k recommender file (convert_to_tflite)",
             "['history'] and returns ['item_ids', 'scores']"),
    "policy": (LiteRTPolicy, "a policy file (convert_policy_to_tflite)",
               "['history'] and returns ['item_ids', 'probabilities']"),
    "autoencoder": (LiteRTAutoencoder, "an autoencoder file (convert_autoencoder_to_tflite)",
                    "['items'] and returns ['item_ids', 'scores']"),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One small (untrained) float file of each kind."""
    root = tmp_path_factory.mktemp("litert_runner")
    keras.utils.set_random_seed(0)
    sasrec = SASRec(SASRecConfig(vocab_size=VOCAB, max_len=MAX_LEN, dim=8, num_blocks=1))
    policy = AttentionPolicy(AttentionPolicyConfig(vocab_size=VOCAB, max_len=MAX_LEN, dim=8))
    autoencoder = build_attention_autoencoder(
        AttentionAutoencoderConfig(VOCAB, max_len=MAX_LEN, dim=8, num_blocks=0))
    return {"topk": convert_to_tflite(sasrec, root / "topk.tflite", k=K),
            "policy": convert_policy_to_tflite(policy, root / "policy.tflite", k=K),
            "autoencoder": convert_autoencoder_to_tflite(autoencoder, root / "ae.tflite", k=K)}


@pytest.mark.parametrize("kind", RUNNERS)
def test_each_runner_reads_its_own_file(files, kind):
    runner = RUNNERS[kind][0](files[kind])
    out = runner.recommend(np.array([[0, 2, 3, 4]]))
    assert set(out) == set(runner.output_names) and out["item_ids"].shape == (1, K)


@pytest.mark.parametrize("kind, other", [
    (kind, other) for kind in RUNNERS for other in RUNNERS if kind != other])
def test_a_file_of_another_kind_is_named_with_its_runner(files, kind, other):
    runner, what, _ = RUNNERS[kind]
    other_runner, _, layout = RUNNERS[other]
    path = files[other]
    message = (f"{path} is not {what}: its 'recommend' signature takes {layout}; open it with "
               f"{other_runner.__name__}.")
    with pytest.raises(ValueError) as error:
        runner(path)
    assert str(error.value) == message
