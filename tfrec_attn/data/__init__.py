"""Interaction data: readers, item vocabulary, per-user sequences, splits and tf.data pipelines.

Example:
>>> from tfrec_attn.data import build_sequences, generate_synthetic, leave_one_out
>>> split = leave_one_out(build_sequences(generate_synthetic(num_users=4, num_items=10)))
>>> len(split.test_targets)
4
"""

from tfrec_attn.data.item_graph import SessionGraph, session_graph, session_graphs
from tfrec_attn.data.item_sets import (
    ItemSetSplit,
    item_set,
    make_item_set_dataset,
    multi_hot,
    split_item_sets,
)
from tfrec_attn.data.ranking_examples import make_ranking_dataset, ranking_examples
from tfrec_attn.data.readers import (
    FORMATS,
    DataError,
    DataWarning,
    ReadReport,
    read_interactions,
    read_movielens,
    read_sasrec,
    read_sequences,
    read_table,
    sort_interactions,
)
from tfrec_attn.data.sequences import (
    SequenceData,
    Split,
    build_sequences,
    leave_one_out,
    make_eval_arrays,
    make_training_dataset,
    pad_left,
    temporal_split,
    training_examples,
)
from tfrec_attn.data.synthetic import generate_synthetic
from tfrec_attn.data.vocabulary import FIRST_ITEM_ID, OOV_ID, PAD_ID, Vocabulary

__all__ = [
    "FIRST_ITEM_ID",
    "FORMATS",
    "ItemSetSplit",
    "OOV_ID",
    "PAD_ID",
    "DataError",
    "DataWarning",
    "ReadReport",
    "SequenceData",
    "SessionGraph",
    "Split",
    "Vocabulary",
    "build_sequences",
    "generate_synthetic",
    "item_set",
    "make_item_set_dataset",
    "make_ranking_dataset",
    "multi_hot",
    "leave_one_out",
    "make_eval_arrays",
    "make_training_dataset",
    "pad_left",
    "read_interactions",
    "read_movielens",
    "read_sasrec",
    "read_sequences",
    "ranking_examples",
    "read_table",
    "session_graph",
    "session_graphs",
    "sort_interactions",
    "split_item_sets",
    "temporal_split",
    "training_examples",
]
