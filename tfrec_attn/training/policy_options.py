"""The options of one attention-policy run (`tfrec-attn train --model policy`), their checks
and defaults; `training.policy_run` runs them."""

from __future__ import annotations

import dataclasses

from tfrec_attn.models import AttentionPolicyConfig
from tfrec_attn.training.run_options import (
    RunOptions,
    check_data_source,
    check_int_at_least,
    check_positive_numbers,
    model_config,
)
from tfrec_attn.validation import check_optional_positive_int, check_positive_ints

# The families benchmark's policy_max_len / policy_dim (docs/BENCHMARKS.md 9); `top_k` (the
# correction's K) defaults to the run's `k`, as the benchmark's K = max(policy_ks) = 5.
MODEL_DEFAULTS = {"max_len": 10, "dim": 16}
# Logged-feedback files: no off-policy correction. Their evaluation is on-log (the rewarded hit),
# where uncorrected REINFORCE measured 1.8-2.9x the top-K correction's NDCG@10 on ML-100K
# (docs/BENCHMARKS.md 9f); the correction's gain is in reward under the new policy's own
# exposure, which only the simulator measures (section 9, 9e).
FILE_MODEL_DEFAULTS = {"correction": "none"}
VALID_SHARE, TEST_SHARE = 0.1, 0.2  # held-out users when valid_users / test_users are None
FIRST_VOCAB = 3  # the smallest catalogue (padding, OOV, one item): for checking model fields
FORMATS = ("synthetic", "movielens", "csv", "parquet")  # the ones with rewards
# Cap of the behaviour head's refit epochs (training.behaviour_refit; 0: none). On ML-100K's
# restored policy (docs/BENCHMARKS.md 9h) the refit lowered the validation users' behaviour
# loss 5.665 -> 5.615 (12 epochs, best 7; the cap not reached) and the test rounds' mean
# weights 0.94 / 1.47 -> 0.99 / 1.31 (policy / popularity); the policy's outputs are
# bit-identical, so it is on by default.
REFIT_EPOCHS = 30


