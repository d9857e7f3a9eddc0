"""Model optimization with the TensorFlow Model Optimization toolkit: pruning and QAT.

Functional towers are optimized directly (`prune_model`, `make_qat_model`); a `SASRec` through
its encoder (`prune_sasrec`, `qat_sasrec`), a `DIN` through its tower (`prune_din`, `qat_din`).
"""

from tfrec_attn.optimization.device import optimization_device, optimization_scope
from tfrec_attn.optimization.din import prune_din, qat_din
from tfrec_attn.optimization.pruning import (
    gzip_size,
    make_schedule,
    prunable_weights,
    prune_model,
    pruning_callbacks,
    sparsity_report,
    strip_pruning,
)
from tfrec_attn.optimization.qat import make_qat_model, quantize_annotate
from tfrec_attn.optimization.quantize_configs import (
    AttentionPoolingQuantizeConfig,
    AttentionQuantizeConfig,
    EmbeddingTableQuantizeConfig,
    NoOpQuantizeConfig,
    TransformerBlockQuantizeConfig,
    quantize_config_for,
    quantize_scope,
)
from tfrec_attn.optimization.report import optimize_run, optimize_table
from tfrec_attn.optimization.sasrec import install_encoder, prune_sasrec, qat_sasrec

__all__ = [
    "AttentionPoolingQuantizeConfig",
    "AttentionQuantizeConfig",
    "EmbeddingTableQuantizeConfig",
    "NoOpQuantizeConfig",
    "TransformerBlockQuantizeConfig",
    "gzip_size",
    "install_encoder",
    "make_qat_model",
    "make_schedule",
    "optimization_device",
    "optimization_scope",
    "optimize_run",
    "optimize_table",
    "prunable_weights",
    "prune_din",
    "prune_model",
    "prune_sasrec",
    "pruning_callbacks",
    "qat_din",
    "qat_sasrec",
    "quantize_annotate",
    "quantize_config_for",
    "quantize_scope",
    "sparsity_report",
    "strip_pruning",
]
