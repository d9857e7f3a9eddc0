"""`training.policy_history`: when a run masks the history out of the behaviour head, the
`"seen"` batches of the full history, and training and estimation using one distribution."""

import numpy as np
import pytest

from pipelines import train as train_pipeline
from tfrec_attn.data import Vocabulary
from tfrec_attn.models import AttentionPolicy, AttentionPolicyConfig
from tfrec_attn.training.bandit_simulator import BanditSimulator
from tfrec_attn.training.logged_feedback import (
    LoggedFeedback,
    held_out_events,
    logged_events,
    round_positions,
)
from tfrec_attn.training.off_policy_evaluation import behaviour_propensities
from tfrec_attn.training.policy_history import (
    FIELD,
    action_repeat_rate,
    choose_behaviour_mask,
    seen_dataset,
)

SEQUENCES = [np.array([2, 3, 4, 5, 6]), np.array([7, 2, 8]), np.array([9, 3, 9, 4])]  # 9 twice


def _feedback(sequences=SEQUENCES):
    return LoggedFeedback([np.asarray(s, np.int64) for s in sequences],
                          [np.ones(len(s), np.float32) for s in sequences],
                          [f"u{i}" for i in range(len(sequences))], Vocabulary(list("abcdefgh")))


@pytest.mark.parametrize("rate, value, sign", [(0.0, True, "<"), (0.0099, True, "<"),
                                               (0.01, False, ">="), (0.3, False, ">=")])
def test_the_default_is_on_only_when_actions_almost_never_repeat(rate, value, sign):
    fields, report = choose_behaviour_mask({"dim": 8}, rate, "logged actions")
    assert fields == {"dim": 8, FIELD: value} and report[FIELD]["value"] is value
    assert report[FIELD]["reason"] == (f"{rate:.2%} of logged actions repeat an earlier item "
                                       f"of their user ({sign} 1%)")


def test_a_user_setting_or_no_head_is_kept_and_not_reported():
    for model in ({FIELD: False}, {FIELD: True}, {"behaviour_head": False}):
        assert choose_behaviour_mask(model, 0.0, "logged actions") == (model, {})


def test_repeat_rates_of_the_simulator_and_of_files():
    # the simulator's logs repeat history items well above 1%: its default stays off
    logs = BanditSimulator(num_users=200, num_items=20, max_len=6, seed=0).log(
        events_per_user=5, seed=0)
    assert action_repeat_rate(logs["history"], logs["action"]) > 0.05
    assert action_repeat_rate(np.array([[0, 0, 2]]), np.array([0])) == 0.0  # padding: no item


def test_seen_batches_hold_the_full_history_beyond_the_window():
    feedback, rows = _feedback(), np.array([2, 0])
    logs = logged_events(feedback, rows, max_len=2)
    users, ends = round_positions(feedback.items, rows)
    np.testing.assert_array_equal(users, logs["user"])
    batch = next(iter(seen_dataset(logs, feedback.items, rows, feedback.vocab_size,
                                   batch_size=16, shuffle=False)))
    assert batch["seen"].shape == (7, feedback.vocab_size) and "seen_row" not in batch
    for i, (row, end) in enumerate(zip(users, ends)):
        expected = np.zeros(feedback.vocab_size, bool)
        expected[feedback.items[row][:end]] = True
        np.testing.assert_array_equal(batch["seen"][i].numpy(), expected)
    # round 4 of user 0 (action 6): the window holds 4, 5; the full history 2..5
    assert batch["history"][6].numpy().tolist() == [4, 5]
    assert batch["seen"][6].numpy()[[2, 3]].all()
    with pytest.raises(ValueError, match="logs must be logged_events"):
        seen_dataset(logs, feedback.items, np.array([0]), feedback.vocab_size)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        seen_dataset(logs, feedback.items, rows, feedback.vocab_size, batch_size=0)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        seen_dataset(logs, feedback.items, rows, feedback.vocab_size, batch_size=True)


