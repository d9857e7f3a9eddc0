"""Pruning and quantization-aware fine-tuning of a `DIN` ranker through its functional tower.

`tfrs.Model` subclasses cannot be wrapped by TFMOT, so the tower (`build_din_tower`, which
embeds history and candidate with one `ItemEmbedding` call, so each wrapper steps once a batch)
is optimized and swapped into the `DIN`, which then fine-tunes through its usual
`compute_loss` (`tfrs.tasks.Ranking`) on `make_ranking_dataset` batches.
"""

from __future__ import annotations

from tfrec_attn._keras import tf
from tfrec_attn.optimization import pruning
from tfrec_attn.optimization.device import optimization_scope
from tfrec_attn.optimization.fine_tuning import check_epochs, compile_and_fit, pruning_steps
from tfrec_attn.optimization.qat import make_qat_model


def prune_din(din, dataset: tf.data.Dataset, epochs: int = 2, target_sparsity: float = 0.8,
              schedule: str = "polynomial", frequency: int = 100, optimizer=None,
              learning_rate: float = 1e-3, log_dir: str | None = None, verbose: int = 0,
              callbacks=()):
    """Prunes `din`'s tower while fine-tuning, then strips the wrappers.

    Wrapping, fine-tuning and stripping run under `optimization_scope()` (GPU when visible).
    The schedule spans the whole fine-tuning: sparsity reaches `target_sparsity` on the last
    mask update (`frequency` is lowered so there are at least a few updates).

    Args:
        din: a built (usually trained) `DIN`; modified in place.
        dataset: `{"history", "candidate", "label"}` batches (`data.make_ranking_dataset`).
        epochs: fine-tuning epochs.
        target_sparsity: fraction of zeros in every prunable kernel (attention and prediction
            MLPs) and in the item table.
        schedule: `"polynomial"` (ramp) or `"constant"`.
        frequency: steps between mask updates (at most).
        optimizer: Keras optimizer; defaults to `Adam(learning_rate)`.
        log_dir: if set, `PruningSummaries` are written there.
        verbose, callbacks: passed to `fit`.

    Returns:
        `(din, report)`: the same `DIN` with the stripped (sparse) tower, and the
        `sparsity_report` of that tower.

    Example:
    >>> import numpy as np
    >>> from tfrec_attn.data import make_ranking_dataset
    >>> from tfrec_attn.models import DIN, DINConfig
    >>> din = DIN(DINConfig(vocab_size=30, max_len=4, dim=8, mlp_units=(8,)))
    >>> data = make_ranking_dataset([np.arange(2, 12)], 4, 30, batch_size=4)
    >>> din, report = prune_din(din, data, epochs=1, target_sparsity=0.5)
    >>> round(report["sparsity"], 1), type(din.tower.get_layer("logit")).__name__
    (0.5, 'Dense')
    """
    check_epochs(epochs)
    frequency, end_step = pruning_steps(dataset, epochs, frequency)
    with optimization_scope():
        pruned = pruning.prune_model(din.tower, target_sparsity, schedule, begin_step=0,
                                     end_step=end_step, frequency=frequency)
        din.tower = pruned  # `DIN.call` reads `tower`: the wrapped layers train
        compile_and_fit(din, dataset, epochs, optimizer, learning_rate,
                        pruning.pruning_callbacks(log_dir) + list(callbacks), verbose)
        din.tower = pruning.strip_pruning(pruned)
    return din, pruning.sparsity_report(din.tower)


def qat_din(din, dataset: tf.data.Dataset, epochs: int = 1, optimizer=None,
            learning_rate: float = 1e-4, verbose: int = 0, callbacks=()):
    """Quantization-aware fine-tuning of `din` through its own training path.

    The tower becomes `make_qat_model(din.tower)` (a copy: the float tower is left as it was).
    Runs under `optimization_scope()`; the float32-only check of `make_qat_model` applies.
    Export the result with `export_ranker(din.tower, ...)` (a SavedModel; `.h5` reloads too,
    under `quantize_scope()`) or `convert_ranker_to_tflite(din, ..., quantization="int8")`.

    Args:
        din: a built (usually trained) `DIN`; modified in place.
        dataset: `{"history", "candidate", "label"}` batches.
        epochs: fine-tuning epochs.
        optimizer: Keras optimizer; defaults to `Adam(learning_rate)` (QAT wants a small one).
        verbose, callbacks: passed to `fit`.

    Returns:
        `(din, history)`: the same `DIN`, whose tower is now the QAT model, and the `fit`
        history.
    """
    check_epochs(epochs)
    with optimization_scope():
        din.tower = make_qat_model(din.tower)
        history = compile_and_fit(din, dataset, epochs, optimizer, learning_rate, callbacks,
                                  verbose)
    return din, history
