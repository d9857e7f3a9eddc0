"""`tfrec-attn evaluate` re-creates the split from the data file the run trained on: from any
working directory (`metrics.json` records its absolute path), and only while the file is the one
the run read (its size and SHA-256); a reload whose metrics differ from the run's is reported."""

import json
import shutil

import numpy as np
import pytest

from pipelines import evaluate as evaluate_pipeline
from pipelines import train as train_pipeline
from tfrec_attn.training import load_run
from tfrec_attn.training.run_options import data_fingerprint

TRAIN = ["--format", "sasrec", "--data", "rel.txt", "--max-len", "8", "--dim", "8",
         "--blocks", "1", "--epochs", "1", "--verbose", "0", "--export-root", ""]
EVALUATE = ["--protocols", "full", "--bootstrap", "0"]


def _write_events(path, reverse=False):
    """60 users x 6 events over 30 items; `reverse`: each user's events in reverse order (the
    same users and items, so the same vocabulary, but another split)."""
    rng = np.random.default_rng(0)
    lines = []
    for user in range(1, 61):
        items = rng.integers(1, 31, size=6).tolist()
        lines += [f"{user} {item}" for item in (items[::-1] if reverse else items)]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run trained on `rel.txt`, given relative to the working directory train ran in."""
    workdir = tmp_path_factory.mktemp("data_dir")
    _write_events(workdir / "rel.txt")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        assert train_pipeline.main(TRAIN + ["--output", "run"]) == 0
    return workdir


@pytest.fixture
def run_dir(trained, tmp_path, monkeypatch):
    """A copy of the run and its data, evaluated from another working directory."""
    shutil.copytree(trained, tmp_path / "data_dir")
    run = tmp_path / "data_dir" / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["dataset"]["path"] = str(tmp_path / "data_dir" / "rel.txt")  # where the copy is
    (run / "metrics.json").write_text(json.dumps(metrics))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    return run


def test_metrics_record_the_absolute_path_and_fingerprint_of_the_data(trained):
    dataset = json.loads((trained / "run" / "metrics.json").read_text())["dataset"]
    data = trained / "rel.txt"
    assert dataset["name"] == "rel.txt"  # as given
    assert dataset["path"] == str(data)
    assert dataset["fingerprint"] == {"rel.txt": {
        "bytes": data.stat().st_size, "sha256": data_fingerprint(data, "sasrec")["rel.txt"][
            "sha256"]}}


def test_evaluate_from_another_directory_reads_the_recorded_path(run_dir, capsys):
    assert evaluate_pipeline.main(["--run-dir", str(run_dir)] + EVALUATE) == 0
    report = json.loads((run_dir / "evaluation.json").read_text())
    assert report["protocols"]["full"]["run_check"]["max_abs_difference"] == 0.0
    assert "warning" not in capsys.readouterr().err


def test_changed_data_is_refused_naming_the_file_and_what_changed(run_dir, capsys):
    data = run_dir.parent / "rel.txt"
    _write_events(data, reverse=True)  # same size, same vocabulary, another split
    with pytest.raises(ValueError, match="changed since") as info:
        load_run(run_dir)
    message = str(info.value)
    assert str(data) in message and "(--data rel.txt)" in message
    size = data.stat().st_size
    assert f"rel.txt is {size} bytes (sha256 " in message and f"now, {size} bytes" in message
    assert evaluate_pipeline.main(["--run-dir", str(run_dir)] + EVALUATE) == 2
    assert "changed since" in capsys.readouterr().err
    assert not (run_dir / "evaluation.json").exists()


def test_moved_data_is_named_as_the_file_the_run_was_trained_on(run_dir, capsys):
    data = run_dir.parent / "rel.txt"
    data.rename(run_dir.parent / "moved.txt")
    assert evaluate_pipeline.main(["--run-dir", str(run_dir)] + EVALUATE) == 2
    err = capsys.readouterr().err
    assert f"was trained on is missing or was moved: {data} (--data rel.txt)" in err
    assert "is this a `tfrec-attn train` run directory" not in err


def test_runs_without_a_recorded_path_or_fingerprint_keep_working(run_dir, capsys,
                                                                 monkeypatch):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    del metrics["dataset"]["path"], metrics["dataset"]["fingerprint"]
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    assert evaluate_pipeline.main(["--run-dir", str(run_dir)] + EVALUATE) == 2  # not here
    assert ("missing or was moved: rel.txt; --data was recorded as given, relative to the "
            "directory train ran in" in capsys.readouterr().err)
    monkeypatch.chdir(run_dir.parent)  # where train ran
    assert evaluate_pipeline.main(["--run-dir", str(run_dir)] + EVALUATE) == 0


def test_a_reload_that_differs_from_the_run_is_a_visible_warning(run_dir, capsys):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["test"]["ndcg@10"] += 0.25
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    assert evaluate_pipeline.main(["--run-dir", str(run_dir)] + EVALUATE) == 0
    err = capsys.readouterr().err
    assert "warning: full protocol: the reloaded model of" in err
    assert "differs from its metrics.json by up to 0.25" in err


def test_a_movielens_directory_is_fingerprinted_by_the_ratings_file_read(tmp_path):
    (tmp_path / "u.data").write_text("1\t10\t5\t300\n")
    (tmp_path / "u.item").write_text("10|Toy Story\n")
    before = data_fingerprint(tmp_path, "movielens")
    assert list(before) == ["u.data"] and before["u.data"]["bytes"] == 11
    (tmp_path / "u.item").write_text("10|Another title\n")  # not read: no change
    assert data_fingerprint(tmp_path, "movielens") == before
    (tmp_path / "u.data").write_text("1\t10\t4\t300\n")
    assert data_fingerprint(tmp_path, "movielens")["u.data"] != before["u.data"]
