"""Masks in one place: the large negative, causal masks, mask merging and masked softmax.

Every attention variant builds its boolean `(batch, 1 | heads, T, S)` mask here, so padding and
causality behave identically across the family. All ops are TFLite builtins (comparisons, casts,
`where`, `softmax`), also with dynamic batch and length: new axes come from `expand_axes`.
"""

from tfrec_attn._keras import tf
from tfrec_attn.layers.utils import expand_axes

# A score no real item reaches, for float paths that need a constant (e.g. evaluation).
# Graphs use `fill_masked` instead: a huge constant would set the int8 quantization range of
# the tensor it enters and collapse every real value to the same step.
LARGE_NEGATIVE = -1e9


def fill_masked(values: tf.Tensor, keep, margin: float, axis: int = -1) -> tf.Tensor:
    """`values` where `keep`, else the row minimum minus `margin` (quantization-friendly).

    Masked entries rank below every kept entry of their row (and after softmax with
    `margin >= 16` weigh less than `e^-16` of the row's largest), while the tensor's range stays
    that of the real values, so int8 post-training quantization keeps its resolution.

    Example:
    >>> fill_masked(tf.constant([[3.0, 1.0, 2.0]]), tf.constant([[True, False, True]]), 1.0)
    ... # doctest: +ELLIPSIS
    <tf.Tensor: ... numpy=array([[3., 0., 2.]], dtype=float32)>
    """
    floor = tf.reduce_min(values, axis=axis, keepdims=True) - margin
    return tf.where(keep, values, floor)


def causal_mask(query_length, key_length) -> tf.Tensor:
    """Boolean `(1, T, S)` mask letting query `i` see keys `j <= i + (S - T)`.

    Queries and keys are aligned at their ends, which for self-attention (`T == S`) is the usual
    lower-triangular mask.

    Example:
    >>> causal_mask(3, 3).numpy()[0].astype(int).tolist()
    [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    """
    rows = expand_axes(tf.range(query_length), 1) + (key_length - query_length)
    cols = expand_axes(tf.range(key_length), 0)
    return expand_axes(tf.greater_equal(rows, cols), 0)


def check_mask_shape(owner: str, name: str, mask, expected, layout: str) -> None:
    """Raises a ValueError naming `name` when `mask`'s static shape cannot be `expected`.

    Dimensions unknown on either side (dynamic batch or length) pass: only what is statically
    known is checked, so graphs with dynamic shapes and TFLite conversion are unaffected.

    Example:
    >>> check_mask_shape("Demo", "mask", tf.ones((2, 6), tf.bool), (2, 5), "(batch, T)")
    Traceback (most recent call last):
    ...
    ValueError: Demo expects mask of shape (2, 5) (batch, T). Received: shape (2, 6)
    """
    if mask is None or getattr(mask, "shape", None) is None:
        return
    received, expected = tf.TensorShape(mask.shape), tf.TensorShape(expected)
    if not received.is_compatible_with(expected):
        raise ValueError(f"{owner} expects {name} of shape {tuple(expected.as_list())} {layout}. "
                         f"Received: shape {tuple(received.as_list())}")


