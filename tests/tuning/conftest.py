"""Tiny synthetic searches shared by the tuning tests (1 epoch per trial, small models)."""

import pytest

from tfrec_attn.training import TrainOptions
from tfrec_attn.tuning import TuneOptions

TINY_DATA = {"format": "synthetic", "synthetic_users": 120, "synthetic_items": 50,
             "synthetic_length": 10, "verbose": 0, "patience": 2}
TINY_SPACE = {"dim": [8, 16], "num_blocks": [1], "num_heads": [1, 2]}


@pytest.fixture
def tune_options():
    """`tune_options(output, **tune_kwargs)`: a tiny search writing to `output`."""

    def make(output, epochs: int = 1, model=None, **kwargs) -> TuneOptions:
        train = TrainOptions(output=str(output), epochs=epochs, model=model or {"max_len": 5},
                             **TINY_DATA)
        kwargs.setdefault("search_space", TINY_SPACE)
        return TuneOptions(train=train, **kwargs)

    return make
