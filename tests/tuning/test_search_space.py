"""The search space: defaults, YAML overrides, sampling, and errors that name the bad field."""

import keras_tuner
import pytest

from tfrec_attn.models import SASRecConfig
from tfrec_attn.training import TrainOptions
from tfrec_attn.tuning import DEFAULT_SEARCH_SPACE, SASRecHyperModel, SearchSpace, TuneOptions


def test_default_space_is_the_documented_one():
    entries = SearchSpace().to_dict()
    assert entries["dim"] == {"kind": "choice", "values": [32, 64, 128]}
    assert entries["num_blocks"]["values"] == [1, 2, 3]
    assert entries["num_heads"]["values"] == [1, 2]
    assert entries["loss"]["values"] == ["sampled", "softmax", "bce"]
    assert (entries["dropout"]["min"], entries["dropout"]["max"]) == (0.1, 0.5)
    rate = entries["learning_rate"]
    assert (rate["min"], rate["max"], rate["sampling"]) == (1e-4, 1e-2, "log")
    assert set(entries) == set(DEFAULT_SEARCH_SPACE)


def test_overrides_merge_field_by_field():
    space = SearchSpace({"dim": [16, 32], "dropout": 0.3, "loss": None,
                         "num_blocks": {"min": 1, "max": 4}})
    entries = space.to_dict()
    assert entries["dim"]["values"] == [16, 32]
    assert entries["dropout"] == {"kind": "fixed", "value": 0.3}
    assert "loss" not in entries  # null: the model's base value is used
    assert entries["num_blocks"] == {"kind": "range", "min": 1, "max": 4, "step": 1,
                                     "sampling": "linear"}
    assert entries["num_heads"]["values"] == [1, 2]  # untouched default


def test_sampled_values_have_the_field_types_and_ranges():
    hp = keras_tuner.HyperParameters()
    SearchSpace({"num_blocks": {"min": 1, "max": 3}, "l2": {"min": 0, "max": 1e-3}}).sample(hp)
    for seed in range(10):
        values = {p.name: p.random_sample(seed) for p in hp.space}
        assert isinstance(values["num_blocks"], int) and 1 <= values["num_blocks"] <= 3
        assert isinstance(values["l2"], float) and 0.0 <= values["l2"] <= 1e-3
        assert 1e-4 <= values["learning_rate"] <= 1e-2
        assert values["dim"] in (32, 64, 128)


def test_hypermodel_builds_a_compiled_model_from_hyperparameters():
    space = SearchSpace({"dim": [8], "num_blocks": [1], "learning_rate": 0.005, "loss": "bce"})
    hypermodel = SASRecHyperModel(vocab_size=30, space=space, base={"max_len": 7, "dim": 99})
    model = hypermodel.build(keras_tuner.HyperParameters())
    assert model.config == SASRecConfig(vocab_size=30, max_len=7, dim=8, num_blocks=1,
                                        num_heads=1, dropout=0.1, loss="bce")
    assert model.optimizer.learning_rate.numpy() == pytest.approx(0.005)


@pytest.mark.parametrize(
    "overrides, message",
    [({"dimm": [8]}, "search_space.dimm: unknown field"),
     ({"max_len": [10, 20]}, "search_space.max_len: unknown field"),
     ({"dim": []}, "search_space.dim: an empty list"),
     ({"dim": [32, "big"]}, "search_space.dim: expected a int"),
     ({"dim": [0]}, "search_space.dim: must be a positive int"),
     ({"num_blocks": [True]}, "search_space.num_blocks: expected a int"),
     ({"dropout": {"min": 0.5, "max": 0.1}}, "search_space.dropout: min must be below max"),
     ({"dropout": {"min": 0.1}}, "search_space.dropout: a range needs both 'min' and 'max'"),
     ({"dropout": {"min": 0.1, "max": 1.5}}, r"search_space.dropout: must be in \[0, 1\)"),
     ({"dropout": {"low": 0.1, "max": 0.5}}, "search_space.dropout: unknown range keys"),
     ({"learning_rate": {"min": 0, "max": 0.1, "sampling": "log"}},
      "search_space.learning_rate: must be positive"),
     ({"l2": {"min": 0.0, "max": 0.1, "sampling": "log"}},
      "search_space.l2: log sampling needs min > 0"),
     ({"dropout": {"min": 0.1, "max": 0.5, "sampling": "cubic"}},
      "search_space.dropout: sampling must be one of"),
     ({"num_blocks": {"min": 1.5, "max": 3}}, "search_space.num_blocks: expected a int"),
     ({"num_blocks": {"min": 1, "max": 3, "step": 0}},
      "search_space.num_blocks: step must be a positive int"),
     ({"loss": {"min": 1, "max": 2}}, "search_space.loss: a {min, max} range needs a numeric"),
     ({"loss": ["sampled", "hinge"]}, "search_space.loss: must be one of"),
     ({"positional": "rotary"}, "search_space.positional: must be 'learned' or 'sinusoidal'"),
     ({"activation": ["gelu", "nope"]}, "search_space.activation: not a Keras activation"),
     ({"dim": [32, 48], "num_heads": [1, 3]}, "dim=32 is not divisible by num_heads=3"),
     ({"num_heads": {"min": 1, "max": 3}}, "dim=32 is not divisible by num_heads=3")],
)
def test_bad_entries_name_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        SearchSpace(overrides)


def test_space_must_be_a_mapping():
    with pytest.raises(ValueError, match="search_space must be a mapping"):
        SearchSpace([("dim", [8])])


def test_divisibility_uses_the_base_model_when_dim_is_not_tuned():
    with pytest.raises(ValueError, match="dim=31 is not divisible by num_heads=2"):
        SearchSpace({"dim": None}, base={"dim": 31})


@pytest.mark.parametrize(
    "kwargs, message",
    [({"tuner": "grid"}, "tuner must be one of"),
     ({"max_trials": 0}, "max_trials must be a positive int"),
     ({"max_trials": True}, "max_trials must be a positive int"),
     ({"max_tune_minutes": -1.0}, "max_tune_minutes must be positive"),
     ({"search_space": {"dim": [8, 12], "num_heads": [8]}}, "not divisible")],
)
def test_tune_options_fail_before_loading_data(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TuneOptions(train=TrainOptions(), **kwargs)
