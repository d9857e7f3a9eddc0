"""The behaviour head's refit after the policy's training (`training.behaviour_refit`): the
policy's outputs are bit-identical, the held-out loss never ends higher, the criterion is the
policy's own (masked) behaviour loss, and `--behaviour-refit-epochs` / the YAML key reach the
run, bad values named."""

import json

import numpy as np
import pandas as pd
import pytest

from pipelines import train as train_pipeline
from tfrec_attn._keras import tf
from tfrec_attn.models import AttentionPolicy, AttentionPolicyConfig
from tfrec_attn.testing.multi_worker import InterruptAt, Preempted
from tfrec_attn.training.behaviour_refit import (
    BehaviourHeadFit,
    frozen_except_head,
    refit_behaviour_head,
)
from tfrec_attn.training.logged_feedback import split_users
from tfrec_attn.training.policy_run import PolicyOptions, logged_batches, logged_run_data

VOCAB, MAX_LEN = 12, 4


def _logs(seed: int, rounds: int = 96) -> dict:
    """Rounds whose action is item 2 + (last history item mod 3): learnable from the state."""
    rng = np.random.default_rng(seed)
    history = rng.integers(2, VOCAB, size=(rounds, MAX_LEN))
    return {"history": history, "action": 2 + history[:, -1] % 3,
            "reward": np.ones(rounds, np.float32)}


def _batches(logs: dict, seen: bool = False) -> tf.data.Dataset:
    features = dict(logs)
    if seen:  # the full history: here the window plus item VOCAB - 1
        features["seen"] = np.zeros((len(logs["action"]), VOCAB), bool)
        features["seen"][np.arange(len(logs["action"]))[:, None], logs["history"]] = True
        features["seen"][:, VOCAB - 1] = True
    return tf.data.Dataset.from_tensor_slices(features).batch(32)


def _policy(masked: bool = False) -> AttentionPolicy:
    tf.keras.utils.set_random_seed(0)
    return AttentionPolicy(AttentionPolicyConfig(vocab_size=VOCAB, max_len=MAX_LEN, dim=8,
                                                 dropout=0.1, behaviour_exclude_history=masked))


def test_the_policy_is_bit_identical_and_the_held_out_loss_never_rises():
    policy = _policy(masked=True)  # the "seen" batches of a file run
    probe = tf.constant(_logs(9)["history"])
    logits = policy(probe)["logits"].numpy()
    trunk = [w.numpy().copy() for w in policy.network.weights if "behaviour_head" not in w.name]
    head = policy.network.get_layer("behaviour_head").get_weights()
    flags = [layer.trainable for layer in policy.network.layers]
    train, valid = _batches(_logs(1), seen=True), _batches(_logs(2), seen=True)
    report = refit_behaviour_head(policy, train, valid, epochs=3, patience=2,
                                  learning_rate=0.05, verbose=0)
    np.testing.assert_array_equal(policy(probe)["logits"].numpy(), logits)  # bit-identical
    for before, after in zip(trunk, [w for w in policy.network.weights
                                     if "behaviour_head" not in w.name]):
        np.testing.assert_array_equal(after.numpy(), before)
    assert any(not np.array_equal(a, b) for a, b in zip(
        head, policy.network.get_layer("behaviour_head").get_weights()))
    assert [layer.trainable for layer in policy.network.layers] == flags  # restored
    loss = report["valid_behaviour_loss"]
    assert loss["after"] < loss["before"] - 0.1
    assert report["epochs"] == len(report["history"]["val_behaviour_loss"]) <= 3
    best = int(np.argmin(report["history"]["val_behaviour_loss"]))
    assert report["best_epoch"] == best + 1  # restored: the best epoch's validation loss
    assert loss["after"] == pytest.approx(report["history"]["val_behaviour_loss"][best],
                                          rel=1e-5)

    head = policy.network.get_layer("behaviour_head").get_weights()  # near the optimum now
    report = refit_behaviour_head(policy, train, valid, epochs=2, patience=1,
                                  learning_rate=50.0, verbose=0)  # every epoch is worse
    assert report["best_epoch"] == 0
    assert min(report["history"]["val_behaviour_loss"]) > report["valid_behaviour_loss"][
        "before"]
    for before, after in zip(head, policy.network.get_layer("behaviour_head").get_weights()):
        np.testing.assert_array_equal(after, before)  # the starting head kept
    assert report["valid_behaviour_loss"]["after"] == pytest.approx(
        report["valid_behaviour_loss"]["before"], rel=1e-6)
    np.testing.assert_array_equal(policy(probe)["logits"].numpy(), logits)


