"""An attention policy for recommendation as reinforcement learning, trained off-policy.

"Top-K Off-Policy Correction for a REINFORCE Recommender System" (Chen et al., WSDM 2019) with
a causal Transformer instead of the paper's RNN for the user state: the history's last state
`s` scores the catalogue with the tied item table (`pi(a|s) = softmax(s . v_a)`); an optional
behaviour head estimates the logging policy `beta(a|s)` from a stop-gradient copy of `s`
(section 4.3), so its maximum-likelihood fit does not move the state. `AttentionPolicy` trains
from logged `(history, action, reward)` batches with the losses of `policy_losses`.
"""

import dataclasses

import tensorflow_recommenders as tfrs

from tfrec_attn._keras import keras, tf
from tfrec_attn.layers import (
    ItemEmbedding,
    LastPosition,
    PaddingMask,
    PositionEmbedding,
    StopGradient,
    TransformerEncoderBlock,
)
from tfrec_attn.models.losses import (  # seen_items_mask: also imported from here
    FIRST_ITEM_ID,
    global_mean,
    seen_items_mask,
)
from tfrec_attn.models.policy_losses import (
    action_log_probabilities,
    behaviour_loss,
    check_max_weight,
    reinforce_terms,
)
from tfrec_attn.registry import register
from tfrec_attn.validation import (
    check_choice,
    check_heads_divide,
    check_optional_positive_int,
    check_positive_ints,
    check_rate,
)

CORRECTIONS = ("none", "importance", "top_k")
PROPENSITIES = ("learned", "logged")


