"""Every keras-tuner strategy over tf-keras SASRec models: runs, resumes, stops on a budget."""

import json

import pytest

from tfrec_attn.tuning import run_tuning, tuning_table


def _check_resumed(first: dict, second: dict, kind: str, output) -> list[dict]:
    """The second search kept the first's trial (reloaded, not trained again) and added one."""
    assert [t["status"] for t in first["trials"]] == ["COMPLETED"]
    trials = second["trials"]
    assert trials[0] == first["trials"][0]  # reloaded from disk, not trained again
    assert all(t["status"] == "COMPLETED" for t in trials) and len(trials) > 1
    assert json.loads((output / "tuning.json").read_text())["trials"] == trials
    assert (output / kind / f"trial_{trials[1]['trial_id']}" / "trial.json").exists()
    return trials


# Hyperband resumes in `test_hyperband_resumes_then_promotes_a_trial_from_its_checkpoint`.
@pytest.mark.parametrize("kind", ["random", "bayesian"])
def test_each_tuner_runs_and_resumes_one_trial_at_a_time(kind, tune_options, tmp_path):
    first = run_tuning(tune_options(tmp_path, tuner=kind, max_trials=1))
    second = run_tuning(tune_options(tmp_path, tuner=kind, max_trials=2))
    trials = _check_resumed(first, second, kind, tmp_path)
    assert [t["status"] for t in trials] == ["COMPLETED", "COMPLETED"]
    assert 0.0 < second["best"]["val_ndcg@10"] <= 1.0
    assert second["best"]["val_ndcg@10"] == max(t["val_ndcg@10"] for t in trials)


def test_hyperband_resumes_then_promotes_a_trial_from_its_checkpoint(tune_options, tmp_path):
    # max_epochs=3, factor 3: three 1-epoch trials, then the best continues to epoch 3. The first
    # search stops after one trial; the second resumes it (one trial at a time) and goes on.
    first = run_tuning(tune_options(tmp_path, epochs=3, tuner="hyperband", max_trials=1))
    report = run_tuning(tune_options(tmp_path, epochs=3, tuner="hyperband", max_trials=4))
    trials = _check_resumed(first, report, "hyperband", tmp_path)
    assert 0.0 < report["best"]["val_ndcg@10"] <= 1.0
    assert report["best"]["val_ndcg@10"] == max(t["val_ndcg@10"] for t in trials)
    assert [t["hyperband"]["epochs"] for t in trials] == [1, 1, 1, 3]
    promoted = trials[3]
    parent = next(t for t in trials if t["trial_id"] == promoted["hyperband"]["trial_id"])
    assert promoted["hyperparameters"] == parent["hyperparameters"]
    assert parent["val_ndcg@10"] == max(t["val_ndcg@10"] for t in trials[:3])
    assert promoted["hyperband"]["initial_epoch"] == 1 and promoted["epochs"] == 2
    assert promoted["best_epoch"] in (2, 3)


def test_time_budget_stops_the_first_trial_then_overwrite_starts_afresh(tune_options, tmp_path):
    report = run_tuning(tune_options(tmp_path, epochs=20, max_trials=5, max_tune_minutes=1e-4))
    assert report["stopped_by_time_budget"]
    [trial] = report["trials"]
    assert trial["stopped_by_time_budget"] and trial["epochs"] == 1
    assert trial["val_ndcg@10"] is not None and (tmp_path / "best_config.yaml").exists()
    # the printed table and the best config say the budget cut the search and its trial
    table = tuning_table(report)
    assert "*: a time budget (--max-train-minutes, or the search's --max-tune-minutes)" in table
    assert "the --max-tune-minutes budget stopped the search after 1 of 5 trials" in table
    assert any(line.split()[:1] == ["0"] and line.split()[3] == "1*"
               for line in table.splitlines())
    header = (tmp_path / "best_config.yaml").read_text().splitlines()[0]
    assert "the time budget cut it after 1 of 20 epochs" in header
    # The same directory with `overwrite` (here, not in a test of its own: one trial less):
    marker = tmp_path / "random" / "left_by_the_first_search"
    marker.write_text("x")
    again = run_tuning(tune_options(tmp_path, max_trials=1, max_tune_minutes=1e-4,
                                    overwrite=True))
    assert len(again["trials"]) == 1 and again["trials"][0]["trial_id"] == "0"
    assert not marker.exists()  # overwrite starts afresh: the first search was discarded


def test_table_explains_a_star_when_only_a_trials_own_budget_cut_it():
    trial = {"trial_id": "0", "val_ndcg@10": 0.1, "val_hr@10": 0.2, "epochs": 2, "seconds": 1.0,
             "hyperparameters": {"dim": 8}, "stopped_by_time_budget": True}
    table = tuning_table({"tuner": "random", "eval_protocol": "full", "max_trials": 3,
                          "stopped_by_time_budget": False, "trials": [trial]})
    assert "2*" in table and "*: a time budget" in table
    assert "stopped the search" not in table
    table = tuning_table({"tuner": "random", "eval_protocol": "full", "max_trials": 3,
                          "stopped_by_time_budget": False,
                          "trials": [{**trial, "stopped_by_time_budget": False}]})
    assert "*" not in table
