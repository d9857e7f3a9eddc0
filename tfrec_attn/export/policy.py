"""SavedModel export of the attention RL policy (`models.attention_policy`) for TF Serving.

The policy is served as a recommender: the top-k actions of `pi(.|s)` for the history's state,
with their probabilities under the policy, which is what a serving system logs as propensities
for the next off-policy training round.
"""

import os
from pathlib import Path

import numpy as np

from tfrec_attn._keras import keras, tf
from tfrec_attn.export.module_export import (
    find_layer,
    reject_pruning_wrappers,
    save_versioned_module,
)
from tfrec_attn.export.saved_model import at_least_one_position
from tfrec_attn.export.serving import write_warmup_requests
from tfrec_attn.layers import HistoryTopK, PositionEmbedding
from tfrec_attn.layers.masking import ids_to_oov
from tfrec_attn.models.attention_policy import AttentionPolicy
from tfrec_attn.models.losses import FIRST_ITEM_ID
from tfrec_attn.validation import check_int_up_to

HISTORY = tf.TensorSpec([None, None], tf.int64, name="history")


def policy_network(policy_or_network: AttentionPolicy | keras.Model
                   ) -> tuple[keras.Model, dict | None]:
    """`(network, config dict or None)` from an `AttentionPolicy` or its network."""
    if isinstance(policy_or_network, AttentionPolicy):
        return policy_or_network.network, policy_or_network.config.to_dict()
    try:
        outputs = policy_or_network.output
    except AttributeError:  # not a model, or one without outputs yet (an unbuilt Sequential)
        outputs = None
    if not isinstance(policy_or_network, keras.Model) or not isinstance(outputs, dict) \
            or "logits" not in outputs:
        raise ValueError("policy_or_network must be an AttentionPolicy or its network (a "
                         "functional model with a 'logits' output, see build_policy_network). "
                         f"Received: {policy_or_network!r}")
    reject_pruning_wrappers(policy_or_network, "policy_or_network", "network")
    return policy_or_network, None


def _max_len(network: keras.Model) -> int:
    """The history length the network's `PositionEmbedding` covers (wrapped or not)."""
    layer = find_layer(network, PositionEmbedding)
    if layer is not None:
        return layer.max_length
    raise ValueError(f"The network {network.name!r} has no PositionEmbedding to read max_len "
                     "from.")


class PolicyModule(tf.Module):
    """The exported policy: the network plus a TF Serving `serving_default` signature.

    Signature `serving_default`: `history` int64 `(batch, any length >= 0)` item ids,
    left-padded with 0 (the network reads the last `max_len`; ids outside `[0, vocab_size)` are
    read as OOV, 1; an empty history gets the policy's action for a history of padding only) ->
    `item_ids` int64 `(batch, max_k)`, the policy's `max_k` most likely actions (never padding
    or OOV; with `exclude_history`, never an item anywhere in the request, including those
    before the last `max_len`: send the whole history), and `probabilities` float32
    `(batch, max_k)`: `pi(a|s)`, the policy's softmax over all actions (ids `>= 2`), not
    renormalized after the exclusions. When the history leaves fewer than `max_k` actions, the
    slots left over hold id `-1` with probability 0.

    Args:
        policy_or_network: a trained `AttentionPolicy`, or its network (plain,
            `strip_pruning`'d or quantization-aware).
        max_k: how many actions to return; at most the number of actions (`vocab_size - 2`).
        exclude_history: bool. Never return items of the request's history.

    Example:
    >>> from tfrec_attn.models import AttentionPolicyConfig
    >>> policy = AttentionPolicy(AttentionPolicyConfig(vocab_size=10, max_len=3, dim=8))
    >>> module = PolicyModule(policy, max_k=2)
    >>> out = module.serve(tf.constant([[0, 2, 3]], tf.int64))
    >>> out["item_ids"].shape, bool((out["item_ids"] >= 4).numpy().all())
    (TensorShape([1, 2]), True)
    """

    def __init__(self, policy_or_network: AttentionPolicy | keras.Model, max_k: int = 10,
                 exclude_history: bool = True):
        super().__init__()
        self.network, self.config = policy_network(policy_or_network)
        self.vocab_size = int(self.network.output["logits"].shape[-1])
        self.max_len = (self.config["max_len"] if self.config else _max_len(self.network))
        actions = self.vocab_size - FIRST_ITEM_ID
        check_int_up_to("max_k", max_k, actions, "the number of actions")
        if not isinstance(exclude_history, bool):
            raise ValueError("exclude_history must be a bool. "
                             f"Received: exclude_history={exclude_history!r}")
        self.max_k = max_k
        self.exclude_history = exclude_history
        self.top_k = HistoryTopK(k=max_k, exclude_history=exclude_history, mark_unfilled=True)

    @tf.function(input_signature=[HISTORY])
    def serve(self, history):
        # Signatures do not check ranks at run time; `EnsureShape` does, naming the input.
        history = tf.ensure_shape(history, [None, None], name="check_history_rank")
        # The network reads the last `max_len` ids; every id of the request is excluded (as
        # SASRec's `RecommenderModule._top_k` does): a longer history is not truncated.
        every_id = ids_to_oov(history, self.vocab_size)
        state = at_least_one_position(every_id[:, -self.max_len:])
        logits = tf.cast(self.network(state, training=False)["logits"], tf.float32)
        item_ids, _ = self.top_k([logits, every_id])
        filled = item_ids >= FIRST_ITEM_ID  # unfilled slots hold -1 (`mark_unfilled`)
        log_norm = tf.reduce_logsumexp(logits[:, FIRST_ITEM_ID:], axis=-1, keepdims=True)
        chosen = tf.gather(logits, tf.where(filled, item_ids, 0), batch_dims=1)
        probabilities = tf.where(filled, tf.exp(chosen - log_norm), 0.0)
        return {"item_ids": item_ids, "probabilities": probabilities}

    def signatures(self) -> dict:
        return {"serving_default": self.serve}


