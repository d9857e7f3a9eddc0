"""`tfrec-attn train --model policy` on logged-feedback files: the data -> logs builder on a
hand-written log, the rewarded-hit metrics, the CLI end to end on a planted CSV (report,
checkpoint, export, learning against popularity of rewarded items) and the error handling."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines import train as train_pipeline
from tfrec_attn._keras import tf
from tfrec_attn.data import DataError, Vocabulary, pad_left
from tfrec_attn.evaluation import topk_from_scores
from tfrec_attn.models import AttentionPolicy, AttentionPolicyConfig
from tfrec_attn.training.logged_feedback import (
    LoggedFeedback,
    RewardedTargets,
    feedback_from_frame,
    held_out_events,
    history_scores,
    logged_events,
    logged_split,
    rewarded_hits,
    rewarded_popularity,
    rewarded_targets,
    split_users,
    training_vocabulary,
)
from tfrec_attn.training.off_policy_evaluation import SMOOTHING_GRID, logged_off_policy
from tfrec_attn.training.policy_run import (
    PROTOCOL,
    PolicyOptions,
    load_feedback,
    logged_run_data,
)
from tfrec_attn.validation import DataOptionError

# user "v" (ids: a=2, b=3, c=4, d=5) rates c, a, d, b in time order (rows are shuffled);
# "u" rates a then b; "w" has one event (dropped by min_events=2).
LOG = pd.DataFrame({
    "user": ["v", "u", "v", "w", "v", "u", "v"],
    "item": ["d", "a", "a", "c", "c", "b", "b"],
    "timestamp": [30, 1, 20, 5, 10, 2, 40],
    "rating": [5.0, 4.0, 2.0, 5.0, 4.5, 3.0, 1.0],
})


def test_builder_gives_exact_states_actions_and_rewards():
    feedback = feedback_from_frame(LOG, "rating", min_events=2, threshold=4.0)
    assert feedback.users == ["u", "v"] and feedback.vocab.tokens == ["a", "b", "c", "d"]
    assert [s.tolist() for s in feedback.items] == [[2, 3], [4, 2, 5, 3]]
    assert [r.tolist() for r in feedback.rewards] == [[1.0, 0.0], [1.0, 0.0, 1.0, 0.0]]
    logs = logged_events(feedback, np.array([1, 0]), max_len=2)
    assert logs["user"].tolist() == [1, 1, 1, 0]
    assert logs["history"].tolist() == [[0, 4], [4, 2], [2, 5], [0, 2]]
    assert logs["action"].tolist() == [2, 5, 3, 3]
    assert logs["reward"].tolist() == [0.0, 1.0, 0.0, 0.0]
    assert logs["history"].dtype == np.int64 and logs["reward"].dtype == np.float32
    assert np.isnan(logs["propensity"]).all()  # unknown: the behaviour head learns beta
    as_is = feedback_from_frame(LOG, "rating", min_events=2)  # no threshold: values as is
    assert as_is.rewards[1].tolist() == [4.5, 2.0, 5.0, 1.0]
    assert feedback_from_frame(LOG, "rating", min_events=1).users == ["u", "v", "w"]


def test_rewarded_targets_are_the_last_rewarded_event_after_the_first():
    feedback = feedback_from_frame(LOG, "rating", min_events=1, threshold=4.0)
    targets = rewarded_targets(feedback, np.array([0, 1, 2]))
    # u: only its first event is rewarded (no history before it); w: one event
    assert targets.rows.tolist() == [1]
    assert [h.tolist() for h in targets.histories] == [[4, 2]] and targets.targets.tolist() == [5]
    popularity = rewarded_popularity(feedback, np.array([0, 1, 2]))
    assert popularity.counts[2:].tolist() == [1.0, 0.0, 2.0, 1.0]  # a, b, c, d rewarded


def test_rewarded_hits_match_hand_computed_ranks():
    vocab = Vocabulary(list("abcdef"))  # ids 2..7
    feedback = LoggedFeedback([np.array([2, 3, 4]), np.array([5, 6]), np.array([7, 2])],
                              [np.ones(3, np.float32), np.ones(2, np.float32),
                               np.array([0, 1], np.float32)], ["x", "y", "z"], vocab)
    targets = rewarded_targets(feedback, np.arange(3))
    scores = np.array([0, 0, 6, 5, 4, 3, 2, 1], np.float64)  # id 2 best, 7 worst

    def fixed(batch):
        return np.tile(scores, (len(batch), 1))

    got = rewarded_hits(fixed, targets, vocab.size, ks=(1, 2))
    # x: history [2, 3] excluded, target 4 ranks first; y: history [5], target 6 ranks after
    # 2, 3, 4 (rank 3); z: history [7], target 2 ranks first
    ranks = np.array([0, 3, 0])
    assert got == pytest.approx({"hr@1": 2 / 3, "ndcg@1": 2 / 3, "hr@2": 2 / 3,
                                 "ndcg@2": np.mean(np.where(ranks < 2, 1 / np.log2(ranks + 2),
                                                            0.0))})


def test_split_users_is_the_synthetic_runs_permutation():
    train, valid, test = split_users(30, 4, 6, seed=3)
    order = np.random.default_rng(3).permutation(30)
    assert test.tolist() == sorted(order[:6]) and valid.tolist() == sorted(order[6:10])
    assert np.array_equal(np.sort(np.concatenate([train, valid, test])), np.arange(30))


def _unknown_item_frame(part: str, where: str) -> tuple[pd.DataFrame, int]:
    """Users u0..u6 each rate a, b, c (all rewarded); the first `part` user of the split
    (`split_users(7, 2, 2, seed=0)`) also rates "new", an item no training user has, in the
    middle of its events (`where="history"`) or as its last, rewarded event (`"target"`)."""
    _, valid, test = split_users(7, 2, 2, seed=0)
    held = int({"valid": valid, "test": test}[part][0])
    rows = []
    for user in range(7):
        items = ["a", "b", "c"]
        if user == held:
            items = ["a", "new", "b", "c"] if where == "history" else ["a", "b", "c", "new"]
        rows += [(f"u{user}", item, t, 1.0) for t, item in enumerate(items)]
    return pd.DataFrame(rows, columns=["user", "item", "timestamp", "reward"]), held


@pytest.mark.parametrize("where", ["history", "target"])
@pytest.mark.parametrize("part", ["valid", "test"])
def test_the_vocabulary_is_the_training_users_and_held_out_only_items_are_oov(part, where):
    frame, held = _unknown_item_frame(part, where)
    split = logged_split(feedback_from_frame(frame, "reward"), 2, 2, max_len=3, seed=0)
    feedback, other = split.feedback, {"valid": "test", "test": "valid"}[part]
    assert held not in split.train and len(feedback.users) == 7
    assert feedback.vocab.tokens == ["a", "b", "c"] and feedback.vocab_size == 5  # no "new"
    # "new" is OOV (1) in place: the held-out user's positions are kept
    assert feedback.items[held].tolist() == {"history": [2, 1, 3, 4],
                                             "target": [2, 3, 4, 1]}[where]
    assert all(feedback.items[r].tolist() == [2, 3, 4] for r in range(7) if r != held)
    targets = getattr(split, f"{part}_targets")
    if where == "target":  # "new" cannot be recommended: the user is left out and counted
        assert held not in targets.rows.tolist() and targets.unknown == 1
        assert len(targets.rows) == 1
    else:  # the target c, after a history that holds the OOV id
        position = targets.rows.tolist().index(held)
        assert targets.histories[position].tolist() == [2, 1, 3]
        assert targets.targets[position] == 4 and targets.unknown == 0
    assert getattr(split, f"{other}_targets").unknown == 0
    assert (targets.targets >= 2).all()
    # the held-out user's logged round on "new" is left out (off-policy, behaviour refit)
    assert split.unknown_rounds == {part: 1, other: 0}
    rows = getattr(split, part)
    logs, unknown = held_out_events(feedback, rows, max_len=3)
    everything = logged_events(feedback, rows, max_len=3)
    assert unknown == 1 and len(logs["action"]) == len(everything["action"]) - 1 == 4
    assert (logs["action"] >= 2).all()
    kept = everything["action"] != 1
    for key in everything:
        np.testing.assert_array_equal(logs[key], everything[key][kept])
    # the training logs and popularity know only the training users' items
    assert set(split.logs["action"].tolist()) <= {2, 3, 4}
    assert rewarded_popularity(feedback, split.train).counts.shape == (5,)


@pytest.mark.parametrize("tokens, train_items, expected", [
    (list("abcd"), [[2, 4]], ["a", "c"]),
    (["10", "9", "100"], [[4, 2]], ["9", "100"]),  # numeric ids keep their natural order
])
def test_training_vocabulary_maps_other_items_to_oov(tokens, train_items, expected):
    vocab = Vocabulary.fit(tokens)
    held_out = np.arange(2, vocab.size)  # every item, one held-out user
    feedback = LoggedFeedback([np.array(s, np.int64) for s in train_items] + [held_out],
                              [np.ones(len(s), np.float32) for s in [*train_items, held_out]],
                              ["t", "h"], vocab)
    restricted = training_vocabulary(feedback, np.array([0]))
    assert restricted.vocab.tokens == expected and restricted.vocab_size == 4
    raw = vocab.inverse(held_out)  # the same raw item under both vocabularies, else OOV
    np.testing.assert_array_equal(restricted.items[1], restricted.vocab.lookup(raw))
    assert (restricted.items[1] == 1).sum() == len(tokens) - 2
    assert restricted.vocab.inverse(restricted.items[0]).tolist() == vocab.inverse(
        feedback.items[0]).tolist()
    assert feedback.vocab is vocab and feedback.items[1] is held_out  # not modified


@pytest.mark.parametrize("part", ["valid", "test"])
def test_a_part_whose_only_targets_are_unknown_items_is_named(part):
    frame, _ = _unknown_item_frame(part, "target")
    _, valid, test = split_users(7, 2, 2, seed=0)
    second = int({"valid": valid, "test": test}[part][1])  # the part's other user: an unknown
    frame = pd.concat([frame, pd.DataFrame({"user": [f"u{second}"], "item": ["other"],
                                            "timestamp": [9], "reward": [1.0]})])
    with pytest.raises(DataOptionError, match=(
            f"no {part} user has a rewarded event after their first on an item a training "
            rf"user has \(2 on other items left out\); raise {part}_users")):
        logged_split(feedback_from_frame(frame, "reward"), 2, 2, max_len=3, seed=0)


def test_padding_and_oov_are_never_candidates_of_the_rewarded_hit():
    # a scorer that ranks padding and OOV first: the target is still the first real candidate
    targets = RewardedTargets(np.array([0]), [np.array([1, 2])], np.array([3]))

    def oov_first(batch):
        return np.tile([9.0, 9.0, 0.0, 5.0, 1.0], (len(batch), 1))

    assert rewarded_hits(oov_first, targets, 5, ks=(1,)) == {"hr@1": 1.0, "ndcg@1": 1.0}


def test_builder_rejects_bad_input():
    with pytest.raises(DataError, match=r"missing column 'reward'; present columns"):
        feedback_from_frame(LOG, "reward")
    with pytest.raises(ValueError, match="min_events must be a positive int"):
        feedback_from_frame(LOG, "rating", min_events=0)
    with pytest.raises(DataError, match="non-numeric rating 'x'"):
        feedback_from_frame(LOG.assign(rating=["x", 1, 1, 1, 1, 1, 1]), "rating")
    unrewarded = feedback_from_frame(LOG, "rating", min_events=2, threshold=9.0)
    with pytest.raises(DataOptionError, match="none of the 4 training events is rewarded"):
        logged_split(unrewarded, 0, 0, max_len=3, seed=0)
    with pytest.raises(DataOptionError, match="must leave at least one training user"):
        logged_split(unrewarded, 1, 1, max_len=3, seed=0)


def planted_csv(path: Path, users: int = 300, items: int = 20, seed: int = 0) -> Path:
    """Each user rates a run of consecutive items (`i, i+1, ...` mod `items`) from a random
    start; 30% of the events are unrewarded. So the next item (rewarded or not) is the last
    one + 1, which popularity cannot know."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(users):
        start, length = rng.integers(items), rng.integers(4, 11)
        rows += [(f"u{user}", f"i{(start + t) % items}", 100 + t, int(rng.random() >= 0.3))
                 for t in range(length)]
    pd.DataFrame(rows, columns=["user", "item", "timestamp", "clicked"]).to_csv(path, index=False)
    return path