@dataclasses.dataclass
class PolicyOptions(RunOptions):
    """Everything one attention-policy run needs; `pipelines/train.py --model policy` fills it
    from flags and a YAML file. Defaults are the families benchmark's `policy_*` settings
    (docs/BENCHMARKS.md 9: 2,000 users, 50 items, 5 logged events per user, max-len 10, dim 16,
    Adam 5e-3, batch 256, the top-K correction with K = 5). `epochs` is a cap for early
    stopping: 30 with patience 5 measured equal or better than the benchmark's 10 epochs with
    patience 3 on each of seeds 0-2 (mean test reward@5 0.414 against 0.408; 10 epochs cut two
    seeds short; docs/BENCHMARKS.md 9e). The fields every run type shares (`data`, `format`,
    `export_root`, `seed`, `strategy`, ...) are `RunOptions`'.

    `format` is `"synthetic"` (the simulator; the `synthetic_*` and `events_per_user` options)
    or a logged-feedback file at `data` (`"movielens"`: ratings, reward = rating >=
    `reward_threshold`, default 4.0; `"csv"` / `"parquet"`: columns `user`, `item`,
    `timestamp` and `reward_col`, default `"reward"`); users with fewer than `min_events` events
    are dropped. `valid_users` / `test_users` are counts of held-out users (`None`: 10% / 20% of
    the users, at least one each); the rest are logged (`events_per_user` each). `k` is the
    cut-off of the monitored and reported reward@k (reward@1 is reported too; files: HR@k and
    NDCG@k, the monitored one). `synthetic_length` is the mean history length of the
    simulator's users. `model` holds `AttentionPolicyConfig` fields (not `vocab_size`, which
    comes from the data) over `MODEL_DEFAULTS` (files: and `FILE_MODEL_DEFAULTS`, no
    correction); its `top_k` defaults to `k`. `behaviour_refit_epochs` caps the refit of the
    behaviour head alone after the policy's training (0: none; `None`: `REFIT_EPOCHS` with a
    head; `training.behaviour_refit`), with the run's `batch_size`, `learning_rate` and
    `patience`, early stopping on the validation users' logged rounds (the simulator logs them
    for it, `seed + 2`).
    """

    output: str = "runs/policy"
    name: str = "policy"
    epochs: int = 30
    batch_size: int = 256
    learning_rate: float = 5e-3
    patience: int = 5
    min_events: int = 3  # logged-feedback files: users with fewer events are dropped
    reward_threshold: float | None = None  # movielens: reward = rating >= it (None: 4.0)
    reward_col: str | None = None  # csv / parquet: the reward column (None: "reward")
    synthetic_users: int = 2000
    synthetic_items: int = 50
    synthetic_length: float = 8.0
    events_per_user: int = 5
    k: int = 5
    valid_users: int | None = None
    test_users: int | None = None
    behaviour_refit_epochs: int | None = None  # None: REFIT_EPOCHS with a behaviour head
    model: dict = dataclasses.field(default_factory=dict)  # AttentionPolicyConfig fields

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS} for the policy (it learns from "
                             f"rewards). Received: format={self.format!r}")
        check_data_source(self)
        self._check_reward_options()
        check_positive_ints(self, ("epochs", "batch_size", "k", "synthetic_users",
                                   "synthetic_items", "events_per_user"))
        for name in ("valid_users", "test_users"):
            check_optional_positive_int(name, getattr(self, name))
        for name in ("patience", "seed"):
            check_int_at_least(self, name, 0)
        if self.behaviour_refit_epochs is not None:
            check_int_at_least(self, "behaviour_refit_epochs", 0, " (0: no refit of the head)")
        check_int_at_least(self, "min_events", 2, " (a state and an action)")
        check_positive_numbers(self, ("learning_rate", "synthetic_length", "max_train_minutes"))
        super().__post_init__()
        file_defaults = FILE_MODEL_DEFAULTS if self.format != "synthetic" else {}
        self.model = {**MODEL_DEFAULTS, **file_defaults, "top_k": self.k, **(self.model or {})}
        head = self.policy_config(vocab_size=FIRST_VOCAB).behaviour_head  # checks the fields
        if self.behaviour_refit_epochs is None:
            self.behaviour_refit_epochs = REFIT_EPOCHS if head else 0
        elif self.behaviour_refit_epochs and not head:
            raise ValueError("behaviour_refit_epochs refits the behaviour head, which this "
                             "policy does not have (behaviour_head=False); set it to 0. "
                             f"Received: behaviour_refit_epochs={self.behaviour_refit_epochs}")
        if self.format != "synthetic":
            if self.model.get("propensity") == "logged":
                raise ValueError("propensity='logged' needs the logging policy's propensities, "
                                 "which logged-feedback files do not have; use 'learned' (the "
                                 f"behaviour head). Received: format={self.format!r}")
            return
        if self.k > self.synthetic_items:
            raise ValueError(f"k must be at most synthetic_items ({self.synthetic_items}). "
                             f"Received: k={self.k}")
        held_out = self.held_out_users()
        if sum(held_out) >= self.synthetic_users:
            raise ValueError("valid_users + test_users must leave at least one logged user: "
                             f"{held_out[0]} + {held_out[1]} >= synthetic_users="
                             f"{self.synthetic_users}")

    def _check_reward_options(self) -> None:
        threshold, column = self.reward_threshold, self.reward_col
        if threshold is not None:
            if self.format != "movielens":
                raise ValueError("reward_threshold applies to format 'movielens' only (ratings "
                                 "-> 0/1 rewards; a csv / parquet reward column is taken as "
                                 f"is). Received: reward_threshold={threshold!r} with "
                                 f"format={self.format!r}")
            if isinstance(threshold, bool) or not isinstance(threshold, int | float):
                raise ValueError("reward_threshold must be a number. "
                                 f"Received: reward_threshold={threshold!r}")
        if column is not None:
            if self.format not in ("csv", "parquet"):
                raise ValueError("reward_col applies to formats 'csv' and 'parquet' only. "
                                 f"Received: reward_col={column!r} with format={self.format!r}")
            if not isinstance(column, str) or not column:
                raise ValueError("reward_col must be a column name. "
                                 f"Received: reward_col={column!r}")

    def held_out_users(self, num_users: int | None = None) -> tuple[int, int]:
        """`(validation users, test users)` of `num_users` (default `synthetic_users`): the
        counts given, or 10% / 20% (at least one)."""
        users = self.synthetic_users if num_users is None else num_users
        return tuple(max(1, round(share * users)) if count is None else count
                     for count, share in ((self.valid_users, VALID_SHARE),
                                          (self.test_users, TEST_SHARE)))

    def policy_config(self, vocab_size: int) -> AttentionPolicyConfig:
        """The run's `AttentionPolicyConfig` for a catalogue of `vocab_size` ids."""
        return model_config(AttentionPolicyConfig, self.model, vocab_size)
