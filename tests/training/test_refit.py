"""The SASRec run's refit (`TrainOptions.refit`, chosen from the data: on for short histories such
as these tiny runs'; `--[no-]refit`): after early stopping a fresh model trains on the training
and validation events for the best epoch count, and it is the model tested, saved, exported and
compared with baselines fitted on the same events. The test target never enters training; the
refit shares the time budget and resumes from `--backup-dir`."""

import dataclasses
import json

import numpy as np
import pytest

from pipelines import train as train_pipeline
from tfrec_attn._keras import keras, tf
from tfrec_attn.data import generate_synthetic, pad_left
from tfrec_attn.evaluation import evaluate_baselines
from tfrec_attn.testing.multi_worker import Preempted
from tfrec_attn.training import callbacks, run_training
from tfrec_attn.training import run as run_module
from tfrec_attn.training.backup import BackupMismatchError
from tfrec_attn.training.run import (
    item_probabilities,
    load_sequences,
    refit_sequences,
    results_table,
)
from tfrec_attn.training.run_dir import load_run
from tfrec_attn.training.run_evaluation import evaluate_run, evaluate_runs

TINY = ["--format", "synthetic", "--synthetic-users", "150", "--synthetic-items", "60",
        "--synthetic-length", "10", "--max-len", "8", "--dim", "8", "--blocks", "1",
        "--verbose", "0", "--epochs", "4", "--patience", "10", "--batch-size", "32",
        "--lr", "0.01"]


