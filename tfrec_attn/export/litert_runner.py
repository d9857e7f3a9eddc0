"""Runs a `.tflite` recommender from `convert_to_tflite` with the LiteRT interpreter.

Deliberately small: a mobile app mirrors it (load, check the input, run `recommend`).
"""

import os

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from tfrec_attn.export.tflite import SIGNATURE

# What each signature a converter writes marks a file as, and the runner that reads it
# (`recommend` files of `convert_policy_to_tflite` / `convert_autoencoder_to_tflite`: their own
# `LiteRTRecommender` subclasses). Named when a file is opened by the wrong runner.
FILE_KINDS = {SIGNATURE: ("a top-k recommender file (convert_to_tflite)", "LiteRTRecommender"),
              "score": ("a ranker file (convert_ranker_to_tflite)", "LiteRTRanker")}


# The `recommend` signatures the converters write, by `(input, sorted outputs)`: what each marks
# a file as, and its runner. Named when a file is opened by the runner of another kind.
RECOMMEND_FILES = {
    ("history", ("item_ids", "scores")): FILE_KINDS[SIGNATURE],
    ("history", ("item_ids", "probabilities")): ("a policy file (convert_policy_to_tflite)",
                                                 "LiteRTPolicy"),
    ("items", ("item_ids", "scores")): ("an autoencoder file (convert_autoencoder_to_tflite)",
                                        "LiteRTAutoencoder"),
}


def signature_runner(interpreter: Interpreter, path: str | os.PathLike, signature: str):
    """`interpreter`'s runner of `signature`, or a `ValueError` saying the file at `path` is
    not the kind that signature marks: the signatures it has, and the runner for them."""
    signatures = sorted(interpreter.get_signature_list())
    if signature not in signatures:
        kind = FILE_KINDS.get(signature, (f"a file with a {signature!r} signature",))[0]
        runners = sorted({FILE_KINDS[name][1] for name in signatures if name in FILE_KINDS})
        hint = f"; open it with {' or '.join(runners)}" if runners else ""
        raise ValueError(f"{os.fspath(path)} is not {kind}: it has no {signature!r} signature "
                         f"(its signatures: {signatures}){hint}.")
    return interpreter.get_signature_runner(signature)


class LiteRTRecommender:
    """Top-k recommendations from a `.tflite` file's `recommend` signature.

    Ids outside `[0, vocab)` (negative, unknown) are mapped to the OOV id (1) inside the model,
    as in the SavedModel; padding is 0 on the left (`tfrec_attn.data.pad_left`).

    Args:
        path: the `.tflite` file.
        num_threads: interpreter threads; `None` lets LiteRT choose.

    Example:
        >>> recommender = LiteRTRecommender("sasrec.tflite")  # doctest: +SKIP
        >>> recommender.recommend(pad_left([[5, 9, 7]], recommender.max_len))  # doctest: +SKIP
        {'item_ids': array([[...]]), 'scores': array([[...]], dtype=float32)}
    """

    input_name = "history"  # the signature's input; subclasses for other files change these
    argument = "histories"  # what error messages call the input
    output_names = ("item_ids", "scores")  # returned outputs, `item_ids` int64, others float32

    def __init__(self, path: str | os.PathLike, num_threads: int | None = None):
        self._interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
        self._runner = signature_runner(self._interpreter, path, SIGNATURE)
        self._check_layout(path)
        shape = self._runner.get_input_details()[self.input_name]["shape_signature"]
        self.max_len = int(shape[1])
        # A dynamic batch (-1) is resized per call by the signature runner; else one row a call.
        self.dynamic_batch = int(shape[0]) == -1
        self.k = int(self._runner.get_output_details()["item_ids"]["shape_signature"][1])

    def _check_layout(self, path: str | os.PathLike) -> None:
        """A `ValueError` naming the file's kind and runner unless its `recommend` signature has
        this runner's input and outputs (policy and autoencoder files also have `recommend`)."""
        inputs = sorted(self._runner.get_input_details())
        outputs = sorted(self._runner.get_output_details())
        expected = (self.input_name, tuple(sorted(self.output_names)))
        if (tuple(inputs), tuple(outputs)) == ((expected[0],), expected[1]):
            return
        kind = RECOMMEND_FILES.get(expected, (f"a {type(self).__name__} file",))[0]
        found = RECOMMEND_FILES.get((inputs[0], tuple(outputs))) if len(inputs) == 1 else None
        hint = f"; open it with {found[1]}" if found else ""
        raise ValueError(f"{os.fspath(path)} is not {kind}: its {SIGNATURE!r} signature takes "
                         f"{inputs} and returns {outputs}{hint}.")

    def _check(self, histories) -> np.ndarray:
        histories, name = np.asarray(histories), self.argument
        if histories.dtype.kind not in "iu":
            raise ValueError(f"{name} must be integer item ids. Received dtype {histories.dtype}")
        if histories.ndim != 2:
            raise ValueError(
                f"{name} must be 2-D (n, max_len={self.max_len}); use {name}[None] for one row. "
                f"Received shape {histories.shape}")
        if histories.shape[1] != self.max_len:
            raise ValueError(
                f"{name} must have length max_len={self.max_len} (left-pad with 0, see "
                f"tfrec_attn.data.pad_left). Received shape {histories.shape}")
        return histories.astype(np.int64)

    def recommend(self, histories: np.ndarray) -> dict[str, np.ndarray]:
        """`(n, max_len)` int ids -> `{"item_ids": int64 (n, k), "scores": float32 (n, k)}`."""
        histories = self._check(histories)
        if not len(histories):
            return {name: np.zeros((0, self.k), np.int64 if name == "item_ids" else np.float32)
                    for name in self.output_names}
        rows = [histories] if self.dynamic_batch else [row[None] for row in histories]
        outputs = [self._runner(**{self.input_name: row}) for row in rows]
        return {name: np.concatenate([out[name] for out in outputs])
                for name in self.output_names}
