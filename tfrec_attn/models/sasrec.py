"""SASRec-style sequential recommender: functional towers, wired to TFRS tasks by `SASRec`."""

import dataclasses

import tensorflow_recommenders as tfrs

from tfrec_attn._keras import keras, tf
from tfrec_attn.data.vocabulary import OOV_ID
from tfrec_attn.layers import (
    ATTENTION_KINDS,
    ItemDropout,
    ItemEmbedding,
    LastPosition,
    PaddingMask,
    PositionEmbedding,
    SinusoidalPositionEmbedding,
    TransformerEncoderBlock,
    TransitionPrior,
    top_k_outputs,
)
from tfrec_attn.layers.attention_factory import check_attention_option_names
from tfrec_attn.layers.transformer_encoder_block import BLOCK_ATTENTION_OPTIONS
from tfrec_attn.models import losses
from tfrec_attn.registry import register
from tfrec_attn.validation import (
    check_bool,
    check_choice,
    check_heads_divide,
    check_non_negative_float,
    check_non_negative_int,
    check_positive_ints,
    check_rate,
)

LOSSES = ("softmax", "sampled", "bce")
AUTO_SOFTMAX_MAX_ITEMS = 8192
DEFAULT_UNIFORM_NEGATIVES = 1024  # the sampled loss's uniform draws (docs/BENCHMARKS.md 4b)