def _options(tmp, name, *extra):
    return train_pipeline.options_from_args(
        [*TINY, "--output", str(tmp / name), "--export-root", str(tmp / "export"), *extra])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same tiny run refitted (the default) and not (`--no-refit`)."""
    tmp = tmp_path_factory.mktemp("refit")
    refitted = run_training(_options(tmp, "refitted"))
    keras.backend.clear_session()
    plain = run_training(_options(tmp, "plain", "--no-refit", "--name", "plain"))
    keras.backend.clear_session()
    return tmp, refitted, plain


def test_the_refit_trains_the_best_epoch_count_on_training_and_validation_events(runs):
    tmp, refitted, plain = runs
    refit = refitted["refit"]
    assert refit["done"] and refit["epochs"] == refitted["best_epoch"]
    assert len(refit["epoch_seconds"]) == refit["epochs"] and refit["resumed_epochs"] == 0
    # every event but each user's test target: the test target is never trained on
    dataset = refitted["dataset"]
    assert refit["events"] == dataset["interactions"] - dataset["users"]
    assert refitted["train_seconds"] >= refit["seconds"] > 0
    assert "refit" not in plain and plain["options"]["refit"] is False
    assert refitted["options"]["refit"] is True
    # chosen from the data (10-event histories: short), not when set
    assert refitted["data_defaults"]["refit"]["value"] is True
    assert "refit" not in plain["data_defaults"]


def test_refit_sequences_are_the_test_histories():
    options = train_pipeline.options_from_args(TINY)
    _, split = load_sequences(options)
    sequences = refit_sequences(split)
    assert len(sequences) == len(split.test_histories)
    for got, history, train in zip(sequences, split.test_histories, split.train):
        np.testing.assert_array_equal(got, history)
        assert len(got) == len(train) + 1


def test_the_first_model_is_reported_beside_the_refitted_one(runs):
    _, refitted, plain = runs
    # the first fit is the --no-refit run's own training (same seed): the same model
    before = refitted["refit"]["test_before_refit"]
    np.testing.assert_allclose(before["ndcg@10"], plain["test"]["ndcg@10"], atol=1e-4)
    assert refitted["best_epoch"] == plain["best_epoch"]
    assert refitted["test"]["ndcg@10"] != pytest.approx(before["ndcg@10"], abs=1e-6)
    assert "model, no refit" in results_table(refitted)
    assert "model, no refit" not in results_table(plain)


def test_the_saved_and_exported_model_is_the_refitted_one(runs, tmp_path):
    tmp, refitted, _ = runs
    # the checkpoint reloads to the refitted model's test metrics (not the first model's)
    report = evaluate_run(tmp / "refitted", protocols=("full",), bootstrap=0,
                          output=tmp_path)
    assert report["protocols"]["full"]["run_check"]["max_abs_difference"] < 1e-4
    # and the SavedModel serves what that checkpoint ranks
    run = load_run(tmp / "refitted")
    history = tf.constant(pad_left(run.split.test_histories[:16], run.model.config.max_len))
    want = run.model.topk_model(k=10)(history)["item_ids"].numpy()
    served = tf.saved_model.load(str(tmp / "export" / "sasrec" / "1"))
    got = served.signatures["serving_default"](history=history)["item_ids"].numpy()
    np.testing.assert_array_equal(got, want)
    metadata = tmp / "export" / "sasrec" / "1" / "assets.extra" / "tfrec_attn.json"
    assert json.loads(metadata.read_text())["refit"] is True
    plain = tmp / "export" / "plain" / "1" / "assets.extra" / "tfrec_attn.json"
    assert json.loads(plain.read_text())["refit"] is False


def test_baselines_are_fitted_on_the_events_the_model_trained_on(runs):
    tmp, refitted, plain = runs
    run = load_run(tmp / "refitted")
    split = run.split
    assert [len(s) for s in run.train] == [len(s) for s in refit_sequences(split)]
    want = evaluate_baselines(refit_sequences(split), split.test_histories, split.test_targets,
                              run.vocab_size, "full", seed=0)
    for name in ("popularity", "cooccurrence"):
        assert refitted["baselines"][name]["ndcg@10"] == pytest.approx(want[name]["ndcg@10"])
    assert refitted["baselines"] != plain["baselines"]
    assert [len(s) for s in load_run(tmp / "plain").train] == [len(s) for s in split.train]


def test_refitted_and_plain_runs_do_not_pool(runs, tmp_path):
    tmp, _, _ = runs
    with pytest.raises(ValueError, match=r"refitted\b.* was refitted on the validation "
                                         r"targets and .*plain was not"):
        evaluate_runs([tmp / "plain", tmp / "refitted"], tmp_path / "pooled")
    assert not (tmp_path / "pooled").exists()


def _first(seconds, train_seconds, stopped=False):
    return {"records": [{"epoch": 1, "epoch_seconds": s} for s in seconds],
            "train_seconds": train_seconds, "stopped": stopped, "prior": None}


@pytest.mark.parametrize("first, expected", [
    (_first([30.0], 50.0), "leaves 10 s; 3 epochs on training + validation events take about"),
    (_first([1.0], 60.0, stopped=True), "leaves 0 s"),
])
def test_a_refit_the_time_budget_cannot_hold_is_skipped(first, expected, tmp_path):
    options = dataclasses.replace(train_pipeline.options_from_args(TINY),
                                  max_train_minutes=1.0)
    _, split = load_sequences(options)
    model, report = run_module._refit(options, split, 62, 3, first, tmp_path, None)
    assert model is None and report["done"] is False and expected in report["skipped"]
    assert "--max-train-minutes 1 " in report["skipped"]


def test_a_refit_the_budget_stops_is_dropped(tmp_path):
    options = dataclasses.replace(train_pipeline.options_from_args(TINY),
                                  max_train_minutes=1.0)
    data, split = load_sequences(options)
    # no epoch time to estimate from, and 0.01 s left: the refit starts and is stopped
    model, report = run_module._refit(options, split, data.vocab_size, 3, _first([], 59.99),
                                      tmp_path, None)
    assert model is None and report["done"] is False
    assert "stopped the refit" in report["skipped"] and report["seconds"] > 0


def test_a_run_whose_budget_is_spent_keeps_its_first_model(tmp_path, capsys):
    metrics = run_training(_options(tmp_path, "out", "--max-train-minutes", "0.001",
                                    "--export-root", "", "--verbose", "2"))
    assert metrics["stopped_by_time_budget"] and metrics["refit"]["done"] is False
    assert "Refit not done: --max-train-minutes 0.001 leaves 0 s" in capsys.readouterr().out
    assert "test_before_refit" not in metrics["refit"]
    run = load_run(tmp_path / "out")
    assert [len(s) for s in run.train] == [len(s) for s in run.split.train]
    split = run.split  # the baselines are fitted on the events the kept model trained on
    want = evaluate_baselines(split.train, split.test_histories, split.test_targets,
                              run.vocab_size, "full", seed=0)
    assert metrics["baselines"]["cooccurrence"]["ndcg@10"] == pytest.approx(
        want["cooccurrence"]["ndcg@10"])


def test_an_item_seen_only_as_a_test_target_is_never_trained_on(tmp_path):
    """Three users' last event is an item no other event has: the refit's sequences, its
    prior table and its sampled loss's item frequencies never hold it."""
    frame = generate_synthetic(num_users=150, num_items=60, mean_length=10, seed=0)
    frame = frame.sort_values(["user", "timestamp"], kind="stable")
    users = {user: number for number, user in enumerate(dict.fromkeys(frame["user"]), 1)}
    items = {item: number for number, item in enumerate(dict.fromkeys(frame["item"]), 1)}
    by_user = {}  # the SASRec format: numeric `user item` lines in time order
    for user, item in zip(frame["user"], frame["item"]):
        by_user.setdefault(users[user], []).append(f"{users[user]} {items[item]}")
    for user in (1, 2, 3):
        by_user[user].append(f"{user} 99999")
    path = tmp_path / "planted.txt"
    path.write_text("\n".join(line for user_lines in by_user.values() for line in user_lines)
                    + "\n")
    argv = [a for a in TINY if a not in ("--format", "synthetic")]
    metrics = run_training(train_pipeline.options_from_args(
        [*argv, "--format", "sasrec", "--data", str(path), "--output", str(tmp_path / "out"),
         "--export-root", "", "--loss", "sampled", "--uniform-negatives", "16"]))
    assert metrics["refit"]["done"] and metrics["model"]["loss"] == "sampled"
    run = load_run(tmp_path / "out")
    planted = run.split.vocab.lookup(["99999"])[0]
    assert sorted(run.split.test_targets.tolist()).count(planted) == 3
    assert not any(planted in s for s in run.train)
    assert planted not in run.model.transition_prior.neighbor_ids.numpy()
    assert run.model.transition_prior.neighbor_ids.numpy().max() > 0  # the table is filled
    probabilities = item_probabilities(run.train, run.vocab_size)
    assert probabilities[planted] == probabilities.min()  # the smoothing's floor only


