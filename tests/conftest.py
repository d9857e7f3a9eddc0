"""Shared fixtures: small deterministic data for model, export and pipeline tests."""

import numpy as np
import pytest

import tfrec_attn  # noqa: F401  (guarantees Keras 2 before anything imports TensorFlow)

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
