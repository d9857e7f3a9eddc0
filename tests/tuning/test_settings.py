"""The options a search's trials depend on, and the resume check over them."""

import json
import os

import pytest

from tfrec_attn.training import TrainOptions
from tfrec_attn.tuning import TuneSettingsError, trial_settings
from tfrec_attn.tuning.settings import SETTINGS_FILE, check_resume, record_settings


def test_trial_settings_name_what_a_trial_measures(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    for name in ("x.csv", "y.csv"):
        (tmp_path / "data" / name).write_text(f"user,item,timestamp\n1,{name[0]},1\n")
    base = TrainOptions(format="csv", data="data/x.csv", epochs=2, model={"max_len": 5})
    settings = trial_settings(base)
    assert settings["data"] == os.path.abspath("data/x.csv")  # the same file from any cwd
    assert "synthetic_users" not in settings  # not read for a data file
    for change in ({"epochs": 3}, {"batch_size": 64}, {"seed": 1}, {"eval_protocol":
                   "sampled-100"}, {"valid_users": 10}, {"min_events": 5},
                   {"data": "data/y.csv"}, {"model": {"max_len": 6}}, {"learning_rate": 1e-2},
                   {"on_error": "skip"}):
        assert trial_settings(TrainOptions(**{**vars(base), **change})) != settings, change
    for change in ({"verbose": 0}, {"max_train_minutes": 5.0}, {"output": "elsewhere"},
                   {"synthetic_users": 7}):
        assert trial_settings(TrainOptions(**{**vars(base), **change})) == settings, change
    synthetic = TrainOptions(epochs=2)  # no file: on_error reads nothing
    assert "on_error" not in trial_settings(synthetic)


def test_check_resume_names_each_difference_and_record_keeps_the_first(tmp_path):
    old = trial_settings(TrainOptions(synthetic_users=200, epochs=1))
    check_resume(tmp_path / "random", old)  # nothing recorded yet: a fresh search
    record_settings(tmp_path / "random", old)
    record_settings(tmp_path / "random", {"other": 1})  # recorded settings are never replaced
    assert json.loads((tmp_path / "random" / SETTINGS_FILE).read_text()) == old
    check_resume(tmp_path / "random", trial_settings(TrainOptions(synthetic_users=200, epochs=1)))
    new = trial_settings(TrainOptions(synthetic_users=300, epochs=2))
    with pytest.raises(TuneSettingsError) as err:
        check_resume(tmp_path / "random", new)
    assert str(tmp_path) in str(err.value) and "new --output" in str(err.value)
    assert "(epochs: 1 there, 2 now; synthetic_users: 200 there, 300 now)" in str(err.value)


def test_resume_of_trials_without_recorded_settings_warns(tmp_path, recwarn):
    settings = trial_settings(TrainOptions(synthetic_users=200, epochs=1))
    check_resume(tmp_path / "random", settings)  # a fresh search: nothing to say
    assert not recwarn.list
    (tmp_path / "random" / "trial_00").mkdir(parents=True)
    with pytest.warns(UserWarning, match="trials without recorded settings"):
        check_resume(tmp_path / "random", settings)


def test_a_resume_on_a_changed_data_file_is_refused(tmp_path):
    """The same path with other bytes: the search's earlier trials measured other data."""
    data = tmp_path / "x.csv"
    data.write_text("user,item,timestamp\n1,a,1\n")
    options = TrainOptions(format="csv", data=str(data), epochs=1)
    record_settings(tmp_path / "random", trial_settings(options))
    check_resume(tmp_path / "random", trial_settings(options))  # unchanged: resumes
    data.write_text("user,item,timestamp\n1,b,1\n")
    with pytest.raises(TuneSettingsError, match="data_fingerprint"):
        check_resume(tmp_path / "random", trial_settings(options))


def test_settings_recorded_before_fingerprints_resume_on_the_path(tmp_path):
    data = tmp_path / "x.csv"
    data.write_text("user,item,timestamp\n1,a,1\n")
    settings = trial_settings(TrainOptions(format="csv", data=str(data), epochs=1))
    record_settings(tmp_path / "random", {k: v for k, v in settings.items()
                                          if k != "data_fingerprint"})
    check_resume(tmp_path / "random", settings)