def test_the_refit_stops_at_its_time_budget_and_keeps_the_best_head():
    policy = _policy()
    train, valid = _batches(_logs(1)), _batches(_logs(2))
    report = refit_behaviour_head(policy, train.repeat(50), valid, epochs=5, patience=5,
                                  learning_rate=0.05, verbose=0, minutes=1e-9)
    assert report["stopped_by_time_budget"] and report["epochs"] == 1
    loss = report["valid_behaviour_loss"]
    assert loss["after"] <= loss["before"]
    unbudgeted = refit_behaviour_head(_policy(), train, valid, epochs=1, patience=1,
                                      learning_rate=0.05, verbose=0)
    assert not unbudgeted["stopped_by_time_budget"]


@pytest.mark.parametrize("learning_rate, interrupt_at, epochs, best_epoch", [
    (2.0, 6, 8, 6),  # epoch 7 is worse than epoch 6: the plateau cuts the rate for epoch 8
    (3.0, 1, 2, 0),  # epochs 1-2 worse than the start: stopped (patience 2), start restored
])
def test_an_interrupted_refit_resumes_from_its_backup(tmp_path, monkeypatch, learning_rate,
                                                      interrupt_at, epochs, best_epoch):
    train, valid = _batches(_logs(1)), _batches(_logs(2))  # not shuffled: epochs repeatable
    arguments = {"epochs": 8, "patience": 2, "learning_rate": learning_rate, "verbose": 0}
    policy = _policy()
    want = refit_behaviour_head(policy, train, valid, **arguments)
    assert (want["epochs"], want["best_epoch"]) == (epochs, best_epoch)
    want_head = policy.network.get_layer("behaviour_head").get_weights()
    backup, fit, calls = tmp_path / "refit", BehaviourHeadFit.fit, []

    def interrupted(self, *args, callbacks=(), **kwargs):
        return fit(self, *args, callbacks=[*callbacks, InterruptAt(interrupt_at)], **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(BehaviourHeadFit, "fit", interrupted)
        with pytest.raises(Preempted):
            refit_behaviour_head(_policy(), train, valid, backup_dir=str(backup), **arguments)
    state = json.loads((backup / f"run_state-{interrupt_at}.json").read_text())
    policy = _policy()
    head = policy.network.get_layer("behaviour_head")
    head.set_weights([3.0 * w for w in head.get_weights()])  # Keras' checkpoint overrides it
    got = refit_behaviour_head(policy, train, valid, backup_dir=str(backup), **arguments)
    # as if never interrupted: early stopping, the learning-rate plateau, the best head and
    # the loss before epoch 1 carried over the restart, the first epochs restored
    assert got["resumed_epochs"] == interrupt_at
    assert (got["epochs"], got["best_epoch"]) == (epochs, best_epoch)
    assert got["history"]["val_behaviour_loss"][:interrupt_at] == [
        logs["val_behaviour_loss"] for logs in state["logs"]]
    for name in ("behaviour_loss", "val_behaviour_loss"):
        np.testing.assert_allclose(got["history"][name], want["history"][name], rtol=1e-5)
    assert got["valid_behaviour_loss"] == pytest.approx(want["valid_behaviour_loss"], rel=1e-5)
    head = policy.network.get_layer("behaviour_head").get_weights()
    for a, b in zip(head, want_head):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)

    # completed: a rerun sets the kept head and returns the kept report without training
    monkeypatch.setattr(BehaviourHeadFit, "fit", lambda *args, **kwargs: calls.append(1))
    policy = _policy()
    assert refit_behaviour_head(policy, train, valid, backup_dir=str(backup),
                                **arguments) == got and calls == []
    for a, b in zip(policy.network.get_layer("behaviour_head").get_weights(), head):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"backup_dir=.* holds the completed 'refitted' stage "
                                         r"of a run with other settings \(refit.patience: 2 "
                                         r"there, 3 now\)"):
        refit_behaviour_head(_policy(), train, valid, backup_dir=str(backup),
                             **{**arguments, "patience": 3})


@pytest.mark.parametrize("masked", [False, True])
def test_the_criterion_is_the_policys_behaviour_loss(masked):
    policy = _policy(masked)
    batch = next(iter(_batches(_logs(3), masked)))
    policy.compute_loss(batch, training=False)
    fit = BehaviourHeadFit(policy)
    fit.compute_loss(batch)
    assert float(fit.loss_tracker.result()) == pytest.approx(
        float(policy.behaviour_loss_tracker.result()), rel=1e-6)


