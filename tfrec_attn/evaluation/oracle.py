"""The Bayes-optimal next-item scorer for `generate_synthetic` data: the ceiling of any model.

The synthetic generator draws the next item as a successor of the previous item with probability
`p` (1-2 successors, uniformly) and otherwise as a "fresh" item from the user's group
distribution `q_g` (popularity times genre preference). Knowing that process, the best possible
ranking given a history `h` (the same input a model sees) is by

    P(next = i | h) = p * succ(h_last, i) + (1 - p) * sum_g P(g | h) q_g(i),

with the group posterior `P(g | h)` from the likelihood of the whole history under each group
(uniform prior, as the generator assigns groups uniformly). No model can rank better in
expectation, so `model / oracle` says how much of the learnable structure a model found, and the
gap between a baseline and the oracle bounds how "clearly" any model can beat that baseline.

Hand-written: no library knows this generator's process.

Example:
>>> from tfrec_attn.data import build_sequences, generate_synthetic
>>> frame = generate_synthetic(num_users=50, num_items=30, mean_length=8)
>>> data = build_sequences(frame)
>>> oracle = SyntheticOracle.from_frame(frame, data.vocab)
>>> scores = oracle.score([data.sequences[0]])
>>> mass = np.exp(scores[0, 2:]).sum()  # < 1 only by items the data never shows
>>> scores.shape == (1, data.vocab_size), bool(0.9 < mass <= 1.0 + 1e-9)
(True, True)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tfrec_attn.evaluation._ids import FIRST_ITEM_ID

_REQUIRED_ATTRS = ("item_features", "successors", "group_genres", "params")


class SyntheticOracle:
    """Scores histories by the generating process's true next-item log-probabilities.

    Args:
        group_probs: `(num_groups, vocab_size)` fresh-item distribution of each group, in id
            space (padding/OOV columns zero).
        successors: int `(vocab_size, 2)`: each id's two successor ids (equal when it has one).
        successor_prob: probability that the next item follows a successor link.

    Call `score(histories)` with chronological id arrays; returns float64 `(B, vocab_size)` log
    probabilities, `-inf` for padding, OOV and items that cannot come next.
    """

    def __init__(self, group_probs: np.ndarray, successors: np.ndarray, successor_prob: float):
        group_probs = np.asarray(group_probs, dtype=np.float64)
        successors = np.asarray(successors, dtype=np.int64)
        if group_probs.ndim != 2 or successors.shape != (group_probs.shape[1], 2):
            raise ValueError(
                f"group_probs must be (groups, vocab) and successors (vocab, 2). Received: "
                f"{group_probs.shape} and {successors.shape}")
        if not 0.0 <= successor_prob <= 1.0:
            raise ValueError(f"successor_prob must be in [0, 1]. Received: {successor_prob}")
        self.group_probs = group_probs
        self.successors = successors
        self.successor_prob = float(successor_prob)

    @classmethod
    def from_frame(cls, frame, vocab) -> SyntheticOracle:
        """Rebuilds the process from a `generate_synthetic` frame's `attrs` and the run's
        `Vocabulary` (raw item `"k"` is generator index `k - 1`)."""
        missing = [name for name in _REQUIRED_ATTRS if name not in frame.attrs]
        if missing:
            raise ValueError(
                f"frame.attrs lacks {missing}: the oracle needs a frame from generate_synthetic "
                f"(attrs are lost by slicing or concatenating the frame).")
        items = frame.attrs["item_features"]
        params = frame.attrs["params"]
        raw_ids = vocab.lookup(items["item"].astype(str))  # generator index -> id (OOV if unseen)
        vocab_size = vocab.size
        known = raw_ids >= FIRST_ITEM_ID
        liked = np.zeros((params["num_groups"], int(items["genre"].max()) + 1), dtype=bool)
        genres = frame.attrs["group_genres"]
        liked[genres["group"].to_numpy(), genres["genre"].to_numpy()] = True
        weights = items["popularity"].to_numpy()[None, :] * np.where(
            liked[:, items["genre"].to_numpy()], 1.0, params["off_genre_weight"])
        weights /= weights.sum(axis=1, keepdims=True)
        group_probs = np.zeros((len(weights), vocab_size))
        group_probs[:, raw_ids[known]] = weights[:, known]
        links = frame.attrs["successors"]
        source = vocab.lookup(links["item"].astype(str))
        target = vocab.lookup(links["successor"].astype(str))
        successors = np.full((vocab_size, 2), -1, dtype=np.int64)  # -1: an id never seen
        for s, t in zip(source, target, strict=True):  # one or two links an item
            slot = 0 if successors[s, 0] < 0 else 1
            successors[s, slot] = t
        successors[:, 1] = np.where(successors[:, 1] < 0, successors[:, 0], successors[:, 1])
        return cls(group_probs, successors, params["successor_prob"])

    def _successor_probs(self, previous: np.ndarray, current: np.ndarray) -> np.ndarray:
        """succ(previous, current) for aligned id arrays: 0, 0.5 or 1."""
        links = self.successors[previous]
        return 0.5 * (links[:, 0] == current) + 0.5 * (links[:, 1] == current)

    def group_log_posterior(self, history: np.ndarray) -> np.ndarray:
        """`log P(g | history)` for each group (uniform prior)."""
        history = np.asarray(history, dtype=np.int64)
        history = history[history >= FIRST_ITEM_ID]
        with np.errstate(divide="ignore"):
            if history.size == 0:
                loglik = np.zeros(len(self.group_probs))
            else:
                fresh = self.group_probs[:, history]  # (G, T)
                step = (1.0 - self.successor_prob) * fresh
                step[:, 1:] += self.successor_prob * self._successor_probs(history[:-1],
                                                                           history[1:])
                step[:, 0] = fresh[:, 0]
                loglik = np.log(step).sum(axis=1)
        loglik -= loglik.max()
        return loglik - np.log(np.exp(loglik).sum())

    def score(self, histories_batch: Sequence[np.ndarray]) -> np.ndarray:
        """Float64 `(B, vocab_size)` next-item log-probabilities."""
        out = np.empty((len(histories_batch), self.group_probs.shape[1]))
        for row, history in enumerate(histories_batch):
            history = np.asarray(history, dtype=np.int64)
            posterior = np.exp(self.group_log_posterior(history))
            probs = (1.0 - self.successor_prob) * (posterior @ self.group_probs)
            real = history[history >= FIRST_ITEM_ID]
            if real.size:
                for slot in self.successors[real[-1]]:
                    if slot >= FIRST_ITEM_ID:
                        probs[slot] += 0.5 * self.successor_prob
            with np.errstate(divide="ignore"):
                out[row] = np.log(probs)
            out[row, :FIRST_ITEM_ID] = -np.inf
        return out
