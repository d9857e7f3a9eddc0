"""`python -m pipelines.benchmark families --quick`: the whole run on tiny synthetic data."""

import json

import pytest

from pipelines import benchmark
from tfrec_attn.benchmarking.families import families_settings, format_table

POLICIES = {"logging", "best", "reinforce_uncorrected", "importance", "top_k"}


@pytest.fixture(scope="module")
def quick_record(tmp_path_factory):
    output = tmp_path_factory.mktemp("families")
    assert benchmark.main(["families", "--output", str(output), "--quick"]) == 0
    return json.loads((output / "families.json").read_text())


def test_quick_run_writes_every_measurement(quick_record):
    record = quick_record
    assert set(record) == {"settings", "data", "din", "autoencoder", "policy", "seconds"}
    assert record["settings"]["din_epochs"] == 1 and record["data"]["source"] == "synthetic"
    assert record["data"]["users"] == 60 and record["seconds"] > 0


def test_din_reports_auc_and_gauc_for_both_poolings(quick_record):
    din = quick_record["din"]
    assert din["test_users"] == 60 and din["test_rows"] == 60 * (1 + 5)
    for pooling in ("attention", "mean"):
        result = din[pooling]
        assert 0.0 <= result["test_auc"] <= 1.0 and 0.0 <= result["test_gauc"] <= 1.0
        assert result["epochs_run"] == 1 == result["best_epoch"]
        assert len(result["valid_auc"]) == 1 and result["seconds"] > 0


def test_autoencoder_and_baselines_report_recall_and_ndcg(quick_record):
    ae = quick_record["autoencoder"]
    assert ae["users"] == 60 and ae["held_out_items"] > 0
    for name in ("attention_autoencoder", "popularity", "cooccurrence"):
        metrics = ae[name]
        assert set(metrics) == {"recall@10", "ndcg@10", "users"}
        assert 0.0 <= metrics["ndcg@10"] <= 1.0 and 0.0 <= metrics["recall@10"] <= 1.0
        assert metrics["users"] == 60.0  # every synthetic user holds out at least one item


def test_policy_values_never_exceed_the_best_possible(quick_record):
    policy = quick_record["policy"]
    assert set(policy["per_seed"]) == {"0"} and set(policy["mean"]) == POLICIES
    assert policy["top_k_K"] == 5 and policy["test_users"] == 12
    for row in [*policy["per_seed"].values(), policy["mean"]]:
        for name in POLICIES:
            assert set(row[name]) == {"reward@1", "reward@5"}
            for k in ("reward@1", "reward@5"):
                assert 0.0 < row[name][k] <= row["best"][k] + 1e-9, (name, k)
        # The logging policy's value does not depend on how many items are shown.
        assert row["logging"]["reward@1"] == row["logging"]["reward@5"]
    table = format_table(quick_record)
    assert "test AUC" in table and "recall@10" in table and "top_k" in table


@pytest.mark.parametrize("overrides, message", [
    ({"din_epochs": 0}, "din_epochs"), ({"ae_holdout_fraction": 1.0}, "ae_holdout_fraction"),
    ({"policy_ks": (0, 5)}, "policy_ks"), ({"policy_seeds": ()}, "policy_seeds"),
    ({"max_users": 0}, "max_users"), ({"din_learning_rate": -1.0}, "din_learning_rate"),
    ({"run_eagerly": 1}, "run_eagerly"),
    ({"policy_seeds": (1, 1)}, "policy_seeds must be a non-empty tuple of distinct"),
    ({"policy_seeds": (0, True)}, "policy_seeds must be a non-empty tuple of distinct"),
    ({"din_mlp_units": (8, 0)}, "din_mlp_units must be a tuple of positive ints"),
])
def test_bad_settings_name_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        families_settings(**overrides)


def test_missing_data_path_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        benchmark.main(["families", "--output", str(tmp_path), "--data",
                        str(tmp_path / "nope")])
    assert "nope" in capsys.readouterr().err
