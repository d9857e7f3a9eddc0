"""`tfrec-attn tune` end to end: YAML + flags -> search -> tuning.json, PNG, a trainable config."""

import json

import pytest
import yaml

from pipelines import train as train_pipeline
from pipelines import tune as tune_pipeline
from tfrec_attn.cli import COMMANDS
from tfrec_attn.tuning import TUNABLE

TINY_FLAGS = ["--format", "synthetic", "--synthetic-users", "120", "--synthetic-items", "50",
              "--synthetic-length", "10", "--verbose", "0"]


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    config = root / "tune.yaml"
    config.write_text(yaml.safe_dump({
        "tuner": "random", "max_trials": 5, "patience": 1, "batch_size": 64,
        "model": {"max_len": 5},
        "search_space": {"dim": [8, 16], "num_blocks": [1], "loss": ["sampled", "bce"],
                         "learning_rate": {"min": 1e-3, "max": 1e-2, "sampling": "log"}}}))
    argv = ["--config", str(config), "--max-trials", "2", "--epochs", "1", "--seed", "3",
            "--output", str(root / "out")] + TINY_FLAGS
    assert tune_pipeline.main(argv) == 0
    return root / "out"


def test_tuning_json_schema(search):
    report = json.loads((search / "tuning.json").read_text())
    assert report["tuner"] == "random" and report["max_trials"] == 2  # the flag beats the YAML
    assert report["objective"] == {"name": "val_ndcg@10", "direction": "max"}
    assert report["search_space"]["dim"] == {"kind": "choice", "values": [8, 16]}
    assert report["dataset"]["users"] == 120 and not report["stopped_by_time_budget"]
    assert len(report["trials"]) == 2
    for trial in report["trials"]:
        assert set(trial) >= {"trial_id", "status", "hyperparameters", "val_ndcg@10",
                              "val_hr@10", "val_mrr", "epochs", "best_epoch", "seconds"}
        assert set(trial["hyperparameters"]) <= set(TUNABLE)
        assert trial["hyperparameters"]["dim"] in (8, 16)
        assert 1e-3 <= trial["hyperparameters"]["learning_rate"] <= 1e-2
        assert trial["epochs"] == 1 and trial["seconds"] > 0
    assert report["best"] in report["trials"]
    assert (search / "tuning.png").stat().st_size > 1000


def test_best_config_trains_as_is(search, tmp_path):
    report = json.loads((search / "tuning.json").read_text())
    best = report["best"]["hyperparameters"]
    path = search / "best_config.yaml"
    assert report["best_config"] == str(path)
    options = train_pipeline.options_from_args(["--config", str(path)])
    assert options.learning_rate == pytest.approx(best["learning_rate"])
    assert options.model == {"max_len": 5, **{k: v for k, v in best.items()
                                             if k != "learning_rate"}}
    assert (options.seed, options.batch_size, options.patience, options.epochs) == (3, 64, 1, 1)
    assert options.synthetic_users == 120 and options.output == str(search / "best_run")
    argv = ["--config", str(path), "--output", str(tmp_path / "run"), "--export-root", ""]
    assert train_pipeline.main(argv) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["model"]["dim"] == best["dim"] and metrics["model"]["loss"] == best["loss"]


def test_every_trial_retrains_to_its_own_score(search, tmp_path):
    """The trials once shared one dataset, so trial 2 trained on its reshuffles 2+: retraining
    its settings with `train` gave another validation score."""
    path = search / "best_config.yaml"
    for trial in json.loads((search / "tuning.json").read_text())["trials"]:
        hp = trial["hyperparameters"]
        out = tmp_path / trial["trial_id"]
        argv = ["--config", str(path), "--output", str(out), "--export-root", "",
                "--dim", str(hp["dim"]), "--blocks", str(hp["num_blocks"]),
                "--heads", str(hp["num_heads"]), "--dropout", repr(hp["dropout"]),
                "--loss", hp["loss"], "--lr", repr(hp["learning_rate"])]
        assert train_pipeline.main(argv) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["valid"]["ndcg@10"] == pytest.approx(trial["val_ndcg@10"], rel=1e-5)


def test_cli_knows_tune():
    assert COMMANDS["tune"] == "pipelines.tune"


