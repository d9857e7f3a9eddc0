"""Pruning and quantization-aware fine-tuning of a `SASRec`, one functional tower at a time.

`tfrs.Model` subclasses cannot be wrapped by TFMOT, so the encoder (the functional query tower,
which holds the shared `ItemEmbedding`) is optimized and swapped into the `SASRec`, which then
fine-tunes through its usual `compute_loss`.
"""

from __future__ import annotations

from tfrec_attn._keras import keras, tf
from tfrec_attn.layers import ItemEmbedding, LastPosition
from tfrec_attn.optimization import pruning
from tfrec_attn.optimization.device import optimization_scope
from tfrec_attn.optimization.fine_tuning import check_epochs, compile_and_fit, pruning_steps
from tfrec_attn.optimization.qat import make_qat_model


def unwrap(layer: keras.layers.Layer) -> keras.layers.Layer:
    """The layer inside TFMOT wrappers (`PruneLowMagnitude`, `QuantizeWrapperV2`), or `layer`."""
    while isinstance(layer, keras.layers.Wrapper):
        layer = layer.layer
    return layer


def find_layer(model: keras.Model, cls: type) -> keras.layers.Layer:
    """The one layer of `model` whose unwrapped type is `cls` (returned as is, maybe wrapped)."""
    found = [layer for layer in model.layers if isinstance(unwrap(layer), cls)]
    if len(found) != 1:
        raise ValueError(f"Expected one {cls.__name__} in {model.name}, found {len(found)}.")
    return found[0]


def build_scorer(encoder: keras.Model, prior=None) -> keras.Model:
    """History -> catalogue scores, as `models.build_scoring_model`, for wrapped encoders too
    (the pruning wrapper renames layers, so the embedding is found by type, not name).

    The possibly wrapped embedding is called, so a QAT encoder scores with its fake-quantized
    table; `prior` (the `SASRec`'s `transition_prior`, never wrapped) mixes into the scores.
    """
    embedding = find_layer(encoder, ItemEmbedding)
    state = LastPosition(name="user_state")(encoder.output)
    scores = embedding(state, mode="score")
    if prior is not None:
        scores = prior([scores, encoder.input])
    return keras.Model(encoder.input, scores, name="catalogue_scores")


def install_encoder(sasrec, encoder: keras.Model) -> None:
    """Makes `encoder` the query tower of `sasrec` and rebuilds the scorer around it.

    `sasrec.item_embedding` becomes the *unwrapped* layer: the losses read its `embeddings`
    directly (the pruned variable, or the fake-quantized table a QAT wrapper sets on its layer
    on every call), and calling a pruning wrapper twice a step would advance its step twice.
    """
    sasrec.encoder = encoder
    sasrec.item_embedding = unwrap(find_layer(encoder, ItemEmbedding))
    sasrec.scorer = build_scorer(encoder, sasrec.transition_prior)


def prune_sasrec(sasrec, dataset: tf.data.Dataset, epochs: int = 2, target_sparsity: float = 0.8,
                 schedule: str = "polynomial", frequency: int = 100, optimizer=None,
                 learning_rate: float = 1e-3, log_dir: str | None = None, verbose: int = 0,
                 callbacks=()):
    """Prunes `sasrec`'s encoder while fine-tuning, then strips the wrappers.

    Wrapping, fine-tuning and stripping run under `optimization_scope()` (GPU when visible).
    The schedule spans the whole fine-tuning: sparsity reaches `target_sparsity` on the last
    mask update (`frequency` is lowered so there are at least a few updates).

    Args:
        sasrec: a built (usually trained) `SASRec`; modified in place.
        dataset: `{"history", "targets"}` batches (`data.make_training_dataset`).
        epochs: fine-tuning epochs.
        target_sparsity: fraction of zeros in every prunable kernel and the item table.
        schedule: `"polynomial"` (ramp) or `"constant"`.
        frequency: steps between mask updates (at most).
        optimizer: Keras optimizer; defaults to `Adam(learning_rate)`.
        log_dir: if set, `PruningSummaries` are written there.
        verbose, callbacks: passed to `fit`.

    Returns:
        `(sasrec, report)`: the same `SASRec` with the stripped (sparse) encoder, and the
        `sparsity_report` of that encoder.
    """
    check_epochs(epochs)
    frequency, end_step = pruning_steps(dataset, epochs, frequency)
    with optimization_scope():
        pruned = pruning.prune_model(sasrec.encoder, target_sparsity, schedule, begin_step=0,
                                     end_step=end_step, frequency=frequency)
        install_encoder(sasrec, pruned)
        compile_and_fit(sasrec, dataset, epochs, optimizer, learning_rate,
                        pruning.pruning_callbacks(log_dir) + list(callbacks), verbose)
        install_encoder(sasrec, pruning.strip_pruning(pruned))
    return sasrec, pruning.sparsity_report(sasrec.encoder)


def qat_sasrec(sasrec, dataset: tf.data.Dataset, epochs: int = 1, optimizer=None,
               learning_rate: float = 1e-4, verbose: int = 0, callbacks=()):
    """Quantization-aware fine-tuning of `sasrec` through its own training path.

    The encoder becomes `make_qat_model(sasrec.encoder)` (a copy: the float encoder is left
    as it was); the losses read the fake-quantized item table (see `install_encoder`). Runs
    under `optimization_scope()`; the float32-only check of `make_qat_model` applies.

    Args:
        sasrec: a built (usually trained) `SASRec`; modified in place.
        dataset: `{"history", "targets"}` batches.
        epochs: fine-tuning epochs.
        optimizer: Keras optimizer; defaults to `Adam(learning_rate)` (QAT wants a small one).
        verbose, callbacks: passed to `fit`.

    Returns:
        `(sasrec, history)`: the same `SASRec`, whose encoder is now the QAT model, and the
        `fit` history.
    """
    check_epochs(epochs)
    with optimization_scope():
        install_encoder(sasrec, make_qat_model(sasrec.encoder))
        history = compile_and_fit(sasrec, dataset, epochs, optimizer, learning_rate, callbacks,
                                  verbose)
    return sasrec, history