@dataclasses.dataclass
class AttentionPolicyConfig:
    """Hyper-parameters of the attention policy.

    Args:
        vocab_size: item ids including padding (0) and OOV (1); actions are ids `>= 2`.
        max_len: longest history the policy reads (left-padded).
        dim: embedding and hidden size.
        num_blocks: causal Transformer blocks.
        num_heads: attention heads per block.
        dropout: dropout in the blocks and on the embeddings.
        ffn_dim: feed-forward width; `None` means `dim`.
        norm_first: pre-LN blocks (`True`) or post-LN.
        activation: feed-forward activation.
        correction: `"top_k"` (importance weight times `lambda_K`), `"importance"` (capped
            `pi / beta` only) or `"none"` (plain REINFORCE on the logs, biased towards what the
            logging policy showed).
        top_k: `K` of `lambda_K` (the number of items recommended at once).
        max_weight: cap `c` of the importance weights (`math.inf`: none).
        behaviour_head: build the `beta(a|s)` head (trained by cross-entropy on the actions).
        propensity: where `beta(a|s)` comes from: `"learned"` (the behaviour head, as in the
            paper) or `"logged"` (a `"propensity"` feature in every batch).
        behaviour_weight: weight of the behaviour head's cross-entropy in the loss.
        behaviour_exclude_history: train the behaviour head's softmax over the items outside
            each round's history (a batch's `"seen"` multi-hot of the user's earlier items, or
            else the history window's items; the logged action always kept), for logs where
            the logging policy never shows an earlier item again (ratings). Its `beta` is then
            zero on the history, in the loss, the importance weights and the off-policy
            estimates alike. `tfrec-attn train` chooses it from the data when unset.
    """

    vocab_size: int
    max_len: int = 20
    dim: int = 32
    num_blocks: int = 1
    num_heads: int = 1
    dropout: float = 0.0
    ffn_dim: int | None = None
    norm_first: bool = True
    activation: str = "gelu"
    correction: str = "top_k"
    top_k: int = 1
    max_weight: float = 10.0
    behaviour_head: bool = True
    propensity: str = "learned"
    behaviour_weight: float = 1.0
    behaviour_exclude_history: bool = False

    def __post_init__(self):
        check_positive_ints(self, ("vocab_size", "max_len", "dim", "num_blocks", "num_heads",
                                   "top_k"))
        if self.vocab_size <= FIRST_ITEM_ID:
            raise ValueError(f"vocab_size must exceed {FIRST_ITEM_ID} (ids 0 and 1 are padding "
                             f"and OOV). Received: vocab_size={self.vocab_size}")
        check_heads_divide(self.dim, self.num_heads)
        check_optional_positive_int("ffn_dim", self.ffn_dim)
        check_rate("dropout", self.dropout)
        check_choice("correction", self.correction, CORRECTIONS)
        check_choice("propensity", self.propensity, PROPENSITIES)
        check_max_weight(self.max_weight)
        if not self.behaviour_weight >= 0:
            raise ValueError("behaviour_weight must be non-negative. "
                             f"Received: behaviour_weight={self.behaviour_weight!r}")
        if not isinstance(self.behaviour_exclude_history, bool):
            raise ValueError("behaviour_exclude_history must be a bool. "
                             f"Received: behaviour_exclude_history="
                             f"{self.behaviour_exclude_history!r}")
        if self.behaviour_exclude_history and not self.behaviour_head:
            raise ValueError("behaviour_exclude_history=True masks the behaviour head's "
                             "softmax and needs the head. Received: behaviour_head=False")
        if (self.correction != "none" and self.propensity == "learned"
                and not self.behaviour_head):
            raise ValueError(f"correction={self.correction!r} with propensity='learned' needs "
                             "the behaviour head. Received: behaviour_head=False")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def build_policy_network(config: AttentionPolicyConfig) -> keras.Model:
    """History ids `(batch, T)`, left-padded, `T <= max_len` -> `{"logits": (batch, vocab)}`
    and, with the behaviour head, `"behaviour_logits": (batch, vocab)`.

    A functional model (TFMOT can prune and quantize it): `ItemEmbedding` + `PositionEmbedding`
    (right-aligned), causal `TransformerEncoderBlock`s with the padding mask from `PaddingMask`
    passed explicitly, the last position's state, tied catalogue scores. Column `i` scores item
    id `i`; columns 0 and 1 (padding, OOV) are not actions.

    Example:
    >>> net = build_policy_network(AttentionPolicyConfig(vocab_size=12, max_len=4, dim=8))
    >>> {k: v.shape for k, v in net(tf.constant([[0, 2, 3, 4]])).items()}
    {'logits': TensorShape([1, 12]), 'behaviour_logits': TensorShape([1, 12])}
    """
    ids = keras.Input((None,), dtype="int64", name="history")
    padding = PaddingMask(name="padding_mask")(ids)
    items = ItemEmbedding(config.vocab_size, config.dim, scale_by_dim=True, name="item_embedding")
    x = PositionEmbedding(config.max_len, name="position_embedding")(items(ids))
    x = keras.layers.Dropout(config.dropout, name="embedding_dropout")(x)
    for i in range(config.num_blocks):
        x = TransformerEncoderBlock(
            num_heads=config.num_heads, intermediate_dim=config.ffn_dim, dropout=config.dropout,
            norm_first=config.norm_first, causal=True, activation=config.activation,
            name=f"block_{i}")(x, mask=padding)
    if config.norm_first:
        x = keras.layers.LayerNormalization(epsilon=1e-6, name="final_norm")(x)
    state = LastPosition(name="state")(x)
    outputs = {"logits": items(state, mode="score")}
    if config.behaviour_head:
        frozen = StopGradient(name="behaviour_state")(state)
        outputs["behaviour_logits"] = keras.layers.Dense(
            config.vocab_size, name="behaviour_head")(frozen)
    return keras.Model(ids, outputs, name="attention_policy")


