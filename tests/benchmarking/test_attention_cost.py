"""The attention cost benchmark: JSON schema, PNG, slope fitting, memory cap and bad arguments."""

import json
import os

import numpy as np
import pytest

from pipelines import benchmark
from tfrec_attn.benchmarking import attention_cli, attention_cost

RECORD_KEYS = {"variant", "length", "causal", "forward_ms", "train_step_ms", "peak_bytes"}
TINY = ["--lengths", "16", "32", "--repeats", "1", "--warmup", "0", "--batch-size", "2"]


def test_fit_slope_on_synthetic_numbers():
    lengths = [64, 128, 256, 512]
    assert attention_cost.fit_slope(lengths, [3.0 * n**2 for n in lengths]) == pytest.approx(2.0)
    # Only the largest half counts: a flat start does not bend the fitted slope.
    assert attention_cost.fit_slope(lengths, [5.0, 5.0, 4.0, 16.0]) == pytest.approx(2.0)
    # Odd count: the largest 2 of 3 points; 7 points -> largest 4.
    assert attention_cost.fit_slope([1, 2, 4], [9.0, 1.0, 2.0]) == pytest.approx(1.0)
    seven = [2**i for i in range(7)]
    values = [100.0, 1.0, 1.0] + [float(n) ** 1.5 for n in seven[3:]]
    assert attention_cost.fit_slope(seven, values) == pytest.approx(1.5)
    assert attention_cost.fit_slope([64], [1.0]) is None
    assert attention_cost.fit_slope([64, 128], [1.0, None]) is None


def test_ratios_against_full():
    records = [
        {"variant": "full", "length": 2048, "num_heads": 1, "forward_ms": 10.0,
         "train_step_ms": 40.0, "peak_bytes": 1000},
        {"variant": "local", "length": 2048, "num_heads": 1, "forward_ms": 2.0,
         "train_step_ms": 10.0, "peak_bytes": 250},
    ]
    speedups, memory = attention_cost.ratios_at(records, 2048)
    assert speedups == {"local": {"forward_ms": 5.0, "train_step_ms": 4.0}}
    assert memory == {"local": 0.25}


def test_writes_json_and_png(tmp_path, capsys):
    code = benchmark.main(["attention", "--output", str(tmp_path), "--variants", "full",
                           "keras_mha", "--no-memory", *TINY])
    assert code == 0
    result = json.loads((tmp_path / "attention.json").read_text())
    assert {"records", "slopes", "speedup_at_2048", "memory_ratio_at_2048", "settings",
            "machine", "memory_method"} <= set(result)
    assert len(result["records"]) == 4
    for record in result["records"]:
        assert RECORD_KEYS <= set(record)
        assert record["causal"] is True
        assert record["forward_ms"] > 0 and record["train_step_ms"] > 0
    assert set(result["slopes"]) == {"full", "keras_mha"}
    assert result["settings"]["lengths"] == [16, 32]
    assert (tmp_path / "attention.png").read_bytes()[:4] == b"\x89PNG"
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert len(lines) == 4 and "L=   32" in lines[-1]


def test_points_over_the_memory_cap_are_skipped_with_the_reason():
    settings = {"variants": ["full"], "heads": [1], "dim": 8, "lengths": [16, 64],
                "batch_size": 2, "repeats": 1, "warmup": 0, "seed": 0, "quick": False,
                "memory_cap_gb": 1e-4}  # ~105 kB: the dense bound at L=64 (327 kB) is over
    result = attention_cost.run_benchmark(settings, memory=False, log=lambda line: None)
    small, large = result["records"]
    assert small["train_step_ms"] > 0 and not small.get("skipped")
    assert large["train_step_ms"] is None and "exceeds the memory cap" in large["skipped"]


def test_peak_memory_measured_in_a_child_process(tmp_path, monkeypatch, capsys):
    """Without allocator statistics in this process (TensorFlow started without oneDNN and
    without TF_CPU_ALLOCATOR_USE_BFC), the command re-runs the benchmark in a child process with
    the variable set. Whether this process has them depends on oneDNN, so the test says it has
    not; the child's statistics are real."""
    monkeypatch.delenv(attention_cost.MEMORY_ENV, raising=False)
    monkeypatch.setattr(attention_cli, "memory_stats_available", lambda: False)
    monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    code = benchmark.main(["attention", "--output", str(tmp_path), "--variants", "full", *TINY])
    assert code == 0
    assert f"re-running in a child process with {attention_cost.MEMORY_ENV}=true" in (
        capsys.readouterr().out)
    result = json.loads((tmp_path / "attention.json").read_text())
    peaks = [r["peak_bytes"] for r in result["records"]]
    assert all(p > 0 for p in peaks) and peaks[1] > peaks[0]
    assert "get_memory_info" in result["memory_method"]


@pytest.mark.parametrize("args, message", [
    (["--variants", "nope"], "variants"),
    (["--lengths", "0", "16"], "lengths must be positive"),
    (["--heads", "3"], "heads must be positive divisors"),
])
def test_bad_arguments_are_named(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(["attention", "--output", str(tmp_path), *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_unimportable_variant_is_skipped_with_a_warning(monkeypatch):
    monkeypatch.setattr(attention_cost, "FACTORY_MODULE", "tfrec_attn.layers.no_such_module")
    lines = []
    usable, skipped = attention_cost.resolve_variants(["full", "local"], log=lines.append)
    assert usable == ["full"]
    assert "ModuleNotFoundError" in skipped["local"]
    assert lines and "skipping variant 'local'" in lines[0]


def test_left_padding_mask():
    x, mask = attention_cost.padded_inputs(4, 16, 8, seed=1)
    mask = mask.numpy()
    assert x.shape == (4, 16, 8) and mask[0].all()
    for row in mask:  # padding only on the left: once True, stays True
        assert np.all(np.diff(row.astype(int)) >= 0) and row[-1]
