"""Shared fixtures: small deterministic data for model, export and pipeline tests."""

import numpy as np
import pytest

import tfrec_attn  # noqa: F401  (guarantees Keras 2 before anything imports TensorFlow)
from tfrec_attn._keras import keras
from tfrec_attn.data import make_training_dataset
from tfrec_attn.models import SASRec, SASRecConfig

TINY_MAX_LEN = 12


@pytest.fixture(autouse=True)
def _deterministic():
    """Seeds Python, NumPy and TensorFlow, and restores the global dtype policy afterwards."""
    keras.utils.set_random_seed(0)
    policy = keras.mixed_precision.global_policy()
    yield
    keras.mixed_precision.set_global_policy(policy)

ML100K = "../shared/data/ml-100k"


@pytest.fixture(scope="session")
def chain_sequences():
    """Sequences over 200 items where each item is followed by its successor 80% of the time."""
    rng = np.random.default_rng(0)
    vocab = 202
    successor = rng.integers(2, vocab, size=vocab)
    sequences = []
    for _ in range(400):
        seq = [int(rng.integers(2, vocab))]
        for _ in range(int(rng.integers(4, 16))):
            follow = rng.random() < 0.8
            seq.append(int(successor[seq[-1]]) if follow else int(rng.integers(2, vocab)))
        sequences.append(np.array(seq, np.int64))
    return sequences, vocab


@pytest.fixture(scope="session")
def tiny_sasrec(chain_sequences):
    """A small SASRec trained one epoch on `chain_sequences`, shared by the export tests
    (read-only: tests must not train or modify it)."""
    sequences, vocab = chain_sequences
    keras.utils.set_random_seed(0)
    model = SASRec(SASRecConfig(vocab_size=vocab, max_len=TINY_MAX_LEN, dim=16, num_blocks=1))
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(make_training_dataset([s[:-1] for s in sequences], TINY_MAX_LEN, 128), epochs=1,
              verbose=0)
    return model
