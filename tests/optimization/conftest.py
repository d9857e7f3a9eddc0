"""Fixtures for the optimization tests."""

import pytest

from tfrec_attn._keras import keras


@pytest.fixture(autouse=True)
def _deterministic():
    """Seeds Python, NumPy and TensorFlow, and restores the global dtype policy afterwards."""
    keras.utils.set_random_seed(0)
    policy = keras.mixed_precision.global_policy()
    yield
    keras.mixed_precision.set_global_policy(policy)
