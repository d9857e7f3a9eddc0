"""`train --overwrite` that fails (bad data, a check after the data are read, a crash while
training) leaves the finished run it was to replace as it was, the files derived from it
included (`run_options.replacing_run`, around every run type's body in `run_under_strategy`)."""

import json
import shutil
from pathlib import Path

import pytest

from pipelines import train as train_pipeline
from tfrec_attn._keras import keras
from tfrec_attn.training import TrainOptions, run_training
from tfrec_attn.training.run import run_under_strategy
from tfrec_attn.training.run_options import (
    DERIVED_RUN_FILES,
    REPLACED_RUN_DIR,
    settle_replaced_run,
)

# 40 items: too few for the 100 negatives of --eval-protocol sampled-100.
TINY = ["--format", "synthetic", "--synthetic-users", "60", "--synthetic-items", "40",
        "--synthetic-length", "8", "--max-len", "8", "--dim", "8", "--blocks", "1",
        "--epochs", "1", "--verbose", "0", "--export-root", ""]


def _snapshot(out: Path) -> dict:
    return {p.relative_to(out).as_posix(): p.read_bytes()
            for p in sorted(out.rglob("*")) if p.is_file()}


def _add_derived_files(out: Path) -> None:
    """What `tfrec-attn evaluate` / `optimize` write into a finished run."""
    (out / "evaluation.json").write_text('{"of": "the old run"}')
    (out / "optimize.json").write_text("{}")
    (out / "optimize.png").write_bytes(b"png")
    (out / "optimized" / "pruned").mkdir(parents=True)
    (out / "optimized" / "pruned" / "weights").write_bytes(b"w")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("overwrite") / "run"
    assert train_pipeline.main(TINY + ["--output", str(out)]) == 0
    _add_derived_files(out)
    assert (out / "tensorboard").is_dir()
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    return out


