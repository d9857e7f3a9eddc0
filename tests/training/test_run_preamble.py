"""The preamble every `tfrec-attn train` run type shares (`run.run_under_strategy`): seed, the
models.config pre-check, the run directory and the export directory, before any data is read."""

from pathlib import Path

import numpy as np
import pytest

from pipelines import train as train_pipeline
from tfrec_attn.training import TrainOptions
from tfrec_attn.training.run import run_under_strategy

CORRUPT = {"truncated": b"model_config_list { config {", "not utf-8": b"\xff\xfe\x00models"}


@pytest.mark.parametrize("corruption", list(CORRUPT))
@pytest.mark.parametrize("model_type", list(train_pipeline.MODEL_TYPES))
def test_unreadable_models_config_fails_before_training(tmp_path, capsys, model_type,
                                                        corruption):
    path = tmp_path / "models" / "models.config"
    path.parent.mkdir()
    path.write_bytes(CORRUPT[corruption])
    argv = ["--model", model_type, "--output", str(tmp_path / "out"),
            "--export-root", str(path.parent), "--verbose", "0"]
    assert train_pipeline.main(argv) == 2
    assert (f"--export-root: {path} is not a TF Serving model config list"
            in capsys.readouterr().err)
    assert path.read_bytes() == CORRUPT[corruption]
    assert not (tmp_path / "out").exists()  # failed before the run directory, so no metrics


def test_run_gets_the_seeded_state_its_directory_and_the_export_root(tmp_path):
    seen = {}

    def run(options, strategy, out, export_root, callbacks):
        seen.update(out=out, made=out.is_dir(), export_root=export_root, callbacks=callbacks,
                    replicas=strategy.num_replicas_in_sync, draw=np.random.random())
        return {"metric": 1.0}

    options = TrainOptions(output=str(tmp_path / "out"), export_root=str(tmp_path / "models"),
                           seed=3, verbose=0)
    assert run_under_strategy(options, run, callbacks=("callback",)) == {"metric": 1.0}
    np.random.seed(3)
    assert seen == {"out": Path(options.output), "made": True,
                    "export_root": options.export_root, "callbacks": ("callback",),
                    "replicas": 1, "draw": np.random.random()}


@pytest.mark.parametrize("model_type", list(train_pipeline.MODEL_TYPES))
@pytest.mark.parametrize("flags, message", [
    (["--export-root", "{file}"], "export_root must be a directory, but {file} exists and"),
    (["--export-root", "{file}/models"], "export_root must be a directory, but {file} exists"),
    (["--output", "{file}"], "output must be a directory, but {file} exists and is not"),
    (["--name", "../escaped"], "name must be one directory name"),
    (["--name", "a/b"], "name must be one directory name"),
    (["--name", ""], "name must be one directory name"),
])
def test_unusable_output_paths_and_names_fail_before_training(tmp_path, capsys, model_type,
                                                              flags, message):
    afile = tmp_path / "afile"
    afile.write_text("kept")
    defaults = {"--output": str(tmp_path / "out"), "--export-root": str(tmp_path / "models")}
    defaults.update(zip(flags[::2], flags[1::2]))
    argv = ["--model", model_type, "--verbose", "0", "--epochs", "1"]
    for flag, value in defaults.items():
        argv += [flag, value.format(file=afile)]
    assert train_pipeline.main(argv) == 2
    assert message.format(file=afile) in capsys.readouterr().err
    assert afile.read_text() == "kept"
    assert not (tmp_path / "out").exists() and not (tmp_path / "escaped").exists()
    assert not (tmp_path / "models").exists()
