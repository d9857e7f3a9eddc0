"""Every config shipped in `pipelines/configs/` parses into the options it documents (keys
and model settings a run accepts), and a config for data outside the repository asks for
`--data` by name instead of running without it."""

from pathlib import Path

import pytest

from pipelines import train as train_pipeline

CONFIGS = Path(__file__).resolve().parents[2] / "pipelines" / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_parses(path):
    """Synthetic configs as they are; file configs with their own data path or a stand-in."""
    options = train_pipeline.options_from_args(["--config", str(path)]
                                               + ([] if "format: synthetic" in path.read_text()
                                                  or "\ndata:" in path.read_text()
                                                  else ["--data", "data.txt"]))
    assert options.format == "synthetic" or options.data


def test_the_games_config_holds_the_papers_settings_and_needs_data(tmp_path, capsys):
    games = CONFIGS / "games.yaml"
    options = train_pipeline.options_from_args(["--config", str(games), "--data", "Video.txt"])
    assert (options.format, options.eval_protocol, options.max_train_minutes) == (
        "sasrec", "sampled-100", 15)
    assert {key: options.model[key] for key in ("max_len", "dim", "num_blocks")} == {
        "max_len": 50, "dim": 50, "num_blocks": 2}
    out = tmp_path / "run"
    assert train_pipeline.main(["--config", str(games), "--output", str(out)]) == 2
    assert "--data is required for format 'sasrec'" in capsys.readouterr().err
    assert not out.exists()
