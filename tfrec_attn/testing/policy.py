"""The NumPy reference the attention policy's serving tests (SavedModel, TFLite) compare with."""

import numpy as np

from tfrec_attn._keras import keras, tf
from tfrec_attn.models.losses import FIRST_ITEM_ID


def policy_reference(network: keras.Model, histories: np.ndarray, k: int,
                     exclude_history: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """`(item_ids, probabilities)`, each `(n, k)`: the top-k actions of the Keras network's
    logits (ties to the lower id; never padding, OOV or, with `exclude_history`, history
    items) and `pi(a|s)`, the softmax over ids `>= 2` (not renormalized after exclusions).

    Example:
    >>> from tfrec_attn.models import AttentionPolicyConfig, build_policy_network
    >>> net = build_policy_network(AttentionPolicyConfig(vocab_size=8, max_len=3, dim=4))
    >>> ids, probabilities = policy_reference(net, np.array([[0, 2, 3]]), k=4)
    >>> sorted(ids[0].tolist()), round(float(probabilities.sum()), 5) < 1
    ([4, 5, 6, 7], True)
    """
    logits = network(tf.constant(histories), training=False)["logits"].numpy()
    masked = logits.copy()
    masked[:, :FIRST_ITEM_ID] = -np.inf
    if exclude_history:
        for row, history in zip(masked, histories):
            row[history[history > 0]] = -np.inf
    ids = np.argsort(-masked, axis=1, kind="stable")[:, :k]
    actions = logits[:, FIRST_ITEM_ID:]
    top = actions.max(axis=1, keepdims=True)
    log_norm = top + np.log(np.exp(actions - top).sum(axis=1, keepdims=True))
    return ids, np.exp(np.take_along_axis(logits, ids, 1) - log_norm)