def export_policy(policy_or_network: AttentionPolicy | keras.Model,
                  export_root: str | os.PathLike, name: str = "policy",
                  version: int | None = None, keep: int | None = None,
                  metadata: dict | None = None, warmup=None, max_k: int = 10,
                  exclude_history: bool = True) -> Path:
    """Exports the policy to `export_root/name/<version>/` atomically (TF Serving layout).

    Args:
        policy_or_network: a trained `AttentionPolicy` or its network (see `PolicyModule`).
        export_root: the model base path TF Serving watches.
        name: the model name (a directory).
        version: integer version `>= 0`; defaults to one more than the newest.
        keep: if set, delete all but the `keep` newest versions afterwards.
        metadata: JSON-serializable dict merged into `assets.extra/tfrec_attn.json` (which holds
            `config` (`None` for a bare network), `max_len`, `vocab_size`, `max_k`,
            `exclude_history` and the signature names).
        warmup: `(n, max_len)` real histories written as TF Serving warm-up requests.
        max_k: how many actions `serving_default` returns.
        exclude_history: bool. Never return items of the request's history (all of it, not
            only the last `max_len` the network reads).

    Returns:
        The path of the new version directory.

    Example:
    >>> import tempfile
    >>> from tfrec_attn.models import AttentionPolicyConfig
    >>> policy = AttentionPolicy(AttentionPolicyConfig(vocab_size=10, max_len=3, dim=8))
    >>> export_policy(policy, tempfile.mkdtemp(), max_k=2).parts[-2:]
    ('policy', '1')
    """
    module = PolicyModule(policy_or_network, max_k=max_k, exclude_history=exclude_history)
    info = {"config": module.config, "max_len": module.max_len,
            "vocab_size": module.vocab_size, "max_k": max_k,
            "exclude_history": exclude_history, **(metadata or {})}
    write_warmup = None
    if warmup is not None:
        histories = np.asarray(warmup)
        if histories.ndim != 2 or histories.dtype.kind not in "iu":
            raise ValueError("warmup must be an integer array (n, max_len) of real histories. "
                             f"Received dtype {histories.dtype}, shape {histories.shape}")

        def write_warmup(path):
            return write_warmup_requests(path, histories, model_name=name)

    return save_versioned_module(module, module.signatures(), export_root, name, version=version,
                                 keep=keep, info=info, write_warmup=write_warmup)