@pytest.mark.parametrize(
    "yaml_text, flags, message",
    [("search_space: {dimm: [8]}\n", [], "search_space.dimm: unknown field"),
     ("search_space: {dropout: {min: 0.4, max: 0.2}}\n", [], "min must be below max"),
     ("", ["--max-trials", "0"], "max_trials must be a positive int"),
     ("", ["--format", "csv"], "--data is required")],
)
def test_bad_options_exit_with_a_clear_message(yaml_text, flags, message, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(yaml_text)
    assert tune_pipeline.main(["--config", str(config), *flags]) == 2
    assert message in capsys.readouterr().err


def test_unknown_yaml_option_is_named(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("max_trial: 3\n")
    with pytest.raises(ValueError, match="max_trial"):
        tune_pipeline.options_from_args(["--config", str(config)])
    assert tune_pipeline.main(["--config", str(config)]) == 2  # a usage error, as train's


@pytest.mark.parametrize("content, message", [(None, "file not found"),
                                              ("a;b\n", "missing column 'user'")])
def test_bad_data_file_exits_with_a_clear_message(content, message, tmp_path, capsys):
    data = tmp_path / "interactions.csv"
    if content is not None:
        data.write_text(content)
    argv = ["--format", "csv", "--data", str(data), "--output", str(tmp_path / "out")]
    assert tune_pipeline.main(argv) == 2  # not a DataError traceback
    err = capsys.readouterr().err
    assert err.startswith(f"tfrec-attn tune: --data: {data}") and message in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def _files(directory) -> dict:
    """Every file under `directory`: relative path -> (mtime, contents)."""
    return {p.relative_to(directory): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_resume_needs_the_same_data_and_training_settings(tmp_path, capsys):
    out = tmp_path / "out"
    common = ["--max-trials", "1", "--epochs", "1", "--output", str(out), *TINY_FLAGS]
    tiny = ["--config", str(tmp_path / "tune.yaml")]
    (tmp_path / "tune.yaml").write_text(yaml.safe_dump(
        {"model": {"max_len": 5}, "search_space": {"dim": [8, 16], "num_blocks": [1]}}))
    assert tune_pipeline.main([*tiny, *common]) == 0
    first = json.loads((out / "tuning.json").read_text())
    before = _files(out)
    capsys.readouterr()
    # Other synthetic data in the same directory: refused, and nothing there is touched.
    assert tune_pipeline.main([*tiny, *common, "--max-trials", "2",
                               "--synthetic-users", "150"]) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "synthetic_users: 120 there, 150 now" in err
    assert "new --output" in err and "dim" not in err
    assert _files(out) == before
    # The same settings resume (a larger trial cap and search space may change).
    (tmp_path / "tune.yaml").write_text(yaml.safe_dump(
        {"model": {"max_len": 5}, "search_space": {"dim": [8, 16, 24], "num_blocks": [1]}}))
    assert tune_pipeline.main([*tiny, *common, "--max-trials", "2"]) == 0
    trials = json.loads((out / "tuning.json").read_text())["trials"]
    assert len(trials) == 2 and trials[0] == first["trials"][0]  # reloaded, not trained again


def test_a_rerun_with_another_tuner_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    common = ["--max-trials", "1", "--epochs", "1", "--output", str(out), *TINY_FLAGS]
    assert tune_pipeline.main([*common, "--tuner", "bayesian"]) == 0
    before = _files(out)
    capsys.readouterr()
    # Another tuner on the same output: refused, the first search and its report untouched.
    assert tune_pipeline.main([*common, "--tuner", "random"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tfrec-attn tune: {out} holds a bayesian search")
    assert "tuner: 'bayesian' there, 'random' now" in err and "--tuner bayesian" in err
    assert len(err.strip().splitlines()) == 1
    assert _files(out) == before and not (out / "random").exists()
    # --overwrite discards it: the output then holds the random search only.
    assert tune_pipeline.main([*common, "--tuner", "random", "--overwrite"]) == 0
    assert json.loads((out / "tuning.json").read_text())["tuner"] == "random"
    assert not (out / "bayesian").exists()


@pytest.mark.parametrize("events, items, message", [
    (6, 12, "12 items; a run ranks the catalogue at cut-offs up to 20"),  # trials crashed
    (3, 40, "no user to train on"),  # trials failed on an empty dataset
])
def test_data_train_refuses_is_refused_before_any_trial(tmp_path, capsys, events, items,
                                                        message):
    data = tmp_path / "log.txt"
    data.write_text("".join(f"u{u} i{(u + e) % items}\n" for u in range(30)
                            for e in range(events)))
    out = tmp_path / "out"
    argv = ["--data", str(data), "--format", "sasrec", "--max-trials", "1", "--epochs", "1",
            "--output", str(out), "--verbose", "0"]
    assert tune_pipeline.main(argv) == 2
    err = capsys.readouterr().err
    assert f"--data {data}" in err and message in err and not out.exists()


def test_best_config_of_a_search_given_relative_paths_trains_from_anywhere(tmp_path,
                                                                           monkeypatch):
    """The data path was written as given (`data: events.txt`) beside the printed command
    `tfrec-attn train --config .../best_config.yaml`, which then failed elsewhere: it is
    absolute now, as are the output and the command."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "events.txt").write_text("".join(f"{u} {(u + i) % 30 + 1}\n" for u in range(1, 41)
                                             for i in range(8)))
    monkeypatch.chdir(work)
    argv = ["--format", "sasrec", "--data", "events.txt", "--max-trials", "1", "--epochs", "1",
            "--verbose", "0", "--output", "tune"]
    assert tune_pipeline.main(argv) == 0
    report = json.loads((work / "tune" / "tuning.json").read_text())
    assert report["best_config"] == str(work / "tune" / "best_config.yaml")
    config = yaml.safe_load((work / "tune" / "best_config.yaml").read_text())
    assert config["data"] == str(work / "events.txt")
    assert config["output"] == str(work / "tune" / "best_run")
    monkeypatch.chdir(tmp_path)
    options = train_pipeline.options_from_args(["--config", report["best_config"]])
    assert options.data == str(work / "events.txt")
