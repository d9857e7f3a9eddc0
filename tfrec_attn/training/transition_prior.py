"""Setting a trained `SASRec`'s transition prior: the table from the training data, the mixing
weight from validation data.

The exact item-to-item transition counts of the training sequences are the co-occurrence
baseline's signal; the model's embeddings smooth over them. `SASRecConfig(transition_neighbors=N)`
gives the model a `layers.TransitionPrior` that mixes them into its catalogue distribution;
`fit_transition_prior` fills its table (`CooccurrenceRecommender.neighbor_table`, the baseline's
settings) and chooses the mixing weight with the best validation NDCG@10 from `MIXES` (0
included: the prior is switched off when it does not help). Measured in docs/BENCHMARKS.md
section 3m. With `SASRecConfig(item_item_neighbors=M)` the prior also holds an EASE item-item
table over the whole history; `fit_item_item` fills it and chooses its L2 weight and scale on
validation after the mixture weight (section 3p).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from tfrec_attn._keras import tf
from tfrec_attn.data import pad_left
from tfrec_attn.evaluation import CooccurrenceRecommender, evaluate
from tfrec_attn.models.sasrec import SASRec, build_scoring_model
from tfrec_attn.training.scoring import make_score_fn

MIXES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)  # the weights `fit_transition_prior` tries
MONITOR = "ndcg@10"
CHUNK = 2048  # validation users scored at once (their logits are kept for every weight)
SCORE_BUDGET = 2 ** 24  # at most this many (user, item) scores a chunk: 64 MB a float matrix


def fit_transition_prior(
    model: SASRec,
    train: Sequence[np.ndarray],
    valid_histories: Sequence[np.ndarray],
    valid_targets: np.ndarray,
    protocol: str = "full",
    seed: int = 0,
    mixes: Sequence[float] = MIXES,
) -> dict:
    """Fills `model.transition_prior`'s table from `train` and sets its weight on validation.

    Args:
        model: a trained `SASRec` with `config.transition_neighbors > 0`.
        train: the training sequences (the run's `split.train`).
        valid_histories: validation histories (chronological id arrays).
        valid_targets: their held-out items.
        protocol: the ranking protocol the weight is chosen under (`"full"`, `"sampled-N"`).
        seed: seeds a sampled protocol's negatives (the same for every weight).
        mixes: the weights tried, each in `[0, 1)`.

    Returns:
        `{"mix": chosen weight, "neighbors": table width, "valid": {weight: NDCG@10}}` (weights
        as strings, JSON keys); the highest NDCG@10 wins, the smaller weight on a tie.

    Raises:
        ValueError: the model has no transition prior, no validation row, or a weight outside
            `[0, 1)`.
    """
    prior = _prior_of(model)
    _check_validation_rows("fit_transition_prior", "the weight", valid_targets)
    mixes = [float(m) for m in mixes]
    bad = [m for m in mixes if not 0.0 <= m < 1.0]
    if not mixes or bad:
        raise ValueError(f"mixes must be weights in [0, 1). Received: {mixes}")
    fill_transition_prior(model, train)
    gains = {m: [] for m in mixes}
    for rows in _validation_chunks(model, valid_histories, valid_targets):
        for mix in mixes:
            gains[mix].append(rows.ndcg_sum(prior([rows.logits, rows.padded], mix=mix).numpy(),
                                            protocol, seed))
    valid = {m: float(np.sum(g) / len(valid_targets)) for m, g in gains.items()}
    chosen = max(mixes, key=lambda m: (round(valid[m], 12), -m))
    prior.set_mix(chosen)
    return {"mix": chosen, "neighbors": prior.num_neighbors,
            "valid": {str(m): round(v, 6) for m, v in valid.items()}}


def fill_transition_prior(model: SASRec, train: Sequence[np.ndarray],
                          mix: float | None = None) -> None:
    """Fills `model.transition_prior`'s table from `train` (the co-occurrence baseline's
    transition counts) and, when given, sets its weight `mix`: how a run's refitted model
    takes the prior `fit_transition_prior` chose on validation for the model before it.

    Args:
        model: a `SASRec` with `config.transition_neighbors > 0`.
        train: the sequences the table counts transitions in.
        mix: the weight in `[0, 1)`; `None` leaves it as it is.

    Example:
    >>> from tfrec_attn.models import SASRecConfig
    >>> model = SASRec(SASRecConfig(vocab_size=6, max_len=3, dim=4, transition_neighbors=2))
    >>> _ = model(tf.constant([[0, 2, 3]]))  # builds the prior's variables
    >>> fill_transition_prior(model, [np.array([2, 3, 4])], mix=0.3)
    >>> round(float(model.transition_prior.mix.numpy()), 2)
    0.3
    """
    prior = _prior_of(model)
    baseline = CooccurrenceRecommender(model.config.vocab_size).fit(train)
    prior.set_table(*baseline.neighbor_table(prior.num_neighbors))
    if mix is not None:
        prior.set_mix(float(mix))


ITEM_ITEM_LAMBDAS = (50.0, 200.0, 500.0, 1000.0)  # EASE's L2 weights `fit_item_item` tries
ITEM_ITEM_SCALES = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)  # and the term's weights


def ease_table(train: Sequence[np.ndarray], vocab_size: int, l2: float, width: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """EASE (Steck, 2019) on `train`: `B = I - P / diag(P)`, `P = (X^T X + l2 I)^-1`, `X`
    the binary user-item matrix (one row per sequence), `diag(B) = 0`; each item's `width`
    largest weights by magnitude (negative ones too) as `(ids, weights)`, `(vocab_size,
    width)` with 0 in unused slots. Ids below 2 (padding, OOV) are left out. Hand-written:
    no maintained library computes EASE on a `tf.data`-free numpy input this small.

    Example:
    >>> ids, weights = ease_table([np.array([2, 3]), np.array([2, 3]), np.array([4])], 5,
    ...                           l2=1.0, width=1)
    >>> ids[2].tolist(), bool(weights[2, 0] > 0)
    ([3], True)
    """
    import scipy.sparse  # a dependency of tensorflow's

    items = vocab_size - 2
    rows = np.repeat(np.arange(len(train)), [len(s) for s in train])
    cols = np.concatenate([np.asarray(s, np.int64) for s in train]) if len(train) else []
    x = scipy.sparse.csr_matrix((np.ones(len(rows)), (rows, np.asarray(cols) - 2)),
                                shape=(len(train), items))
    x.data[:] = 1.0  # binary: a repeated item counts once
    gram = (x.T @ x).toarray()
    gram[np.diag_indices(items)] += l2
    b = np.linalg.inv(gram)
    del gram
    b /= -np.diag(b)[None, :]  # in place: the items x items matrices are the memory
    np.fill_diagonal(b, 0.0)
    width_kept = min(width, items)
    top = np.argpartition(-np.abs(b), width_kept - 1, axis=1)[:, :width_kept]
    kept = np.take_along_axis(b, top, axis=1)
    ids = np.zeros((vocab_size, width), np.int64)
    weights = np.zeros((vocab_size, width))
    ids[2:, :width_kept] = np.where(kept != 0.0, top + 2, 0)
    weights[2:, :width_kept] = np.clip(kept, -127.0, 127.0)
    return ids, weights


def fit_item_item(model: SASRec, train: Sequence[np.ndarray],
                  valid_histories: Sequence[np.ndarray], valid_targets: np.ndarray,
                  protocol: str = "full", seed: int = 0, l2s: Sequence[float] = ITEM_ITEM_LAMBDAS,
                  scales: Sequence[float] = ITEM_ITEM_SCALES) -> dict:
    """Fills the prior's item-item table with `ease_table(train, ...)` and chooses its `l2`
    and weight (`item_item_scale`) on validation NDCG@10, after the prior's mixture weight
    (`fit_transition_prior`, which must run first). Scale 0 is among the choices, so the
    term is switched off when it does not help. docs/BENCHMARKS.md section 3p.

    Returns:
        `{"l2", "scale", "neighbors", "valid": {"l2/scale": NDCG@10}}`.
    """
    prior = _prior_of(model)
    if not prior.item_item_neighbors:
        raise ValueError("model's transition prior has no item-item table: build it with "
                         "SASRecConfig(item_item_neighbors=N), N > 0.")
    _check_validation_rows("fit_item_item", "lambda and the scale", valid_targets)
    width = prior.item_item_neighbors
    tables = {l2: ease_table(train, model.config.vocab_size, l2, width) for l2 in l2s}
    gains = {(l2, scale): 0.0 for l2 in l2s for scale in scales}
    # each chunk's gathered (position, neighbour) weights within the budget too
    for rows in _validation_chunks(model, valid_histories, valid_targets,
                                   SCORE_BUDGET // (model.config.max_len * width)):
        mixed = prior([rows.logits, rows.padded],
                      item_item_scale=0.0).numpy()  # the mixture, as `fit_transition_prior` set
        for l2, table in tables.items():
            prior.set_item_item_table(*table)
            term = prior.item_item_scores(rows.padded).numpy()
            for scale in scales:
                gains[(l2, scale)] += rows.ndcg_sum(mixed + np.float32(scale) * term,
                                                    protocol, seed)
    valid = {key: gain / len(valid_targets) for key, gain in gains.items()}
    l2, scale = max(valid, key=lambda key: (round(valid[key], 12), -key[1], -key[0]))
    prior.set_item_item_table(*tables[l2])
    prior.set_item_item_scale(scale)
    return {"l2": l2, "scale": scale, "neighbors": prior.item_item_neighbors,
            "valid": {f"{k[0]:g}/{k[1]:g}": round(v, 6) for k, v in valid.items()}}


def fill_item_item(model: SASRec, train: Sequence[np.ndarray], l2: float, scale: float) -> None:
    """Fills the prior's item-item table from `train` with `l2` and sets its weight: how a
    refitted model takes what `fit_item_item` chose for the model before it."""
    prior = _prior_of(model)
    prior.set_item_item_table(*ease_table(train, model.config.vocab_size, l2,
                                          prior.item_item_neighbors))
    prior.set_item_item_scale(scale)


def _check_validation_rows(caller: str, what: str, valid_targets) -> None:
    if not len(valid_targets):
        raise ValueError(f"{caller} needs validation rows to choose {what}. "
                         "Received: 0 validation targets")


@dataclasses.dataclass
class _Rows:
    """A chunk of validation users: their model logits (no prior) and padded histories."""

    start: int
    histories: list
    targets: np.ndarray
    logits: tf.Tensor
    padded: tf.Tensor
    vocab_size: int

    def ndcg_sum(self, scores: np.ndarray, protocol: str, seed: int) -> float:
        """The chunk's NDCG@10 under `scores`, summed over its users (the same negatives for
        every candidate setting: seeded by `seed` and the chunk's start)."""
        summary = evaluate(lambda _: scores, self.histories, self.targets, self.vocab_size,
                           protocol, ks=(10,), seed=seed + self.start,
                           batch_size=len(self.histories))
        return summary[MONITOR] * len(self.histories)


def _validation_chunks(model: SASRec, valid_histories, valid_targets, users: int | None = None):
    """`_Rows` of `valid_histories` / `valid_targets`, `CHUNK` users at most (and `users`),
    within `SCORE_BUDGET` scores: what both fits score every candidate setting on."""
    vocab_size, max_len = model.config.vocab_size, model.config.max_len
    logits_fn = make_score_fn(build_scoring_model(model.encoder), max_len)
    chunk = max(1, min(CHUNK, SCORE_BUDGET // vocab_size, users or CHUNK))
    for start in range(0, len(valid_targets), chunk):
        histories = list(valid_histories[start:start + chunk])
        yield _Rows(start, histories, np.asarray(valid_targets[start:start + chunk]),
                    tf.constant(logits_fn(histories)), tf.constant(pad_left(histories, max_len)),
                    vocab_size)


def _prior_of(model: SASRec):
    """`model.transition_prior`, or a `ValueError` saying how to build a model with one."""
    if model.transition_prior is None:
        raise ValueError("model has no transition prior: build it with "
                         "SASRecConfig(transition_neighbors=N), N > 0.")
    return model.transition_prior