@dataclasses.dataclass
class SASRecConfig:
    """Hyper-parameters of the sequential recommender (every field has a measured default).

    Args:
        vocab_size: number of item ids including padding (0) and OOV (1).
        max_len: history length the model reads (longer histories keep the most recent items).
        dim: embedding and hidden size.
        num_blocks: Transformer blocks.
        num_heads: attention heads per block.
        dropout: dropout rate in the blocks and on the embeddings.
        ffn_dim: feed-forward width; `None` means `dim`.
        norm_first: pre-LN blocks (`True`) or post-LN.
        activation: feed-forward activation.
        positional: `"learned"` or `"sinusoidal"`.
        loss: `"auto"` (default), `"softmax"` (exact cross-entropy over the whole catalogue),
            `"sampled"` (in-batch sampled softmax with log-Q correction and accidental-hit
            removal, TFRS `Retrieval`'s loss, plus `uniform_negatives` uniform draws) or
            `"bce"` (one random negative per position, the original SASRec). `"auto"`
            resolves to `"softmax"` for catalogues of at most `AUTO_SOFTMAX_MAX_ITEMS` ids (4x
            the sampled loss's 2,048 negatives: the exact loss then costs at most ~4x as much
            per position, and it ranked best on MovieLens-100K) and to `"sampled"` above (it
            ranked best at equal time on a 24k-item catalogue); docs/BENCHMARKS.md has both
            measurements.
        l2: L2 penalty on looked-up embeddings.
        exclude_seen: the softmax losses do not use items already in a training window as
            negatives for its positions (the original SASRec drew its negatives outside the
            history the same way; evaluation and serving exclude history items too). Not
            available with `loss="bce"`.
        future_targets: each position learns to predict the next `future_targets` items of
            its window, each one a positive against the negatives (1: the next item only, the
            original objective). Only with `loss="softmax"`; see `losses.future_target_loss`.
        max_negatives: the sampled loss scores each position against at most this many
            in-batch negatives (a random subset when the batch has more target positions), so
            its memory grows linearly with history length.
        uniform_negatives: the sampled loss adds this many uniformly drawn catalogue items to
            its in-batch negatives each step (mixed negative sampling, with the log-Q correction
            of the mixture; see `losses.SampledSoftmaxLoss`). 0: in-batch only. `None` (the
            default): `DEFAULT_UNIFORM_NEGATIVES` with the sampled loss, else 0. On
            MovieLens-100K the mixed negatives lift the sampled loss's test NDCG@10 from 0.078
            to 0.097 over two seeds (the exact softmax: 0.103); docs/BENCHMARKS.md section 4b.
        attention: self-attention variant of every block, a key of `ATTENTION_KINDS`
            (`"full"`, `"low_rank"`, `"local"`, `"linear"`, `"top_k"`).
        attention_options: extra arguments of that variant (e.g. `{"window": 8}`);
            `"low_rank"` gets `max_length=max_len` unless given.
        gated: LiGR blocks (eSASRec): sigmoid-gated residuals and a gated-linear-unit
            feed-forward (`TransformerEncoderBlock(gated=True)`). Off by default.
        input_dropout: probability of replacing each history item the encoder reads by the
            unknown-item id while training (`ItemDropout`; positions stay visible, targets and
            `exclude_seen` keep the real items). 0: off.
        transition_neighbors: width of a `TransitionPrior` table (each item's strongest
            successors in the training data) mixed into the catalogue scores; 0 (the default
            here): no prior, the scores are the tied dot products. The layer's table and
            mixing weight start empty / 0 (scores are then the model's `log_softmax`) and are
            set after training (`training.transition_prior.fit_transition_prior`, which
            `tfrec-attn train` runs with 50 neighbours unless the config says otherwise).
        item_item_neighbors: width of the prior's item-item table (EASE weights over the whole
            history, `training.transition_prior.fit_item_item`); 0 (the default here): none.
            Needs `transition_neighbors > 0`. `tfrec-attn train` sets 200 on catalogues of at
            most `ITEM_ITEM_MAX_ITEMS` items unless the config says otherwise.
    """

    vocab_size: int
    max_len: int = 50
    dim: int = 64
    num_blocks: int = 2
    num_heads: int = 1
    dropout: float = 0.2
    ffn_dim: int | None = None
    norm_first: bool = True
    activation: str = "gelu"
    positional: str = "learned"
    loss: str = "auto"
    l2: float = 0.0
    attention: str = "full"
    attention_options: dict | None = None
    exclude_seen: bool = False
    future_targets: int = 1
    max_negatives: int = 2048
    uniform_negatives: int | None = None
    gated: bool = False
    input_dropout: float = 0.0
    transition_neighbors: int = 0
    item_item_neighbors: int = 0

    def __post_init__(self):
        if self.loss == "auto" and isinstance(self.vocab_size, int):
            self.loss = "softmax" if self.vocab_size <= AUTO_SOFTMAX_MAX_ITEMS else "sampled"
        check_choice("loss", self.loss, LOSSES)
        if self.positional not in ("learned", "sinusoidal"):
            raise ValueError(
                f"positional must be 'learned' or 'sinusoidal'. Received: {self.positional!r}")
        check_positive_ints(self, ("vocab_size", "max_len", "dim", "num_blocks", "num_heads",
                                   "future_targets", "max_negatives"))
        check_rate("dropout", self.dropout)
        check_rate("input_dropout", self.input_dropout)
        check_non_negative_float("l2", self.l2)
        for name in ("norm_first", "exclude_seen", "gated"):
            check_bool(name, getattr(self, name))
        if self.uniform_negatives is None and isinstance(self.loss, str):
            self.uniform_negatives = DEFAULT_UNIFORM_NEGATIVES if self.loss == "sampled" else 0
        check_non_negative_int("uniform_negatives", self.uniform_negatives)
        check_non_negative_int("transition_neighbors", self.transition_neighbors)
        check_non_negative_int("item_item_neighbors", self.item_item_neighbors)
        if self.item_item_neighbors and not self.transition_neighbors:
            raise ValueError("item_item_neighbors > 0 needs transition_neighbors > 0 (the "
                             "item-item table is part of the transition prior). Received: "
                             f"item_item_neighbors={self.item_item_neighbors}, "
                             "transition_neighbors=0")
        if self.uniform_negatives and self.loss != "sampled":
            raise ValueError(f"uniform_negatives > 0 needs loss='sampled'. Received: "
                             f"uniform_negatives={self.uniform_negatives}, loss={self.loss!r}")
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {sorted(ATTENTION_KINDS)}. "
                             f"Received: attention={self.attention!r}")
        if self.attention_options is not None and not isinstance(self.attention_options, dict):
            raise ValueError("attention_options must be a dict or None. "
                             f"Received: attention_options={self.attention_options!r}")
        if self.attention_options:  # named now, not as a Keras "argument not understood"
            reserved = sorted(set(self.attention_options) & BLOCK_ATTENTION_OPTIONS)
            if reserved:
                raise ValueError(f"attention_options must not set {reserved}: the encoder sets "
                                 "them from the model's own settings (num_heads, dropout). "
                                 f"Received: attention_options={self.attention_options!r}")
            check_attention_option_names(self.attention, self.attention_options,
                                         BLOCK_ATTENTION_OPTIONS)
        if self.exclude_seen and self.loss == "bce":
            raise ValueError("exclude_seen applies to the softmax losses ('sampled', 'softmax'); "
                             "Received: loss='bce'")
        if self.future_targets > 1 and self.loss != "softmax":
            raise ValueError(f"future_targets > 1 needs loss='softmax'. Received: "
                             f"future_targets={self.future_targets}, loss={self.loss!r}")
        check_heads_divide(self.dim, self.num_heads)
        if self.vocab_size < 3:
            raise ValueError("vocab_size must be at least 3: ids 0 (padding) and 1 (unknown "
                             f"item) and one real item. Received: vocab_size={self.vocab_size}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def block_attention_options(self) -> dict:
        """The `attention_options` every block gets (low-rank: `max_length=max_len` added)."""
        options = dict(self.attention_options or {})
        if self.attention == "low_rank":
            options.setdefault("max_length", self.max_len)
        return options


def build_sequence_encoder(config: SASRecConfig) -> keras.Model:
    """The query tower: history ids `(batch, T)` -> states `(batch, T, dim)` at every position.

    A functional model (TFMOT can prune/quantize it); the padding mask is derived from the ids and
    passed explicitly to every block. `T` may be shorter than `max_len` (right-aligned positions).
    """
    ids = keras.Input((None,), dtype="int64", name="history")
    padding = PaddingMask(name="padding_mask")(ids)
    items = ids
    if config.input_dropout:
        items = ItemDropout(config.input_dropout, replacement_id=OOV_ID,
                            name="input_dropout")(ids)
    x = ItemEmbedding(config.vocab_size, config.dim, scale_by_dim=True, l2=config.l2,
                      name="item_embedding")(items)
    if config.positional == "learned":
        x = PositionEmbedding(config.max_len, name="position_embedding")(x)
    else:
        x = SinusoidalPositionEmbedding(config.max_len, name="position_embedding")(x)
    x = keras.layers.Dropout(config.dropout, name="embedding_dropout")(x)
    for i in range(config.num_blocks):
        x = TransformerEncoderBlock(
            num_heads=config.num_heads, intermediate_dim=config.ffn_dim, dropout=config.dropout,
            norm_first=config.norm_first, causal=True, activation=config.activation,
            attention=config.attention, attention_options=config.block_attention_options(),
            gated=config.gated, name=f"block_{i}",
        )(x, mask=padding)
    if config.norm_first:
        x = keras.layers.LayerNormalization(epsilon=1e-6, name="final_norm")(x)
    return keras.Model(ids, x, name="sequence_encoder")


def build_scoring_model(encoder: keras.Model,
                        prior: TransitionPrior | None = None) -> keras.Model:
    """History `(batch, T)` -> scores over the whole catalogue `(batch, vocab)` (last position):
    the tied dot products, or with `prior` their mixture with its transition probabilities."""
    ids = encoder.input
    state = LastPosition(name="user_state")(encoder.output)
    scores = encoder.get_layer("item_embedding")(state, mode="score")
    if prior is not None:
        scores = prior([scores, ids])
    return keras.Model(ids, scores, name="catalogue_scores")


def build_topk_model(encoder: keras.Model, k: int = 10, exclude_history: bool = True,
                     prior: TransitionPrior | None = None) -> keras.Model:
    """History `(batch, T)` -> `{"item_ids": (batch, k) int64, "scores": (batch, k)}`.

    The serving/TFLite graph: encoder, tied catalogue scores, history exclusion and top-k, all
    inside one functional model. It takes requests as the model was trained on them: ids in
    `0 <= id < vocab_size` (else the item lookup fails) and `1 <= T <= max_len` (a longer
    history fails with an error naming `max_len`; it is not cut silently). The graphs built
    around it sanitize requests: `export_saved_model` maps ids outside the vocabulary to OOV
    (1), keeps the last `max_len` ids, accepts an empty history and excludes the whole request;
    `convert_to_tflite` maps bad ids to OOV for its fixed `(batch, max_len)` input.

    When fewer than `k` items are eligible (the history covers most of the catalogue), the
    slots left over hold excluded ids (padding, OOV or history items) after every eligible
    item, with the row's lowest score minus one: the int8 TFLite file needs the scores to keep
    their range (filling with id `-1` and score `-inf`, as `export_saved_model` does, aborts
    its interpreter). Drop such slots by their id when `k` may exceed the eligible items.
    With `prior` (a `SASRec`'s `transition_prior`) the ranked scores are its mixture.
    """
    scoring = build_scoring_model(encoder, prior)
    outputs = top_k_outputs(scoring.output, scoring.input, k=k, exclude_history=exclude_history)
    return keras.Model(scoring.input, outputs, name="recommender")


def active_prior(model) -> TransitionPrior | None:
    """`model.transition_prior` when its weight, or its item-item term's, is above 0, else
    `None`.

    The graphs built for serving (`SASRec.topk_model`, `export_saved_model`,
    `convert_to_tflite`) leave out a prior whose weight is 0 (the run found that it does not
    help): it would change no ranking and only cost time, size and, in int8 files, precision.
    """
    prior = getattr(model, "transition_prior", None)
    if prior is None:
        return None
    item_item = prior.item_item_scale is not None and float(prior.item_item_scale.numpy()) > 0
    if float(prior.mix.numpy()) == 0.0 and not item_item:
        return None
    return prior


def later_targets(targets: tf.Tensor, k: int) -> tf.Tensor:
    """`(batch, T, k - 1)`: for each position the targets 1..k-1 positions later (0: none).

    Example:
    >>> later_targets(tf.constant([[0, 5, 6, 7]]), 3).numpy().tolist()
    [[[5, 6], [6, 7], [7, 0], [0, 0]]]
    """
    length = tf.shape(targets)[1]
    padded = tf.pad(targets, [[0, 0], [0, k - 1]])
    return tf.stack([padded[:, j:j + length] for j in range(1, k)], axis=-1)


@register()
class SASRec(tfrs.Model):
    """Self-attentive sequential recommender (Kang & McAuley, 2018) trained on every position.

    The towers are functional models (see `build_sequence_encoder`); this thin `tfrs.Model`
    wires them to the loss in `compute_loss`, so `model.fit` trains on a `tf.data` dataset of
    `{"history": (B, T), "targets": (B, T)}` where `targets[:, t]` is the item after
    `history[:, t]` (0 where there is none).

    Args:
        config: `SASRecConfig` or a dict of its fields.
        item_probabilities: `(vocab,)` sampling probabilities of items in the training data
            (for the sampled loss's log-Q correction); defaults to uniform.

    Call arguments:
        inputs: history ids `(batch, T)` or a dict with `"history"`.

    Returns:
        Scores over the catalogue `(batch, vocab)` from the last position (with
        `config.transition_neighbors`, the `transition_prior` layer's log-probabilities).

    Example:
    >>> from tfrec_attn._keras import tf
    >>> model = SASRec(SASRecConfig(vocab_size=20, max_len=5, dim=8, num_blocks=1))
    >>> model(tf.constant([[0, 0, 2, 3, 4]], tf.int64)).shape
    TensorShape([1, 20])
    """

    def __init__(self, config, item_probabilities=None, **kwargs):
        super().__init__(**kwargs)
        self.config = config if isinstance(config, SASRecConfig) else SASRecConfig(**config)
        self.encoder = build_sequence_encoder(self.config)
        self.item_embedding = self.encoder.get_layer("item_embedding")
        self.transition_prior = None
        if self.config.transition_neighbors:
            self.transition_prior = TransitionPrior(
                self.config.vocab_size, self.config.transition_neighbors,
                item_item_neighbors=self.config.item_item_neighbors, name="transition_prior")
        self.scorer = build_scoring_model(self.encoder, self.transition_prior)
        self.loss_fn = losses.make_loss(self.config.loss, self.config.vocab_size,
                                        item_probabilities, self.config.max_negatives,
                                        self.config.uniform_negatives)

    def call(self, inputs, training=False):
        if isinstance(inputs, dict):
            inputs = inputs["history"]
        return self.scorer(inputs, training=training)

    def compute_loss(self, inputs, training: bool = False) -> tf.Tensor:
        states = self.encoder(inputs["history"], training=training)
        targets = inputs["targets"]
        positions = tf.greater(targets, 0)
        kwargs = {}
        if self.config.exclude_seen:  # (N, vocab): the window items of each position's row
            seen = losses.seen_items(inputs["history"], targets, self.config.vocab_size)
            kwargs["seen"] = tf.gather(seen, tf.where(positions)[:, 0])
        if isinstance(self.loss_fn, losses.BinaryCrossEntropyLoss):
            kwargs["negatives"] = tf.boolean_mask(self.loss_fn.sample_negatives(targets),
                                                  positions)
        if self.config.future_targets > 1:  # (N, k - 1): the later targets of each position
            kwargs["future"] = tf.boolean_mask(
                later_targets(targets, self.config.future_targets), positions)
        states = tf.boolean_mask(states, positions)   # (N, dim): only positions with a target
        targets = tf.boolean_mask(targets, positions)  # (N,)
        return self.loss_fn(states, targets, self.item_embedding, training=training, **kwargs)

    def train_step(self, inputs):
        """`tfrs.Model.train_step`, plus loss scaling when the optimizer is a
        `LossScaleOptimizer` (`mixed_float16`): tfrs's train_step skips loss scaling."""
        optimizer = self.optimizer
        if not isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer):
            return super().train_step(inputs)
        with tf.GradientTape() as tape:
            loss = self.compute_loss(inputs, training=True)
            regularization_loss = tf.reduce_sum([tf.reduce_sum(term) for term in self.losses])
            total_loss = loss + regularization_loss
            scaled_loss = optimizer.get_scaled_loss(total_loss)
        gradients = optimizer.get_unscaled_gradients(
            tape.gradient(scaled_loss, self.trainable_variables))
        optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        metrics = {metric.name: metric.result() for metric in self.metrics}
        metrics.update(loss=loss, regularization_loss=regularization_loss, total_loss=total_loss)
        return metrics

    def topk_model(self, k: int = 10, exclude_history: bool = True) -> keras.Model:
        """The functional serving model (see `build_topk_model`: ids in `[0, vocab_size)`,
        length `<= max_len`), sharing this model's weights (and its transition prior when
        its weight is above 0, `active_prior`)."""
        return build_topk_model(self.encoder, k=k, exclude_history=exclude_history,
                                prior=active_prior(self))

    def get_config(self) -> dict:
        return {"config": self.config.to_dict()}