TINY = ["--model", "policy", "--format", "csv", "--reward-col", "clicked", "--min-events", "2",
        "--max-len", "5", "--dim", "16", "--k", "3", "--valid-users", "40", "--test-users", "60",
        "--batch-size", "64", "--lr", "0.01", "--epochs", "6", "--patience", "3",
        "--verbose", "0"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("policy_logged")
    data = planted_csv(root / "planted.csv")
    argv = TINY + ["--data", str(data), "--output", str(root / "out"),
                   "--export-root", str(root / "models"), "--name", "logged"]
    assert train_pipeline.main(argv) == 0
    return root, json.loads((root / "out" / "metrics.json").read_text())


def test_metrics_json_reports_the_rewarded_hit_protocol(run):
    _, metrics = run
    assert metrics["protocol"] == PROTOCOL
    assert set(metrics["test"]) == set(metrics["valid"]) == {"hr@3", "ndcg@3"}
    assert set(metrics["baselines"]) == {"popularity"}
    records = metrics["history"]["valid"]
    best = max(records, key=lambda r: r["ndcg@3"])
    assert metrics["best_epoch"] == best["epoch"] and metrics["valid"]["ndcg@3"] == best["ndcg@3"]
    dataset = metrics["dataset"]
    assert (dataset["name"], dataset["format"], dataset["reward"]) == (
        "planted.csv", "csv", "column 'clicked'")
    assert (dataset["users"], dataset["items"], dataset["valid_users"],
            dataset["test_users"]) == (300, 20, 40, 60)
    assert 0 < dataset["test_evaluated"] <= 60 and 0.6 < dataset["logged_reward_rate"] < 0.8
    # every item is a training user's: nothing held out is unknown
    assert dataset["unknown_item_targets"] == dataset["unknown_item_rounds"] == {"valid": 0,
                                                                                 "test": 0}
    assert metrics["model"]["propensity"] == "learned" and metrics["model"]["behaviour_head"]
    assert len(metrics["history"]["behaviour_loss"]) == metrics["epochs"] <= 6
    off_policy = metrics["off_policy"]  # every event after a test user's first
    assert (off_policy["k"], off_policy["users"], list(off_policy["propensities"])) == (
        3, 60, ["learned"])
    estimates = {name: sources["learned"] for name, sources in off_policy["estimates"].items()}
    assert set(estimates) == {"policy", "popularity", "logging"}
    for estimate in estimates.values():
        assert estimate["rounds"] == off_policy["rounds"] and estimate["units"] == 60
        assert estimate["snips_ci_low"] <= estimate["snips"] <= estimate["snips_ci_high"]
    logging = estimates["logging"]  # pi = beta: every weight is 1
    assert logging["snips"] == pytest.approx(logging["ips"]) and logging["nonzero_fraction"] == 1
    assert logging["ess"] == pytest.approx(off_policy["rounds"])
    # no user rates an item twice: the head trained and estimated over the unseen items
    # (behaviour_exclude_history chosen from the data); warned iff the mean weight is outside
    # the band
    assert metrics["data_defaults"]["behaviour_exclude_history"]["value"] is True
    assert metrics["model"]["behaviour_exclude_history"] is True
    assert off_policy["renormalized"] is True and off_policy["history_mask"] == "trained"
    assert "trained and estimated over the items outside" in off_policy["propensities"]["learned"]
    assert 0 < off_policy["history_mass"] < 1
    smoothing = off_policy["smoothing"]  # the marginal's weight: the best validation likelihood
    valid_nll = {float(eps): nll for eps, nll in smoothing["valid_nll"].items()}
    assert set(valid_nll) == set(SMOOTHING_GRID)
    assert valid_nll[smoothing["epsilon"]] == min(valid_nll.values())
    assert f"marginal at weight {smoothing['epsilon']:g}" in off_policy["propensities"]["learned"]
    refit = metrics["behaviour_refit"]  # validation users' rounds, with their "seen" items
    assert refit["valid_behaviour_loss"]["after"] <= refit["valid_behaviour_loss"]["before"]
    low, high = off_policy["mean_weight_band"]
    for estimate in estimates.values():
        assert ("warning" in estimate) == (not low <= estimate["mean_weight"] <= high)


def test_checkpoint_and_export_give_the_reported_policy(run):
    root, metrics = run
    options = PolicyOptions(**{k: v for k, v in metrics["options"].items()
                               if k not in ("output", "export_root")},
                            model={k: v for k, v in metrics["model"].items()
                                   if k != "vocab_size"})
    policy = AttentionPolicy(AttentionPolicyConfig(**metrics["model"]))
    policy.load_weights(str(root / "out" / "checkpoint" / "weights"))
    split = logged_split(load_feedback(options), 40, 60, max_len=5, seed=0)
    feedback = split.feedback  # the training users' vocabulary
    assert rewarded_hits(history_scores(policy, 5), split.test_targets, feedback.vocab_size,
                         (3,)) == pytest.approx(metrics["test"])
    off_policy = logged_off_policy(split, rewarded_popularity(feedback, split.train), 3, 5,
                                   10.0)(policy)
    for name, sources in off_policy.pop("estimates").items():
        assert sources["learned"] == pytest.approx(
            metrics["off_policy"]["estimates"][name]["learned"])
    assert off_policy.pop("history_mass") == pytest.approx(metrics["off_policy"]["history_mass"])
    assert off_policy.items() <= metrics["off_policy"].items()
    test_rounds = logged_events(feedback, split.test, 5)  # SNIPS(pi = beta) = mean reward
    assert metrics["off_policy"]["rounds"] == len(test_rounds["reward"])
    assert metrics["off_policy"]["estimates"]["logging"]["learned"]["snips"] == pytest.approx(
        test_rounds["reward"].astype(np.float64).mean(), abs=1e-12)
    export = Path(metrics["export_path"])
    info = json.loads((export / "assets.extra" / "tfrec_attn.json").read_text())
    assert info["exclude_history"] is True and info["protocol"] == PROTOCOL
    histories = pad_left(split.test_targets.histories[:16], 5)
    got = tf.saved_model.load(str(export)).signatures["serving_default"](
        history=tf.constant(histories))
    want = topk_from_scores(policy(tf.constant(histories))["logits"].numpy(), 3,
                            exclude=list(histories))
    np.testing.assert_array_equal(got["item_ids"].numpy(), want)


def test_the_policy_beats_popularity_of_rewarded_items(run):
    # The next item is always the last one + 1; popularity of rewarded items is about flat
    # (about 3/20 hits at k=3). Measured on CSV seeds 0-2 x run seeds 0-3 (4 runs): test
    # HR@3 0.83-0.93, NDCG@3 0.82-0.93; popularity HR@3 0.22-0.27, NDCG@3 0.16-0.21.
    _, metrics = run
    test, popularity = metrics["test"], metrics["baselines"]["popularity"]
    assert test["hr@3"] > 0.6 and test["hr@3"] > 2 * popularity["hr@3"]
    assert test["ndcg@3"] > 2 * popularity["ndcg@3"]


def unknown_items_csv(path: Path) -> Path:
    """Users u00..u29 each click all of i0..i7 (from i{user % 8} on); of the held-out users
    (`split_users(30, 5, 5, seed=0)`: `--valid-users 5 --test-users 5`), the first validation
    and test user also click an item nobody else has in the middle of their events (their round
    on it is left out, the item is OOV in their histories), the second ones after their other
    events (their target is left out, and that round)."""
    _, valid, test = split_users(30, 5, 5, seed=0)
    extra = {int(valid[0]): 4, int(test[0]): 4, int(valid[1]): 8, int(test[1]): 8}
    rows = []
    for user in range(30):
        items = [f"i{(user + t) % 8}" for t in range(8)]
        if user in extra:
            items.insert(extra[user], f"only{user}")
        rows += [(f"u{user:02d}", item, 100 + t, 1) for t, item in enumerate(items)]
    pd.DataFrame(rows, columns=["user", "item", "timestamp", "clicked"]).to_csv(path, index=False)
    return path


def test_run_data_use_the_training_vocabulary_and_count_unknown_items(tmp_path):
    options = PolicyOptions(format="csv", data=str(unknown_items_csv(tmp_path / "log.csv")),
                            reward_col="clicked", min_events=2, valid_users=5, test_users=5,
                            behaviour_refit_epochs=1, k=3, model={"max_len": 4, "dim": 8})
    data = logged_run_data(options)
    assert data.vocab_size == 10 and data.dataset["items"] == 8  # i0..i7, not the only*
    assert data.dataset["unknown_item_targets"] == {"valid": 1, "test": 1}
    assert data.dataset["unknown_item_rounds"] == {"valid": 2, "test": 2}
    assert data.dataset["valid_evaluated"] == data.dataset["test_evaluated"] == 4
    items, train = data.histories
    assert sum(int((s == 1).sum()) for s in items) == 4 and max(s.max() for s in items) == 9
    assert not any((items[row] == 1).any() for row in train)
    assert (data.logs["action"] >= 2).all() and (data.valid_logs["action"] >= 2).all()
    assert len(data.valid_logs["action"]) == 5 * 7 + 2 - 2  # the two OOV rounds left out
    assert np.isin(data.valid_logs["user"], data.valid_rows).all()


def test_a_run_with_held_out_only_items_reports_them_and_never_recommends_oov(tmp_path):
    argv = TINY + ["--data", str(unknown_items_csv(tmp_path / "log.csv")), "--valid-users", "5",
                   "--test-users", "5", "--epochs", "1", "--behaviour-refit-epochs", "1",
                   "--max-len", "4", "--output", str(tmp_path / "out"),
                   "--export-root", str(tmp_path / "models"), "--name", "unknown"]
    assert train_pipeline.main(argv) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    dataset = metrics["dataset"]
    assert (dataset["items"], metrics["model"]["vocab_size"]) == (8, 10)
    assert dataset["unknown_item_targets"] == {"valid": 1, "test": 1}
    assert dataset["unknown_item_rounds"] == {"valid": 2, "test": 2}
    assert dataset["test_evaluated"] == 4 and metrics["off_policy"]["rounds"] == 5 * 7 + 2 - 2
    assert metrics["behaviour_refit"]["epochs"] == 1
    vocab = Vocabulary.from_json(tmp_path / "out" / "item_vocabulary.json")
    assert vocab.size == 10  # the training users' items: what a serving client maps ids with
    export = Path(metrics["export_path"])
    assert json.loads((export / "assets.extra" / "tfrec_attn.json").read_text())[
        "vocab_size"] == 10
    histories = np.array([[2, 1, 3, 4], [1, 1, 5, 6], [0, 0, 1, 7]], np.int64)  # OOV inside
    got = tf.saved_model.load(str(export)).signatures["serving_default"](
        history=tf.constant(histories))["item_ids"].numpy()
    assert ((got >= 2) & (got < 10)).all()
    assert not any(set(row) & set(history) for row, history in zip(got, histories))


def test_movielens_and_parquet_feedback(tmp_path):
    ratings = tmp_path / "u.data"
    ratings.write_text("1\t10\t5\t3\n1\t11\t3\t1\n1\t12\t4\t2\n2\t10\t2\t1\n2\t12\t5\t2\n")
    options = PolicyOptions(format="movielens", data=str(ratings), min_events=2)
    feedback = load_feedback(options)  # the default threshold is 4.0
    assert [s.tolist() for s in feedback.items] == [[3, 4, 2], [2, 4]]
    assert [r.tolist() for r in feedback.rewards] == [[0.0, 1.0, 1.0], [0.0, 1.0]]
    strict = load_feedback(PolicyOptions(format="movielens", data=str(ratings), min_events=2,
                                         reward_threshold=5.0))
    assert [r.tolist() for r in strict.rewards] == [[0.0, 0.0, 1.0], [0.0, 1.0]]
    table = tmp_path / "log.parquet"
    pd.DataFrame({"user": ["a", "a"], "item": ["x", "y"], "timestamp": [2, 1],
                  "reward": [0.5, 2.0]}).to_parquet(table)
    logged = load_feedback(PolicyOptions(format="parquet", data=str(table), min_events=2))
    assert logged.rewards[0].tolist() == [2.0, 0.5] and logged.vocab.tokens == ["x", "y"]


@pytest.mark.parametrize("content, extra, message", [
    ("user,item,timestamp\na,x,1\na,y,2\n", [], "planted.csv, line 1: missing column 'clicked'"),
    ("user,item,timestamp,clicked\na,x,1,1\na,y,2,yes\n", [],
     "planted.csv, line 3: non-numeric reward 'yes'"),
    ("user,item,timestamp,clicked\na,x,1,1\na,y,2,1\n", ["--reward-threshold", "4"],
     "reward_threshold applies to format 'movielens' only"),
    ("user,item,timestamp,clicked\na,x,1,1\na,y,2,1\n", ["--format", "movielens"],
     "reward_col applies to formats 'csv' and 'parquet' only"),
    ("user,item,timestamp,clicked\na,x,1,1\na,y,2,1\n", ["--format", "sasrec"],
     "format must be one of ('synthetic', 'movielens', 'csv', 'parquet') for the policy"),
    ("user,item,timestamp,clicked\na,x,1,1\na,y,2,1\n", ["--min-events", "1"],
     "min_events must be an int >= 2"),
    ("user,item,timestamp,clicked\na,x,1,1\na,y,2,1\nb,x,1,1\nb,y,2,1\nc,x,1,1\nc,z,2,1\n"
     "c,y,3,1\nd,x,1,1\nd,y,2,1\n", ["--k", "3"],  # z: only the test user c's
     "k must be at most the number of items the training users have (2)"),
    ("user,item,timestamp,clicked\na,x,1,0\na,y,2,0\nb,x,1,0\nb,y,2,0\nc,x,1,0\nc,y,2,0\n",
     ["--k", "1"], "none of the 1 training events is rewarded"),
])
def test_bad_logged_inputs_exit_2_naming_the_option_or_file(tmp_path, capsys, content, extra,
                                                            message):
    data = tmp_path / "planted.csv"
    data.write_text(content)
    argv = TINY + ["--data", str(data), "--valid-users", "1", "--test-users", "1",
                   "--export-root", "", "--output", str(tmp_path / "out"), *extra]
    assert train_pipeline.main(argv) == 2
    assert message in capsys.readouterr().err


def test_logged_propensities_are_refused_for_files(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("model_type: policy\nformat: csv\ndata: x.csv\nmodel:\n"
                      "  propensity: logged\n")
    assert train_pipeline.main(["--config", str(config)]) == 2
    assert "propensity='logged' needs the logging policy's propensities" in (
        capsys.readouterr().err)


def test_ml100k_config_reads_the_shared_data_by_path():
    options = train_pipeline.options_from_args(
        ["--config", str(Path(__file__).resolve().parents[2] / "pipelines" / "configs"
                         / "policy_ml100k.yaml")])
    assert isinstance(options, PolicyOptions) and options.format == "movielens"
    assert options.data == "../shared/data/ml-100k" and options.reward_threshold == 4.0
    assert options.policy_config(vocab_size=1684).propensity == "learned"


@pytest.mark.parametrize("format, flags, correction", [
    ("csv", [], "none"),            # files: no correction by default (BENCHMARKS 9f)
    ("csv", ["--correction", "top_k"], "top_k"),
    ("synthetic", [], "top_k"),     # the simulator keeps the measured top-K correction
])
def test_files_default_to_no_correction(format, flags, correction):
    data = ["--data", "x.csv"] if format == "csv" else []
    options = train_pipeline.options_from_args(
        ["--model", "policy", "--format", format] + data + flags)
    assert options.policy_config(vocab_size=20).correction == correction