def test_a_refit_the_budget_dropped_counts_as_stopped_by_it(tmp_path, monkeypatch):
    dropped = {"done": False, "seconds": 1.5, "skipped": "the --max-train-minutes budget "
               "stopped the refit after 2 s, before its 4 epochs"}
    monkeypatch.setattr(run_module, "_refit", lambda *args: (None, dict(dropped)))
    metrics = run_training(_options(tmp_path, "out", "--export-root", ""))
    assert metrics["stopped_by_time_budget"] and metrics["refit"] == dropped
    records = metrics["history"]["valid"]
    assert metrics["train_seconds"] >= records[-1]["elapsed_seconds"] + 1.5


class EpochTimer(callbacks.EpochTimer):
    """The refit's epoch timer, raising `Preempted` when the refit's epoch 2 begins (named as
    the class it stands in for: `RunBackup` keeps each tracked callback's state by class name)."""

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            raise Preempted("interrupted in the refit")
        super().on_epoch_begin(epoch, logs)


def test_a_run_interrupted_in_the_refit_resumes_it_without_training_again(tmp_path,
                                                                          monkeypatch):
    backup = tmp_path / "backup"
    options = _options(tmp_path, "out", "--backup-dir", str(backup), "--export-root", "")
    with monkeypatch.context() as patch:
        patch.setattr(run_module, "EpochTimer", EpochTimer)
        with pytest.raises(Preempted):
            run_training(options)
    assert sorted(p.name for p in backup.iterdir()) == ["refit", "sasrec_fitted"]
    saved = json.loads((backup / "sasrec_fitted" / "state.json").read_text())["results"]
    keras.backend.clear_session()
    other = _options(tmp_path, "out", "--backup-dir", str(backup), "--export-root", "",
                     "--lr", "0.02")
    with pytest.raises(BackupMismatchError, match="'sasrec_fitted' stage.*learning_rate"):
        run_training(other)
    keras.backend.clear_session()
    no_refit = _options(tmp_path, "out", "--backup-dir", str(backup), "--export-root", "",
                        "--no-refit")  # refused too, rather than training the first fit again
    with pytest.raises(BackupMismatchError, match=r"'sasrec_fitted' stage.*refit: True there, "
                                                  r"False now"):
        run_training(no_refit)
    keras.backend.clear_session()
    fits = []
    original = run_module._fit
    monkeypatch.setattr(run_module, "_fit", lambda *a, **k: fits.append(1) or original(*a, **k))
    metrics = run_training(options)
    assert fits == []  # the first fit was restored, not trained again
    assert metrics["history"]["loss"] == saved["history"]["loss"]
    assert metrics["refit"]["done"] and metrics["refit"]["resumed_epochs"] == 1
    assert metrics["history"]["valid"] == saved["records"]
    assert metrics["resumed_epochs"] == metrics["epochs"] == 4  # every first-fit epoch restored
    assert "ndcg@10" in metrics["refit"]["test_before_refit"]  # tested again from its weights
    assert not any(backup.iterdir())  # the run is done: its stages are deleted


@pytest.mark.parametrize("fails, trainings", [
    ("fit_transition_prior", 1),  # after the first fit: the rerun trains the refit only
    ("evaluate_baselines", 0),  # after the refit: the rerun trains nothing
])
def test_a_run_interrupted_after_a_fit_ended_keeps_that_fit(fails, trainings, tmp_path,
                                                            monkeypatch):
    backup = tmp_path / "backup"
    options = _options(tmp_path, "out", "--backup-dir", str(backup), "--export-root", "")

    def preempted(*args, **kwargs):
        raise Preempted(f"interrupted in {fails}")

    with monkeypatch.context() as patch:
        patch.setattr(run_module, fails, preempted)
        with pytest.raises(Preempted):
            run_training(options)
    keras.backend.clear_session()
    datasets = []
    original = run_module.training_dataset
    monkeypatch.setattr(run_module, "training_dataset",
                        lambda *a, **k: datasets.append(1) or original(*a, **k))
    metrics = run_training(options)
    assert len(datasets) == trainings
    assert metrics["refit"]["done"] and (tmp_path / "out" / "metrics.json").exists()
    assert not any(backup.iterdir())
