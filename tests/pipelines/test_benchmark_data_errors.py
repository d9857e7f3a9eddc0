"""`tfrec-attn benchmark`: what the train command reports as a usage error (a malformed --data
file, an option that does not fit the data) exits 2 in `variants` too, leaving no empty --output;
`speed`'s out-of-range sizes are usage errors found before anything runs."""

import pytest

from pipelines import benchmark
from tfrec_attn.benchmarking import speed

TINY = ["--max-len", "8", "--dim", "8", "--blocks", "1", "--epochs", "1", "--verbose", "0"]


def _usage_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_variants_with_a_malformed_data_file_is_a_usage_error(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_text("1 5\n1\n1 7\n")
    out = tmp_path / "variants"
    err = _usage_error(["variants", "--kinds", "full", "--output", str(out), "--",
                        "--format", "sasrec", "--data", str(bad)] + TINY, capsys)
    assert f"train flags after --: --data: {bad}, line 2: expected 2 fields, got 1" in err
    assert not out.exists()  # no empty --output left behind


def test_variants_with_an_option_that_does_not_fit_the_data_is_a_usage_error(tmp_path, capsys):
    out = tmp_path / "variants"
    out.mkdir()  # the user's own directory stays
    err = _usage_error(["variants", "--kinds", "full", "--output", str(out), "--",
                        "--synthetic-users", "30", "--synthetic-items", "20",
                        "--eval-protocol", "sampled-100"] + TINY, capsys)
    assert "train flags after --: --eval-protocol sampled-100 samples 100 negatives" in err
    assert out.is_dir() and not any(out.iterdir())


@pytest.mark.parametrize("flags, message", [
    (["--users", "0"], "--users must be an int >= 1. Received: --users 0"),
    (["--items", "1"], "--items must be an int >= 2. Received: --items 1"),
    (["--length", "0.5"], "--length (mean events per user) must be >= 1"),
    (["--batch-size", "0"], "--batch-size must be an int >= 1"),
    (["--throughput-steps", "0"], "--throughput-steps must be an int >= 1"),
    (["--blocks", "0"], "--max-len / --dim / --blocks: num_blocks must be a positive int"),
])
def test_speed_out_of_range_sizes_are_usage_errors(tmp_path, capsys, monkeypatch, flags,
                                                   message):
    def must_not_run(args):
        raise AssertionError("measure_speed ran")

    monkeypatch.setattr(speed, "measure_speed", must_not_run)
    err = _usage_error(["speed", "--output", str(tmp_path / "out")] + flags, capsys)
    assert message in err
    assert not (tmp_path / "out").exists()
