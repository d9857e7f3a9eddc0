"""`python -m pipelines.benchmark variants`: one train run per attention kind, one JSON."""

import json

import pytest

from pipelines import benchmark

TINY = ["--format", "synthetic", "--synthetic-users", "80", "--synthetic-items", "40",
        "--synthetic-length", "10", "--max-len", "8", "--dim", "8", "--blocks", "1",
        "--epochs", "1", "--verbose", "0"]


def test_variants_writes_one_record_per_kind(tmp_path, capsys):
    assert benchmark.main(["variants", "--kinds", "full,local", "--output", str(tmp_path),
                           "--"] + TINY) == 0
    record = json.loads((tmp_path / "variants.json").read_text())
    assert set(record["results"]) == {"full", "local"}
    for result in record["results"].values():
        assert 0.0 <= result["ndcg@10"] <= result["hr@10"] <= 1.0
        assert result["epochs"] == 1 and result["median_epoch_seconds"] > 0
        assert result["refit"] is True  # the train command's default, recorded per kind
    assert (tmp_path / "local" / "metrics.json").exists()
    assert json.loads((tmp_path / "local" / "metrics.json").read_text())["model"][
        "attention"] == "local"
    # A rerun into the same --output is refused before anything trains, naming the run
    # directory; `--overwrite` among the train flags replaces the runs.
    before = (tmp_path / "variants.json").read_text()
    with pytest.raises(SystemExit):
        benchmark.main(["variants", "--kinds", "full,local", "--output", str(tmp_path), "--"]
                       + TINY)
    assert "holds a finished run" in capsys.readouterr().err
    assert (tmp_path / "variants.json").read_text() == before
    assert benchmark.main(["variants", "--kinds", "local", "--output", str(tmp_path), "--"]
                          + TINY + ["--overwrite"]) == 0


def test_unknown_kind_is_rejected(tmp_path, capsys):
    with pytest.raises(SystemExit):
        benchmark.main(["variants", "--kinds", "full,nope", "--output", str(tmp_path), "--"]
                       + TINY)
    assert "nope" in capsys.readouterr().err


@pytest.mark.parametrize("flags", [["--attention", "local"], ["--attention=local"],
                                   ["--output", "elsewhere"], ["--export-root", "models"]])
def test_train_flags_the_variants_benchmark_sets_are_refused(tmp_path, capsys, monkeypatch,
                                                             flags):
    def must_not_train(*args):
        raise AssertionError("variants ran")

    monkeypatch.setattr(benchmark, "variants", must_not_train)
    argv = ["variants", "--output", str(tmp_path / "v"), "--", "--format", "synthetic",
            "--epochs", "1", *flags]
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert flags[0].split("=")[0] in err and "set by the variants benchmark" in err
