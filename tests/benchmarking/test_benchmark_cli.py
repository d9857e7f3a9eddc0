"""`python -m pipelines.benchmark`: bad flags are usage errors (exit 2, the flag named) found
before any benchmark runs; a `ValueError` raised while one runs keeps its traceback."""

import pytest

from pipelines import benchmark
from tfrec_attn.benchmarking import attention_cli, speed
from tfrec_attn.data import DataError


class Internal(ValueError):
    """A bug deep inside a benchmark, which must not be reported as a usage problem."""


def _raise(error):
    def runner(*args, **kwargs):
        raise error
    return runner


@pytest.fixture
def no_benchmark(monkeypatch):
    """Every runner fails the test if it is reached: the flags must be rejected before."""
    for module, name in ((benchmark, "run_training"), (benchmark, "run_families"),
                         (attention_cli, "run_benchmark"), (speed, "measure_speed")):
        monkeypatch.setattr(module, name, _raise(AssertionError(f"{name} ran")))


def _usage_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["variants", "--kinds", "full,nope"], "--kinds: unknown ['nope']"),
    (["variants", "--kinds", "full,,local"], "--kinds must be distinct attention kinds"),
    (["variants", "--kinds", "full,full"], "Received: --kinds 'full,full'"),
    (["variants", "--", "--epochs", "0"], "train flags after --: epochs must be a positive int"),
    (["variants", "--", "--dim", "0"], "train flags after --: dim must be a positive int"),
    (["variants", "--", "--format", "csv"], "train flags after --: --data is required"),
    (["variants", "--", "--format", "csv", "--data", "{tmp}/none.csv"],
     "--data '{tmp}/none.csv' does not exist"),
    (["variants", "--", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["families", "--data", "{tmp}/nope"], "--data '{tmp}/nope' does not exist"),
    (["families", "--", "--epochs", "1"], "train flags after -- are for the variants command"),
    (["attention", "--heads", "3"], "heads must be positive divisors"),
])
def test_bad_flags_exit_2_naming_the_flag(tmp_path, capsys, no_benchmark, argv, message):
    argv = [a.format(tmp=tmp_path) for a in argv]
    if "--output" not in argv:
        argv[1:1] = ["--output", str(tmp_path / "out")]
    assert message.format(tmp=tmp_path) in _usage_error(argv, capsys)


@pytest.mark.parametrize("command", ["variants", "families", "speed", "attention"])
def test_output_that_is_a_file_is_a_usage_error(tmp_path, capsys, no_benchmark, command):
    (tmp_path / "file").write_text("x")
    err = _usage_error([command, "--output", str(tmp_path / "file")], capsys)
    assert "--output must be a directory" in err
    assert (tmp_path / "file").read_text() == "x"  # never overwritten


def test_unreadable_data_file_is_a_usage_error_naming_data(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(benchmark, "run_families",
                        _raise(DataError(tmp_path / "ratings.dat", "no columns")))
    err = _usage_error(["families", "--output", str(tmp_path), "--data", str(tmp_path)], capsys)
    assert "--data:" in err and "no columns" in err


@pytest.mark.parametrize("argv, module, runner", [
    (["variants", "--kinds", "full", "--output", "{tmp}"], benchmark, "run_training"),
    (["families", "--output", "{tmp}", "--quick"], benchmark, "run_families"),
    (["attention", "--output", "{tmp}", "--quick", "--no-memory"], attention_cli,
     "run_benchmark"),
])
def test_internal_value_errors_propagate(tmp_path, monkeypatch, argv, module, runner):
    monkeypatch.setattr(module, runner, _raise(Internal("deep inside the benchmark")))
    with pytest.raises(Internal, match="deep inside the benchmark"):
        benchmark.main([a.format(tmp=tmp_path) for a in argv])


def test_attention_child_entry_point_lets_internal_errors_propagate(tmp_path, monkeypatch,
                                                                   capsys):
    monkeypatch.setattr(attention_cli, "run_benchmark", _raise(Internal("deep inside")))
    with pytest.raises(Internal, match="deep inside"):
        attention_cli.main(["--output", str(tmp_path), "--quick", "--no-memory"])
    with pytest.raises(SystemExit) as exit_info:
        attention_cli.main(["--output", str(tmp_path), "--variants", "nope"])
    assert exit_info.value.code == 2 and "variants: unknown" in capsys.readouterr().err