def test_only_the_head_trains_and_bad_arguments_are_named():
    policy = _policy()
    with frozen_except_head(policy):
        assert {v.name.split("/")[-2] for v in policy.trainable_variables} == {"behaviour_head"}
    with pytest.raises(ValueError, match="epochs must be a positive int. Received: epochs=0"):
        refit_behaviour_head(policy, _batches(_logs(1)), _batches(_logs(2)), epochs=0,
                             patience=1, learning_rate=0.01)
    headless = AttentionPolicy(AttentionPolicyConfig(vocab_size=VOCAB, max_len=MAX_LEN, dim=8,
                                                     correction="none", behaviour_head=False))
    with pytest.raises(ValueError, match="policy must be an AttentionPolicy with the "
                                         "behaviour head"):
        BehaviourHeadFit(headless)


@pytest.mark.parametrize("flags, yaml_value, expected", [
    (["--behaviour-refit-epochs", "7"], None, 7),
    (["--behaviour-refit-epochs", "0"], "5", 0),  # the flag wins over the YAML key
    ([], "5", 5),
])
def test_flag_and_yaml_key_reach_the_options(tmp_path, flags, yaml_value, expected):
    config = tmp_path / "c.yaml"
    key = f"behaviour_refit_epochs: {yaml_value}\n" if yaml_value else ""
    config.write_text(f"model_type: policy\n{key}")
    options = train_pipeline.options_from_args(["--config", str(config), *flags])
    assert options.behaviour_refit_epochs == expected


@pytest.mark.parametrize("argv, yaml_text, message", [
    (["--model", "policy", "--behaviour-refit-epochs", "-1"], None,
     "behaviour_refit_epochs must be an int >= 0 (0: no refit of the head). Received: "
     "behaviour_refit_epochs=-1"),
    ([], "model_type: policy\nbehaviour_refit_epochs: many\n",
     "c.yaml: behaviour_refit_epochs must be an integer. Received: "
     "behaviour_refit_epochs='many'"),
    ([], "model_type: policy\nbehaviour_refit_epochs: 3\nmodel:\n  behaviour_head: false\n"
         "  correction: none\n",
     "behaviour_refit_epochs refits the behaviour head, which this policy does not have"),
    (["--model", "din", "--behaviour-refit-epochs", "3"], None,
     "--behaviour-refit-epochs: not an option of --model din"),
])
def test_bad_values_are_named(tmp_path, capsys, argv, yaml_text, message):
    if yaml_text:
        config = tmp_path / "c.yaml"
        config.write_text(yaml_text)
        argv = ["--config", str(config), *argv]
    assert train_pipeline.main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("unknown", [False, True])
def test_file_validation_batches_are_in_order_with_the_full_history(tmp_path, unknown):
    path = tmp_path / "log.csv"
    rows = [(f"u{u}", f"i{(u + t) % 9}", t, 1) for u in range(30) for t in range(5)]
    if unknown:  # a validation user's item no training user has: OOV, its round left out
        _, valid, _ = split_users(30, 5, 5, seed=0)
        rows.append((sorted(f"u{u}" for u in range(30))[valid[0]], "new", 2.5, 1))
    pd.DataFrame(rows, columns=["user", "item", "timestamp", "clicked"]).to_csv(path,
                                                                               index=False)
    options = PolicyOptions(format="csv", data=str(path), reward_col="clicked", min_events=2,
                            valid_users=5, test_users=5, behaviour_refit_epochs=1,
                            batch_size=8, model={"max_len": 2, "dim": 8})
    data = logged_run_data(options)
    assert data.vocab_size == 11  # i0..i8: never "new"
    config = AttentionPolicyConfig(vocab_size=data.vocab_size, max_len=2, dim=8,
                                   correction="none", behaviour_exclude_history=True)
    batches = list(logged_batches(data, config, options, valid=True))
    actions = np.concatenate([b["action"].numpy() for b in batches])
    np.testing.assert_array_equal(actions, data.valid_logs["action"])  # not shuffled
    assert (actions >= 2).all()
    seen = np.concatenate([b["seen"].numpy() for b in batches])
    items = data.histories[0]
    assert sum(int((items[row] == 1).sum()) for row in data.valid_rows) == int(unknown)
    expected = [items[row][:end] for row in data.valid_rows
                for end in range(1, len(items[row])) if items[row][end] != 1]
    assert len(expected) == len(seen) == 20
    for mask, history in zip(seen, expected):  # beyond the 2-item window; OOV is no item
        assert set(np.flatnonzero(mask)) == set(history.tolist()) - {1}
    assert logged_batches(data, config, options).element_spec["history"].shape[0] is None
