"""What a search's trials measure: the run options recorded in its directory, checked on resume.

A trial's score depends on the data, the split, the validation protocol and how it trains. A
search records these options next to its trials (`DIR/<tuner>/trial_settings.json`) and a
resume with other values is refused: its trials would not be comparable with the earlier ones,
and the best config would pair an old trial with the new options. A search is also one
tuner's: a rerun with another `--tuner` on the same output is refused (`check_tuner`), not
started beside the first one to overwrite its report. The search space, `max_trials`, the time
budgets and the verbosity may change between resumes.
"""

import json
import os
import shutil
import warnings
from pathlib import Path

from tfrec_attn.training.run import TrainOptions, read_json
from tfrec_attn.training.run_options import data_fingerprint
from tfrec_attn.tuning.tuners import TUNERS

SETTINGS_FILE = "trial_settings.json"
# Every trial depends on these `TrainOptions`; the data source adds its own (see below).
TRIAL_OPTIONS = ("min_events", "seed", "eval_protocol", "valid_users", "epochs",
                 "batch_size", "sliding", "patience", "learning_rate", "model")
SYNTHETIC_OPTIONS = ("synthetic_users", "synthetic_items", "synthetic_length")


class TuneSettingsError(ValueError):
    """A resume whose trial settings differ from those the search in its directory ran with."""


def trial_settings(train: TrainOptions) -> dict:
    """The options every trial of a search run with `train` depends on, as JSON values.

    Example:
    >>> settings = trial_settings(TrainOptions(synthetic_users=200, epochs=3))
    >>> settings["format"], settings["synthetic_users"], settings["epochs"], "data" in settings
    ('synthetic', 200, 3, False)
    """
    settings = {"format": train.format}
    if train.format == "synthetic":
        settings.update((name, getattr(train, name)) for name in SYNTHETIC_OPTIONS)
    else:  # the file's bytes too: the same path with other contents gives other trials
        settings["data"] = os.path.abspath(train.data)
        settings["on_error"] = train.on_error  # which of its lines are read
        if os.path.exists(settings["data"]):  # else loading the data names it
            settings["data_fingerprint"] = data_fingerprint(settings["data"], train.format)
    settings.update((name, getattr(train, name)) for name in TRIAL_OPTIONS)
    return json.loads(json.dumps(settings))  # as read back from the file (tuples -> lists)


def check_resume(project_dir: str | Path, settings: dict) -> None:
    """Raises `TuneSettingsError` if the search in `project_dir` recorded other `settings`.

    Reads only: a directory without recorded settings passes, a fresh search silently and one
    whose trials predate the record with a warning (nothing to check them against; the
    settings of this resume are recorded for the next).
    """
    path = Path(project_dir) / SETTINGS_FILE
    if not path.exists():
        if any(Path(project_dir).glob("trial_*")):
            warnings.warn(f"{project_dir} holds trials without recorded settings (a search from "
                          "before they were recorded): this resume cannot be checked against "
                          "them, so its data and training options must match theirs.",
                          stacklevel=2)
        return
    recorded = read_json(path, "The search's recorded settings")
    for key in ("data_fingerprint", "on_error"):  # recorded before these were: not compared
        if key not in recorded:
            settings = {k: v for k, v in settings.items() if k != key}
    missing = "(not set)"
    differ = [f"{name}: {recorded.get(name, missing)!r} there, {settings.get(name, missing)!r} now"
              for name in sorted(set(recorded) | set(settings))
              if recorded.get(name, missing) != settings.get(name, missing)]
    if differ:
        raise TuneSettingsError(
            f"{Path(project_dir).parent} holds a search run with other data or training "
            f"settings ({'; '.join(differ)}); its trials are not comparable with new ones. "
            f"Use a new --output (or --overwrite to discard that search).")


def other_searches(out: str | Path, tuner: str) -> list[str]:
    """The tuners other than `tuner` whose search (keras-tuner's `out/<tuner>`) is in `out`."""
    return [kind for kind in TUNERS if kind != tuner
            and (Path(out) / kind).is_dir() and any((Path(out) / kind).iterdir())]


def check_tuner(out: str | Path, tuner: str) -> None:
    """Raises `TuneSettingsError` if `out` holds the search of another tuner than `tuner`
    (reads only).

    Example:
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp())
    >>> (out / "bayesian" / "trial_0").mkdir(parents=True)
    >>> check_tuner(out, "bayesian")
    >>> check_tuner(out, "random")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tfrec_attn...TuneSettingsError: ... holds a bayesian search (tuner: 'bayesian' there, ...
    """
    others = other_searches(out, tuner)
    if others:
        raise TuneSettingsError(
            f"{out} holds a {others[0]} search (tuner: {others[0]!r} there, {tuner!r} now); "
            f"rerun with --tuner {others[0]} to resume it, or use a new --output (or "
            "--overwrite to discard that search).")


def discard_other_searches(out: str | Path, tuner: str) -> None:
    """Deletes the searches of tuners other than `tuner` in `out` (what `--overwrite` means)."""
    for kind in other_searches(out, tuner):
        shutil.rmtree(Path(out) / kind)


def record_settings(project_dir: str | Path, settings: dict) -> None:
    """Writes `settings` to `project_dir` unless it already holds recorded settings."""
    path = Path(project_dir) / SETTINGS_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