def merge_masks(
    query_mask=None,
    value_mask=None,
    attention_mask=None,
    causal: bool = False,
    query_length=None,
    key_length=None,
):
    """Combines padding, explicit and causal masks into one boolean `(batch, 1, T, S)` mask.

    Args:
        query_mask: `(batch, T)` boolean, `True` for real query positions, or `None`.
        value_mask: `(batch, S)` boolean, `True` for real key/value positions, or `None`.
        attention_mask: `(batch, T, S)` boolean, or `None`.
        causal: whether query `i` may only see keys up to `i` (end-aligned).
        query_length: `T`, needed when `causal`.
        key_length: `S`, needed when `causal`.

    Returns:
        A boolean `(batch | 1, 1, T | 1, S)` tensor, or `None` when nothing is masked.

    Example:
    >>> m = merge_masks(value_mask=tf.constant([[False, True, True]]), causal=True,
    ...                 query_length=3, key_length=3)
    >>> m.numpy()[0, 0].astype(int).tolist()
    [[0, 0, 0], [0, 1, 0], [0, 1, 1]]
    """
    mask = None

    def _and(a, b):
        return b if a is None else tf.logical_and(a, b)

    if value_mask is not None:
        mask = _and(mask, expand_axes(tf.cast(value_mask, tf.bool), 1, 2))
    if query_mask is not None:
        mask = _and(mask, expand_axes(tf.cast(query_mask, tf.bool), 1, 3))
    if attention_mask is not None:
        mask = _and(mask, expand_axes(tf.cast(attention_mask, tf.bool), 1))
    if causal:
        mask = _and(mask, expand_axes(causal_mask(query_length, key_length), 1))
    return mask


def masked_softmax(logits: tf.Tensor, mask=None, axis: int = -1,
                   zero_masked_logits: bool = False) -> tf.Tensor:
    """Softmax in float32 where masked positions get exactly zero weight.

    Rows with no visible position (e.g. padded queries) get all-zero weights rather than a uniform
    distribution, so padding never leaks into outputs.

    Masked logits are replaced by a fill value taken from the row minimum (`fill_masked`). With
    `zero_masked_logits=True` they are set to 0 first, so their values (e.g. computed from padded
    content) cannot move the fill value, nor, in int8, the logits' range: use it when masked
    logits may hold arbitrary numbers.

    Example:
    >>> w = masked_softmax(tf.zeros((1, 3)), tf.constant([[True, True, False]]))
    >>> w.numpy().round(2).tolist()
    [[0.5, 0.5, 0.0]]
    """
    logits = tf.cast(logits, tf.float32)
    if mask is None:
        return tf.nn.softmax(logits, axis=axis)
    # `where` and the product broadcast `mask` to the logits. Not a LOGICAL_AND: TF 2.20's own
    # TFLite kernel, which its int8 calibrator runs, aborts the process on a LOGICAL_AND
    # broadcast above rank 4 (local and low-rank attention's `(B, 1, blocks, w, keys)` masks).
    mask = tf.cast(mask, tf.bool)
    if zero_masked_logits:
        logits = tf.where(mask, logits, tf.zeros_like(logits))
    weights = tf.nn.softmax(fill_masked(logits, mask, 16.0, axis=axis), axis=axis)
    return weights * tf.cast(mask, tf.float32)


def ids_to_oov(ids: tf.Tensor, vocab_size: int, oov_id: int = 1) -> tf.Tensor:
    """int64 ids with every id outside `[0, vocab_size)` replaced by `oov_id`.

    The one rule every serving path (SavedModel signatures, TFLite) applies to request ids.

    Example:
    >>> ids_to_oov(tf.constant([[3, -2, 99]]), vocab_size=10).numpy().tolist()
    [[3, 1, 1]]
    """
    ids = tf.cast(ids, tf.int64)
    in_range = tf.logical_and(ids >= 0, ids < vocab_size)
    return tf.where(in_range, ids, tf.constant(oov_id, tf.int64))


def sequence_mask_from_ids(ids: tf.Tensor, pad_id: int = 0) -> tf.Tensor:
    """`True` where `ids != pad_id`; the explicit padding mask models pass between layers."""
    return tf.not_equal(ids, tf.cast(pad_id, ids.dtype))


def apply_sequence_mask(outputs: tf.Tensor, mask=None) -> tf.Tensor:
    """Zeroes `(batch, T, ...)` outputs at padded positions (`mask` is `(batch, T)`)."""
    if mask is None:
        return outputs
    mask = tf.cast(mask, outputs.dtype)
    for _ in range(outputs.shape.rank - 2):
        mask = expand_axes(mask, -1)
    return outputs * mask
