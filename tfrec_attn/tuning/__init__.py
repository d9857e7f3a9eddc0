"""Hyper-parameter search with keras-tuner: the space, the hypermodel, tuners, the search run."""

from tfrec_attn.tuning.hypermodel import OBJECTIVE, SASRecHyperModel
from tfrec_attn.tuning.report import best_config, plot_trials, trial_records, tuning_table
from tfrec_attn.tuning.run import TuneOptions, run_tuning
from tfrec_attn.tuning.search_space import DEFAULT_SEARCH_SPACE, TUNABLE, SearchSpace
from tfrec_attn.tuning.settings import TuneSettingsError, trial_settings
from tfrec_attn.tuning.tuners import TUNERS, SearchStopped, TfKerasTrials, make_tuner

__all__ = [
    "DEFAULT_SEARCH_SPACE",
    "OBJECTIVE",
    "SASRecHyperModel",
    "SearchSpace",
    "SearchStopped",
    "TUNABLE",
    "TUNERS",
    "TfKerasTrials",
    "TuneOptions",
    "TuneSettingsError",
    "best_config",
    "make_tuner",
    "plot_trials",
    "run_tuning",
    "trial_records",
    "trial_settings",
    "tuning_table",
]
