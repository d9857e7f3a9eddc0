"""Session graphs: a left-padded history as a small directed item graph (SR-GNN / GC-SAN).

Each distinct item of a history becomes a node; each pair of consecutive items `u -> v` an edge.
Wu et al. (SR-GNN, 2019) and Xu et al. (GC-SAN, 2019) then run a graph network over the nodes
and gather the node states back into the sequence with an *alias* index. NumPy only: these
arrays are built once per example in the input pipeline (or offline), and feed
`tfrec_attn.layers.GraphAttention` as `[node_vectors, adjacency]` with `nodes != pad_id` as the
node padding mask.

Conventions (as SR-GNN's `build_graph`, except the node order):
- Edges are binary: a transition repeated in the history counts once; `u -> u` (the same item
  twice in a row) is a self-loop edge.
- `direction="in"`: `adjacency[i, j] = edge(j -> i) / in_degree(i)`, so row `i` lists the
  nodes `i` receives messages from (SR-GNN's `A_in`), the convention `GraphAttention` reads
  (row = receiver). `direction="out"`: `adjacency[i, j] = edge(i -> j) / out_degree(i)`
  (SR-GNN's `A_out`). Non-empty rows sum to 1; rows of nodes without such edges are 0.
- Nodes are ordered by first appearance in the history (SR-GNN sorts ids; any order works for
  a permutation-equivariant graph layer) and padded with `pad_id` up to `max_nodes`.
- `alias[t]` is the node index of `history[t]`; padded positions get alias `0` (mask them with
  `history != pad_id`, the padding mask the sequence model already has).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tfrec_attn.data.vocabulary import PAD_ID

DIRECTIONS = ("in", "out")


class SessionGraph(NamedTuple):
    """One session graph (or a batch of them, with a leading batch axis on every field).

    Attributes:
        nodes: `int64 (max_nodes,)` distinct item ids, first appearance first, then `pad_id`.
        adjacency: `float32 (max_nodes, max_nodes)` direction-normalized adjacency.
        alias: `int32 (T,)` node index of each history position (`0` at padded positions).
    """

    nodes: np.ndarray
    adjacency: np.ndarray
    alias: np.ndarray


def _check_common(max_nodes, pad_id: int, direction: str) -> None:
    if max_nodes is not None and (isinstance(max_nodes, bool)
                                  or not isinstance(max_nodes, int | np.integer)
                                  or max_nodes < 1):
        raise ValueError(f"max_nodes must be a positive int. Received: max_nodes={max_nodes!r}")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}. "
                         f"Received: direction={direction!r}")
    if isinstance(pad_id, bool) or not isinstance(pad_id, int | np.integer):
        raise ValueError(f"pad_id must be an int. Received: pad_id={pad_id!r}")


def _as_ids(history, ndim: int, name: str) -> np.ndarray:
    array = np.asarray(history)
    if array.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array of item ids. "
                         f"Received shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integer item ids. Received dtype {array.dtype}")
    if array.shape[-1] == 0:
        raise ValueError(f"{name} must have at least one position. Received shape {array.shape}")
    if np.any(array < 0):
        raise ValueError(f"{name} must hold non-negative item ids. "
                         f"Received minimum {int(array.min())}")
    return array.astype(np.int64)


def _graph(history: np.ndarray, max_nodes: int, pad_id: int, direction: str,
           name: str) -> SessionGraph:
    """The graph of one validated 1-D history."""
    real = history != pad_id
    start = int(np.argmax(real)) if real.any() else len(history)
    if not real[start:].all():
        raise ValueError(f"{name} must be left-padded: pad_id={pad_id} found after the first "
                         f"item, at position {start + int(np.argmin(real[start:]))}.")
    items = history[start:]
    unique, first = np.unique(items, return_index=True)
    unique = unique[np.argsort(first)]  # first appearance first
    if len(unique) > max_nodes:
        raise ValueError(f"max_nodes={max_nodes} is smaller than the {len(unique)} distinct "
                         f"items of {name}; raise max_nodes (the history length always fits).")
    nodes = np.full(max_nodes, pad_id, np.int64)
    nodes[:len(unique)] = unique
    index = {int(item): i for i, item in enumerate(unique)}
    alias = np.zeros(len(history), np.int32)
    alias[start:] = [index[int(item)] for item in items]

    edges = np.zeros((max_nodes, max_nodes), np.float32)  # edges[u, v] = 1 for u -> v
    edges[alias[start:-1], alias[start + 1:]] = 1.0
    if direction == "in":
        edges = edges.T  # row i: the nodes i receives from
    degree = edges.sum(axis=1, keepdims=True)
    adjacency = edges / np.maximum(degree, 1.0)
    return SessionGraph(nodes, adjacency.astype(np.float32), alias)


def session_graph(history, max_nodes: int | None = None, pad_id: int = PAD_ID,
                  direction: str = "in") -> SessionGraph:
    """The session graph of one left-padded history.

    Args:
        history: 1-D integer item ids, left-padded with `pad_id` (most recent item last).
        max_nodes: int or None. Node slots; defaults to the history length (always enough).
        pad_id: int. The padding id. Defaults to `0`.
        direction: `"in"` (row `i` = nodes `i` receives from, for `GraphAttention`) or `"out"`.

    Returns:
        A `SessionGraph(nodes, adjacency, alias)`.

    Raises:
        ValueError: a history that is not 1-D, not integer, negative, padded after its first
            item, or with more distinct items than `max_nodes`; a bad `direction` / `max_nodes`.

    Example:
    >>> graph = session_graph([0, 0, 5, 7, 5, 9], max_nodes=4)
    >>> graph.nodes.tolist(), graph.alias.tolist()
    ([5, 7, 9, 0], [0, 0, 0, 1, 0, 2])
    >>> graph.adjacency.tolist()  # 5 receives from 7; 7 from 5; 9 from 5
    [[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    """
    _check_common(max_nodes, pad_id, direction)
    array = _as_ids(history, 1, "history")
    return _graph(array, max_nodes or len(array), pad_id, direction, "history")


def session_graphs(histories, max_nodes: int | None = None, pad_id: int = PAD_ID,
                   direction: str = "in") -> SessionGraph:
    """`session_graph` of every row of a `(batch, T)` array, stacked.

    Args:
        histories: 2-D integer item ids `(batch, T)`, each row left-padded with `pad_id`.
        max_nodes: int or None. Node slots; defaults to `T`.
        pad_id: int. The padding id.
        direction: `"in"` or `"out"` (see `session_graph`).

    Returns:
        A `SessionGraph` of `(batch, max_nodes)`, `(batch, max_nodes, max_nodes)` and
        `(batch, T)` arrays; `nodes != pad_id` is the node padding mask.

    Example:
    >>> graphs = session_graphs([[0, 3, 4], [4, 4, 2]])
    >>> graphs.adjacency.shape, graphs.nodes.tolist()
    ((2, 3, 3), [[3, 4, 0], [4, 2, 0]])
    """
    _check_common(max_nodes, pad_id, direction)
    array = _as_ids(histories, 2, "histories")
    if not len(array):
        raise ValueError("histories must have at least one row. Received shape "
                         f"{array.shape}")
    size = max_nodes or array.shape[1]
    graphs = [_graph(row, size, pad_id, direction, f"histories[{i}]")
              for i, row in enumerate(array)]
    return SessionGraph(*(np.stack(field) for field in zip(*graphs, strict=True)))
