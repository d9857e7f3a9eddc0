"""DIN defaults have one source: `DINConfig` / `RankingOptions`; the families benchmark and the
recorded `din_ml100k.yaml` run agree with them."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from tfrec_attn.benchmarking.families import FamiliesSettings
from tfrec_attn.models import DINConfig
from tfrec_attn.training.ranking_run import RankingOptions

CONFIG = Path(__file__).resolve().parents[2] / "pipelines" / "configs" / "din_ml100k.yaml"
# FamiliesSettings field -> (source class, source field, the value docs/BENCHMARKS.md reports)
SOURCES = {
    "din_max_len": (DINConfig, "max_len", 50),
    "din_dim": (DINConfig, "dim", 32),
    "din_attention_units": (DINConfig, "attention_units", (80, 40)),
    "din_mlp_units": (DINConfig, "mlp_units", (200, 80)),
    "din_epochs": (RankingOptions, "epochs", 10),
    "din_patience": (RankingOptions, "patience", 2),
    "din_batch_size": (RankingOptions, "batch_size", 256),
    "din_learning_rate": (RankingOptions, "learning_rate", 1e-3),
    "din_train_negatives": (RankingOptions, "negatives", 1),
    "din_valid_negatives": (RankingOptions, "valid_negatives", 20),
    "din_test_negatives": (RankingOptions, "test_negatives", 100),
}
RUN_IDENTITY = {"model_type", "format", "data", "output", "name", "export_root"}


def _defaults(cls) -> dict:
    return {f.name: f.default for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING}


@pytest.mark.parametrize("field", sorted(SOURCES))
def test_families_din_defaults_are_the_training_defaults(field):
    cls, name, reported = SOURCES[field]
    value = getattr(FamiliesSettings(), field)
    assert value == _defaults(cls)[name] == reported


def test_every_din_setting_has_a_source():
    din_fields = {f.name for f in dataclasses.fields(FamiliesSettings)
                  if f.name.startswith("din_")}
    assert din_fields == set(SOURCES)


def test_din_ml100k_yaml_records_the_defaults():
    """The YAML is an explicit record of the benchmarked run: besides naming the data and the
    output, every value it sets is a default."""
    config = yaml.safe_load(CONFIG.read_text())
    model = config.pop("model")
    options = _defaults(RankingOptions)
    assert config.keys() - RUN_IDENTITY <= options.keys()
    for key in config.keys() - RUN_IDENTITY:
        assert config[key] == options[key], key
    din = _defaults(DINConfig)
    assert model.keys() <= din.keys()
    for key, value in model.items():
        assert (tuple(value) if isinstance(value, list) else value) == din[key], key
    assert config["model_type"] == "din" and config["format"] == "movielens"
