"""Bad input to `tfrec-attn train` is a usage error (exit 2) naming the flag or YAML key, found
before any training and leaving no output behind."""

import numpy as np
import pytest

from pipelines import train as train_pipeline

TINY = ["--format", "synthetic", "--synthetic-users", "30", "--synthetic-items", "20",
        "--synthetic-length", "6", "--max-len", "5", "--dim", "8",
        "--verbose", "0", "--epochs", "1", "--export-root", ""]


def _usage_error(argv, tmp_path, capsys) -> str:
    """Runs the train command into `tmp_path/out`; checks exit 2, no traceback and no output
    directory, and returns the message."""
    out = tmp_path / "out"
    assert train_pipeline.main([*argv, "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tfrec-attn train: ") and "Traceback" not in err
    assert not out.exists()
    return err


def _sequences_file(path, users: int, items: int, length: int):
    rng = np.random.default_rng(0)
    lines = [f"u{u} " + " ".join(f"i{i}" for i in rng.choice(items, length, replace=False))
             for u in range(users)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_sampled_protocol_on_a_small_catalogue_is_refused_before_training(tmp_path, capsys):
    data = _sequences_file(tmp_path / "seq.txt", users=30, items=40, length=8)
    err = _usage_error(["--data", str(data), "--format", "sequences", "--eval-protocol",
                        "sampled-100", "--max-len", "5", "--dim", "8", "--epochs", "1",
                        "--verbose", "0", "--export-root", ""], tmp_path, capsys)
    assert "--eval-protocol sampled-100 samples 100 negatives" in err
    assert "--eval-protocol full" in err


@pytest.mark.parametrize("model", ["sasrec", "din", "autoencoder"])
@pytest.mark.parametrize("events, extra, kept", [
    (2, [], "no user has the 3 events --min-events asks for (5 users, all dropped)"),
    (6, ["--min-events", "100"], "no user has the 100 events --min-events asks for (5 users"),
])
def test_data_whose_users_min_events_drops_names_the_file(tmp_path, capsys, model, events,
                                                           extra, kept):
    """Once a raw concatenate error (SASRec) or a message about -1 items (DIN) / 0 items
    (autoencoder)."""
    data = tmp_path / "log.txt"
    data.write_text("".join(f"u{u} i{u * 10 + e}\n" for u in range(5) for e in range(events)))
    err = _usage_error(["--model", model, "--data", str(data), "--format", "sasrec",
                        "--max-len", "5", "--dim", "8", "--epochs", "1", "--verbose", "0",
                        "--export-root", "", *extra], tmp_path, capsys)
    assert f"--data {data}" in err and kept in err


@pytest.mark.parametrize("extra", [
    [],
    # DIN's was a traceback from its dataset ("sequences gave no examples")
    ["--model", "din", "--negatives", "1", "--valid-negatives", "5", "--test-negatives", "5"],
])
def test_data_without_trainable_users_names_the_file(tmp_path, capsys, extra):
    data = tmp_path / "log.txt"  # kept, but 1 training item each after the split
    data.write_text("".join(f"u{u} i{u * 10 + e}\n" for u in range(5) for e in range(3)))
    err = _usage_error(["--data", str(data), "--format", "sasrec", "--max-len", "5", "--dim",
                        "8", "--epochs", "1", "--verbose", "0", "--export-root", "", *extra],
                       tmp_path, capsys)
    assert f"--data {data}" in err and "no user to train on" in err
    assert "5 users kept and 0 dropped" in err


@pytest.mark.parametrize("model", ["sasrec", "din", "autoencoder", "policy"])
@pytest.mark.parametrize("flag, value, name", [
    ("--lr", "-0.1", "learning_rate"),
    ("--lr", "0", "learning_rate"),
    ("--patience", "-2", "patience"),
    ("--synthetic-users", "0", "synthetic_users"),
    ("--synthetic-length", "-3", "synthetic_length"),
])
def test_out_of_range_numbers_are_refused(tmp_path, capsys, model, flag, value, name):
    err = _usage_error(["--model", model, flag, value, "--epochs", "1", "--export-root", ""],
                       tmp_path, capsys)
    assert f"{name}=" in err


@pytest.mark.parametrize("argv, name", [
    (["--l2", "-1"], "l2"),  # sasrec: l2 diverges
    (["--model", "din", "--l2", "-1"], "l2"),
    (["--valid-users", "0"], "valid_users"),  # sasrec: 0 would silently validate everyone
    (["--synthetic-items", "1"], "synthetic_items"),
    (["--model", "din", "--synthetic-items", "1"], "synthetic_items"),
    (["--model", "autoencoder", "--synthetic-items", "1"], "synthetic_items"),
])
def test_other_out_of_range_options_are_refused(tmp_path, capsys, argv, name):
    err = _usage_error([*TINY, *argv], tmp_path, capsys)
    assert f"{name}=" in err and "Received" in err


@pytest.mark.parametrize("yaml_text, message", [
    ("learning_rate: fast\n", "learning_rate must be a number. Received: learning_rate='fast'"),
    ("model:\n  l2: lots\n", "l2 must be a number"),
    ("model: 5\n", "model must be a mapping"),
    ("max_len: 20\n", "max_len is a model setting: put it under model:"),
    ("model_type: din\npooling: mean\n", "pooling is a model setting: put it under model:"),
])
def test_bad_yaml_values_name_the_key(tmp_path, capsys, yaml_text, message):
    config = tmp_path / "c.yaml"
    config.write_text(yaml_text)
    err = _usage_error(["--config", str(config), *TINY], tmp_path, capsys)
    assert message in err and str(config) in err


@pytest.mark.parametrize("yaml_text, field, value", [
    ("learning_rate: 1e-3\n", "learning_rate", 1e-3),  # PyYAML 1.1 reads '1e-3' as a string
    ("ema_decay: 9e-1\n", "ema_decay", 0.9),
])
def test_yaml_numeric_strings_become_floats(tmp_path, yaml_text, field, value):
    config = tmp_path / "c.yaml"
    config.write_text(yaml_text + "model:\n  dropout: 1e-1\n")
    options = train_pipeline.options_from_args(["--config", str(config), *TINY])
    assert getattr(options, field) == value and options.model["dropout"] == 0.1


@pytest.mark.parametrize("tf_config, message", [
    (None, "is not set"),
    ("{cluster", "is not valid JSON"),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}',
     "task index 2"),
    # a valid cluster whose peers never start: refused before waiting for them
    ('{"cluster": {"worker": ["localhost:1", "localhost:2"]}, '
     '"task": {"type": "worker", "index": 0}}', "divisible by the 2 machines"),
])
def test_bad_tf_config_is_a_usage_error(tmp_path, capsys, monkeypatch, tf_config, message):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    # an odd global batch: the valid cluster's case must fail its check, never reach the wait
    err = _usage_error([*TINY, "--strategy", "multi-worker", "--batch-size", "33"], tmp_path,
                       capsys)
    assert "TF_CONFIG" in err and message in err


def test_jit_compile_help_has_no_false_caveat():
    help_text = train_pipeline.parser().format_help()
    assert "not for bce" not in help_text


def test_catalogue_smaller_than_the_largest_cutoff_names_the_file(tmp_path, capsys):
    """12 items trained an epoch, then failed in the evaluation: max(ks)=20 exceeds 12."""
    data = tmp_path / "log.txt"
    data.write_text("".join(f"u{u} i{(u + e) % 12}\n" for u in range(30) for e in range(6)))
    err = _usage_error(["--data", str(data), "--format", "sasrec", "--max-len", "5", "--dim",
                        "8", "--epochs", "1", "--verbose", "0", "--export-root", ""],
                       tmp_path, capsys)
    assert f"--data {data}: 12 items" in err and "at least 20 items" in err


def test_attention_options_the_block_sets_are_a_usage_error(tmp_path, capsys):
    """Once a traceback from inside the model's construction."""
    config = tmp_path / "att.yaml"
    config.write_text("model:\n  attention_options:\n    num_heads: 2\n")
    err = _usage_error(["--config", str(config), *TINY], tmp_path, capsys)
    assert "attention_options must not set ['num_heads']" in err