@pytest.mark.parametrize("sequence, kept", [
    ([2, 1, 3, 1, 4], [[2, 1], [2, 1, 3, 1]]),  # held-out rounds on OOV actions left out
    ([1, 3, 4], [[1], [1, 3]]),  # OOV first: in the histories only
])
def test_seen_batches_of_the_rounds_held_out_events_keeps(sequence, kept):
    feedback, rows = _feedback([*SEQUENCES, sequence]), np.array([3, 1])
    logs, unknown = held_out_events(feedback, rows, max_len=2)
    assert unknown == sequence.count(1) - (sequence[0] == 1)
    batch = next(iter(seen_dataset(logs, feedback.items, rows, feedback.vocab_size,
                                   batch_size=16, shuffle=False)))
    histories = [*kept, [7], [7, 2]]  # user 3's kept rounds, then user 1's
    np.testing.assert_array_equal(batch["action"].numpy(), logs["action"])
    assert len(batch["seen"]) == len(histories) and (logs["action"] >= 2).all()
    for mask, history in zip(batch["seen"].numpy(), histories):  # OOV is not an item
        assert set(np.flatnonzero(mask)) == set(history) - {1}
    for bad in ({**logs, "end": logs["end"] + 9}, {k: v for k, v in logs.items() if k != "end"}):
        with pytest.raises(ValueError, match="logs must be logged_events"):
            seen_dataset(bad, feedback.items, rows, feedback.vocab_size)


def test_training_and_estimation_use_the_same_masked_softmax():
    feedback, rows = _feedback(), np.array([0, 1, 2])
    logs = logged_events(feedback, rows, max_len=2)
    policy = AttentionPolicy(AttentionPolicyConfig(vocab_size=feedback.vocab_size, max_len=2,
                                                   dim=4, correction="none",
                                                   behaviour_exclude_history=True))
    batch = next(iter(seen_dataset(logs, feedback.items, rows, feedback.vocab_size,
                                   batch_size=32, shuffle=False)))
    policy.compute_loss(batch)
    users, ends = round_positions(feedback.items, rows)
    earlier = [feedback.items[u][:e] for u, e in zip(users, ends)]  # includes 9 before 9
    beta = behaviour_propensities(policy, logs["history"], logs["action"], exclude=earlier)
    assert float(policy.behaviour_loss_tracker.result()) == pytest.approx(
        -np.log(beta).mean(), rel=1e-5)
    unmasked = behaviour_propensities(policy, logs["history"], logs["action"])
    assert (beta[1:] > unmasked[1:]).all()  # every later round has history mass removed


@pytest.mark.parametrize("flags, yaml_value, expected", [
    (["--behaviour-exclude-history"], None, True),
    (["--no-behaviour-exclude-history"], "true", False),  # the flag wins over the YAML key
    ([], "true", True),
    ([], None, None),  # unset: chosen from the data at run time
])
def test_flag_and_yaml_key_reach_the_config(tmp_path, flags, yaml_value, expected):
    config = tmp_path / "c.yaml"
    model = f"model:\n  {FIELD}: {yaml_value}\n" if yaml_value else ""
    config.write_text(f"model_type: policy\n{model}")
    options = train_pipeline.options_from_args(["--config", str(config), *flags])
    assert options.model.get(FIELD) is expected
    if expected is not None:
        assert getattr(options.policy_config(vocab_size=10), FIELD) is expected


def test_bad_yaml_value_and_flag_for_other_models_are_named(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(f"model_type: policy\nmodel:\n  {FIELD}: maybe\n")
    assert train_pipeline.main(["--config", str(config)]) == 2
    assert "behaviour_exclude_history must be a bool. Received: " in capsys.readouterr().err
    assert train_pipeline.main(["--model", "din", "--behaviour-exclude-history"]) == 2
    assert "--behaviour-exclude-history: not an option of --model din" in (
        capsys.readouterr().err)

