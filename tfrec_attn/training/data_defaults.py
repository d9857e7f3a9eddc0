"""Model settings a run chooses from its training data when the user does not set them.

`SASRecConfig`'s own defaults (`max_len=50`, `dropout=0.2`, `exclude_seen=False`) suit
histories of moderate length with repeat consumption. Two properties of the data change what
measures best (docs/BENCHMARKS.md sections 3b, 3f and 10): history length, and repeats. Long
histories want a long window (the SASRec paper used 200 for MovieLens-1M and 50 elsewhere);
very short, sparse ones more dropout (the paper used 0.5 for its Amazon and Steam sets, which
average 7.6-11 events a user, and 0.2 for MovieLens-1M). Data where users never consume an item
twice lose nothing and gain accuracy when the softmax losses stop using window items as
negatives. The refit on the validation events (`run._refit`) adds each user's most recent
event to training: a large, recent share of short histories, noise beside long ones.
"""

import numpy as np

LONG_HISTORY_MEAN = 50  # mean training events per user above which histories count as long
LONG_MAX_LEN = 200
SHORT_MAX_LEN = 50
SPARSE_HISTORY_MEAN = 20  # mean training events per user at or below which data count as sparse
SPARSE_DROPOUT = 0.5  # Amazon Toys (6.6 training events a user): best on two seeds
DENSE_DROPOUT = 0.2  # SASRecConfig's default: best on ML-100K (104) and the synthetic default (28)
MAX_REPEAT_RATE = 0.01  # repeat consumptions per position below which exclude_seen is chosen


def mean_length(train: list[np.ndarray]) -> float:
    """Mean events per training sequence.

    >>> mean_length([np.array([2, 3]), np.array([4, 5, 6, 7])])
    3.0
    """
    return float(np.mean([len(s) for s in train])) if len(train) else 0.0


def repeat_rate(train: list[np.ndarray]) -> float:
    """Share of positions after the first whose item already occurred earlier in its sequence.

    >>> repeat_rate([np.array([2, 3, 2]), np.array([4, 5])])
    0.3333333333333333
    """
    repeats = positions = 0
    for seq in train:
        seq = np.asarray(seq)
        if len(seq) < 2:
            continue
        _, first = np.unique(seq, return_index=True)
        repeats += len(seq) - len(first)
        positions += len(seq) - 1
    return repeats / positions if positions else 0.0


def choose_data_defaults(model: dict, train: list[np.ndarray]) -> tuple[dict, dict]:
    """`model` (SASRecConfig fields) with `max_len`, `dropout` and `exclude_seen` chosen from
    `train` when absent, and a report of each choice (`{"max_len": {"value", "reason"}, ...}`).

    Rules: `max_len` is 200 when the mean training sequence is longer than 50 events, else 50;
    `dropout` is 0.5 when it is at most 20 events, else 0.2; `exclude_seen` is on when fewer
    than 1% of positions repeat an earlier item of their sequence (and the loss is not
    `"bce"`, which has no such option). Fields the user set are kept as they are and not
    reported.

    Example:
    >>> fields, report = choose_data_defaults({"dim": 32}, [np.arange(2, 80)] * 3)
    >>> fields["max_len"], fields["dropout"], fields["exclude_seen"], fields["dim"]
    (200, 0.2, True, 32)
    """
    fields, report = dict(model), {}
    mean = mean_length(train)
    for name, threshold, above, below in (
            ("max_len", LONG_HISTORY_MEAN, LONG_MAX_LEN, SHORT_MAX_LEN),
            ("dropout", SPARSE_HISTORY_MEAN, DENSE_DROPOUT, SPARSE_DROPOUT)):
        if name not in fields:
            over = mean > threshold
            fields[name] = above if over else below
            reason = f"mean training history {mean:.1f} events {'>' if over else '<='} {threshold}"
            report[name] = {"value": fields[name], "reason": reason}
    if "exclude_seen" not in fields and fields.get("loss") != "bce":
        rate = repeat_rate(train)
        fields["exclude_seen"] = rate < MAX_REPEAT_RATE
        report["exclude_seen"] = {
            "value": fields["exclude_seen"],
            "reason": f"{rate:.2%} of training positions repeat an earlier item "
                      f"({'<' if fields['exclude_seen'] else '>='} {MAX_REPEAT_RATE:.0%})"}
    return fields, report


def choose_refit(refit: bool | None, train: list[np.ndarray]) -> tuple[bool, dict]:
    """Whether a SASRec run refits on its validation events (`TrainOptions.refit`): `refit`
    when the user set it (an empty report), else on when the mean training sequence has at
    most 20 events (the sparse data of `choose_data_defaults`' dropout), with a report
    `{"refit": {"value", "reason"}}`.

    The validation event is one in eight of a user's events on the SASRec paper's Amazon
    Games set (7.3 training events a user), and its most recent: the refit lifted test NDCG@10
    from 0.518-0.520 to 0.559-0.560. On ML-100K (104 events a user) it is one in a hundred, and
    retraining measured 0.002-0.005 lower (docs/BENCHMARKS.md section 11b).

    Example:
    >>> choose_refit(None, [np.arange(2, 9)] * 3)
    (True, {'refit': {'value': True, 'reason': 'mean training history 7.0 events <= 20'}})
    >>> choose_refit(None, [np.arange(2, 80)] * 3)[0], choose_refit(True, [np.arange(2, 80)])
    (False, (True, {}))
    """
    if refit is not None:
        return bool(refit), {}
    mean = mean_length(train)
    value = mean <= SPARSE_HISTORY_MEAN
    reason = f"mean training history {mean:.1f} events {'<=' if value else '>'} " \
             f"{SPARSE_HISTORY_MEAN}"
    return value, {"refit": {"value": value, "reason": reason}}