def _bad_data(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("1 5\n1\n1 7\n")
    return ["--format", "sasrec", "--data", str(bad), "--epochs", "1", "--verbose", "0",
            "--export-root", ""], "expected 2 fields, got 1"


def _sampled_protocol_too_large(tmp_path):
    return TINY + ["--eval-protocol", "sampled-100"], "--eval-protocol sampled-100 samples 100"


@pytest.mark.parametrize("failure", [_bad_data, _sampled_protocol_too_large])
def test_a_failed_overwrite_keeps_the_old_run_and_its_derived_files(run_copy, tmp_path, capsys,
                                                                   failure):
    before = _snapshot(run_copy)
    argv, message = failure(tmp_path)
    assert train_pipeline.main(argv + ["--output", str(run_copy), "--overwrite"]) == 2
    assert message in capsys.readouterr().err
    assert _snapshot(run_copy) == before
    assert not (run_copy / REPLACED_RUN_DIR).exists()


class Crash(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise RuntimeError("crashed while training")


def test_a_crash_while_training_puts_the_old_tensorboard_logs_back(run_copy):
    """The failed run wrote its own `tensorboard/` before it crashed; the old run's logs,
    which describe the `metrics.json` still there, replace them."""
    before = _snapshot(run_copy)
    options = TrainOptions(output=str(run_copy), overwrite=True, synthetic_users=60,
                           synthetic_items=40, synthetic_length=8.0, epochs=1, verbose=0,
                           export_root=None, model={"max_len": 8, "dim": 8, "num_blocks": 1})
    with pytest.raises(RuntimeError, match="crashed while training"):
        run_training(options, callbacks=[Crash()])
    assert _snapshot(run_copy) == before
    assert not (run_copy / REPLACED_RUN_DIR).exists()


def test_a_failure_after_the_new_weights_are_saved_puts_the_old_run_back(run_copy, tmp_path,
                                                                        monkeypatch):
    """The export runs after the new checkpoint, vocabulary and curves are written and before
    metrics.json: failing there must not leave new weights beside the old metrics.json."""
    before = _snapshot(run_copy)

    def failing_export(*args, **kwargs):
        assert (run_copy / "checkpoint").is_dir()  # the new run's weights are on disk by now
        raise RuntimeError("export failed")

    monkeypatch.setattr("tfrec_attn.training.run.export_saved_model", failing_export)
    options = TrainOptions(output=str(run_copy), overwrite=True, synthetic_users=60,
                           synthetic_items=40, synthetic_length=8.0, epochs=1, verbose=0,
                           seed=5, export_root=str(tmp_path / "models"),
                           model={"max_len": 8, "dim": 8, "num_blocks": 1})
    with pytest.raises(RuntimeError, match="export failed"):
        run_training(options)
    assert _snapshot(run_copy) == before
    assert not (run_copy / REPLACED_RUN_DIR).exists()


def test_a_file_where_the_export_goes_is_refused_before_training(run_copy, tmp_path, capsys):
    root = tmp_path / "models"
    root.mkdir()
    (root / "small").write_text("x")
    before = _snapshot(run_copy)
    argv = TINY[:-2] + ["--export-root", str(root), "--name", "small", "--output",
                        str(run_copy), "--overwrite"]
    assert train_pipeline.main(argv) == 2
    err = capsys.readouterr().err
    assert f"export_root/name must be a directory, but {root / 'small'} exists" in err
    assert "Traceback" not in err
    assert _snapshot(run_copy) == before


def test_an_export_root_inside_the_run_directory_is_left_alone(run_copy, tmp_path):
    """`--export-root` may sit inside `--output` and hold other models: replacing the run must
    not take it along (it is not one of the run's own files)."""
    root = run_copy / "export"
    (root / "other" / "1").mkdir(parents=True)
    (root / "other" / "1" / "saved_model.pb").write_bytes(b"another model")
    options = TrainOptions(output=str(run_copy), overwrite=True, synthetic_users=60,
                           synthetic_items=40, synthetic_length=8.0, epochs=1, verbose=0,
                           export_root=str(root), name="mine",
                           model={"max_len": 8, "dim": 8, "num_blocks": 1})
    run_training(options)
    assert (root / "other" / "1" / "saved_model.pb").read_bytes() == b"another model"
    assert (root / "mine" / "1" / "saved_model.pb").exists()


def test_a_run_being_replaced_is_not_read_until_settled(run_copy, capsys):
    """What a `train --overwrite` killed after writing its weights leaves: new files beside the
    old metrics.json. evaluate / optimize refuse it, saying how to settle it, and read the old
    run again once it is settled."""
    from pipelines import evaluate as evaluate_pipeline
    from tfrec_attn.training import load_run
    from tfrec_attn.training.run_options import replacing_run

    before = _snapshot(run_copy)

    class Killed(BaseException):
        pass

    with pytest.raises(Killed):  # the process "dies" inside replacing_run: nothing restored
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("tfrec_attn.training.run_options._restore_replaced_run",
                          lambda out: (_ for _ in ()).throw(Killed()))
            with replacing_run(run_copy):
                (run_copy / "checkpoint").mkdir()
                (run_copy / "checkpoint" / "weights").write_bytes(b"new weights")
                raise RuntimeError("killed")
    assert (run_copy / REPLACED_RUN_DIR).is_dir()
    assert (run_copy / "checkpoint" / "weights").read_bytes() == b"new weights"
    with pytest.raises(ValueError, match="is being replaced by `tfrec-attn train --overwrite`"):
        load_run(run_copy)
    argv = ["--run-dir", str(run_copy), "--bootstrap", "0", "--output", str(run_copy / "ev")]
    assert evaluate_pipeline.main(argv) == 2
    assert "settle_replaced_run" in capsys.readouterr().err
    settle_replaced_run(run_copy)  # metrics.json unchanged: the old run comes back
    assert _snapshot(run_copy) == before
    assert load_run(run_copy).metrics == json.loads((run_copy / "metrics.json").read_text())


def _write_metrics(out: Path, run: str) -> None:
    (out / "metrics.json").write_text(json.dumps({"run": run}))


@pytest.mark.parametrize("model_type", list(train_pipeline.MODEL_TYPES))
def test_every_run_type_deletes_the_derived_files_only_once_it_wrote_metrics(tmp_path,
                                                                             model_type):
    out = tmp_path / "run"
    out.mkdir()
    _write_metrics(out, "old")
    _add_derived_files(out)
    (out / "tensorboard").mkdir()
    seen = {}

    def run(options, strategy, out, export_root, callbacks):
        seen["during"] = sorted(p.name for p in out.iterdir())
        _write_metrics(out, "new")
        return {"run": "new"}

    options = train_pipeline.options_from_args(
        ["--model", model_type, "--output", str(out), "--overwrite", "--export-root", ""])
    assert run_under_strategy(options, run) == {"run": "new"}
    assert seen["during"] == [REPLACED_RUN_DIR, "metrics.json"]  # set aside, not deleted
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json"]
    assert not set(DERIVED_RUN_FILES) & {p.name for p in out.iterdir()}


@pytest.mark.parametrize("newer_run_finished", [False, True])
def test_a_set_aside_left_by_a_killed_run_is_settled(tmp_path, newer_run_finished):
    """A process killed while training cannot put the files back; the next run (or
    `settle_replaced_run`) does, unless a newer run wrote its metrics.json since."""
    out = tmp_path / "run"
    (out / REPLACED_RUN_DIR).mkdir(parents=True)
    _write_metrics(out / REPLACED_RUN_DIR, "old")
    (out / REPLACED_RUN_DIR / "evaluation.json").write_text("of the old run")
    _write_metrics(out, "new" if newer_run_finished else "old")
    settle_replaced_run(out)
    names = sorted(p.name for p in out.iterdir())
    assert names == (["metrics.json"] if newer_run_finished
                     else ["evaluation.json", "metrics.json"])
