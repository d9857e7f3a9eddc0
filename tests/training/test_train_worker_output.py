"""`tfrec-attn train` on a multi-worker cluster: only the chief names the files it wrote."""

import json

import pytest

from pipelines import train as train_pipeline

CLUSTER = {"worker": ["localhost:1", "localhost:2"]}


def _fake_run(monkeypatch, tmp_path):
    """Training replaced by what a worker returns: the metrics and a (temporary) export."""
    metrics = {"test": {}, "baselines": {}, "export_path": str(tmp_path / "tmp_export" / "1")}
    monkeypatch.setattr(train_pipeline, "run_training", lambda options: metrics)
    monkeypatch.setattr(train_pipeline, "results_table", lambda metrics: "table")


@pytest.mark.parametrize("task, chief", [({"type": "worker", "index": 0}, True),
                                         ({"type": "worker", "index": 1}, False)])
def test_only_the_chief_prints_the_metrics_and_export_paths(task, chief, tmp_path, monkeypatch,
                                                            capsys):
    _fake_run(monkeypatch, tmp_path)
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": CLUSTER, "task": task}))
    argv = ["--strategy", "multi-worker", "--output", str(tmp_path / "run")]
    assert train_pipeline.main(argv) == 0
    out = capsys.readouterr().out
    assert ("metrics: " in out) == chief
    assert ("tmp_export" in out) == chief
    if not chief:
        assert "worker:1 is not the chief: it wrote no outputs" in out


def test_single_process_runs_print_their_paths(tmp_path, monkeypatch, capsys):
    _fake_run(monkeypatch, tmp_path)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert train_pipeline.main(["--output", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert f"metrics: {tmp_path / 'run'}/metrics.json" in out and "tmp_export" in out