@register()
class AttentionPolicy(tfrs.Model):
    """Off-policy REINFORCE recommender with the top-K correction, trained by `model.fit`.

    The network is a functional model (`build_policy_network`); this thin `tfrs.Model` wires it
    to the losses in `compute_loss`. Batches are dicts `{"history": (B, T) ids, "action": (B,)
    item ids >= 2, "reward": (B,)}`, plus `"propensity": (B,)` (`beta(a|s)` of the logged action)
    when `config.propensity == "logged"`, and optionally `"seen": (B, vocab)` booleans (the
    user's earlier items, for `config.behaviour_exclude_history`). Logged metrics:
    `policy_loss`, `behaviour_loss` (with the head) and `importance_weight` (mean capped
    `pi / beta`; not with `correction="none"`).

    Args:
        config: `AttentionPolicyConfig` or a dict of its fields.

    Call arguments:
        inputs: history ids `(batch, T)` or a dict with `"history"`.

    Returns:
        The network's outputs: `{"logits"[, "behaviour_logits"]}`, each `(batch, vocab)`.

    Example:
    >>> policy = AttentionPolicy(AttentionPolicyConfig(vocab_size=10, max_len=3, dim=8))
    >>> batch = {"history": tf.constant([[0, 2, 3]]), "action": tf.constant([4]),
    ...          "reward": tf.constant([1.0])}
    >>> policy(batch)["logits"].shape, policy.compute_loss(batch).shape
    (TensorShape([1, 10]), TensorShape([]))
    """

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        if isinstance(config, dict):
            config = AttentionPolicyConfig(**config)
        if not isinstance(config, AttentionPolicyConfig):
            raise ValueError("config must be an AttentionPolicyConfig or a dict of its fields. "
                             f"Received: config={config!r}")
        self.config = config
        self.network = build_policy_network(config)
        self.policy_loss_tracker = keras.metrics.Mean(name="policy_loss")
        self.behaviour_loss_tracker = (keras.metrics.Mean(name="behaviour_loss")
                                       if config.behaviour_head else None)
        self.weight_tracker = (None if config.correction == "none"
                               else keras.metrics.Mean(name="importance_weight"))

    def call(self, inputs, training=False):
        if isinstance(inputs, dict):
            inputs = inputs["history"]
        return self.network(inputs, training=training)

    def compute_loss(self, inputs, training: bool = False) -> tf.Tensor:
        config = self.config
        outputs = self.network(inputs["history"], training=training)
        actions = tf.reshape(tf.cast(inputs["action"], tf.int32), [-1]) - FIRST_ITEM_ID
        logits = outputs["logits"][:, FIRST_ITEM_ID:]
        total = tf.constant(0.0)
        behaviour_probs = None
        if config.behaviour_head:
            fit = behaviour_loss(outputs["behaviour_logits"][:, FIRST_ITEM_ID:], actions,
                                 self.behaviour_excluded(inputs))
            self.behaviour_loss_tracker.update_state(fit)
            total += config.behaviour_weight * global_mean(fit)
            behaviour_probs = tf.exp(-fit)  # beta(a|s) of the logged actions (masked or not)
        if config.correction == "none":
            behaviour_probs = None
        elif config.propensity == "logged":
            behaviour_probs = tf.reshape(tf.cast(inputs["propensity"], tf.float32), [-1])
        top_k = config.top_k if config.correction == "top_k" else 1
        policy, weights = reinforce_terms(action_log_probabilities(logits, actions),
                                          inputs["reward"], behaviour_probs, top_k,
                                          config.max_weight)
        if weights is not None:
            self.weight_tracker.update_state(weights)
        self.policy_loss_tracker.update_state(policy)
        return total + global_mean(policy)

    def behaviour_excluded(self, inputs: dict) -> tf.Tensor | None:
        """The behaviour head's excluded actions `(batch, vocab - FIRST_ITEM_ID)`: the batch's
        `"seen"` items, else the history window's (`None` without the mask)."""
        if not self.config.behaviour_exclude_history:
            return None
        seen = inputs.get("seen")
        if seen is None:
            seen = seen_items_mask(inputs["history"], self.config.vocab_size)
        return tf.cast(seen, tf.bool)[:, FIRST_ITEM_ID:]

    def get_config(self) -> dict:
        return {"config": self.config.to_dict()}

