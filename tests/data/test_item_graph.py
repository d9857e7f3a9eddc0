"""Session graphs: SR-GNN's construction (golden), directions, padding, batching, validation."""

import numpy as np
import pytest

from tfrec_attn._keras import tf
from tfrec_attn.data.item_graph import SessionGraph, session_graph, session_graphs
from tfrec_attn.layers import GraphAttention


def srgnn_reference(items: list[int], max_nodes: int):
    """SR-GNN's `build_graph` (Wu et al. 2019, `utils.py`) for one unpadded session:
    `(sorted nodes, A_in, A_out, alias)`."""
    node = np.unique(items)
    u_a = np.zeros((max_nodes, max_nodes))
    for i in np.arange(len(items) - 1):
        u = np.where(node == items[i])[0][0]
        v = np.where(node == items[i + 1])[0][0]
        u_a[u][v] = 1
    u_sum_in = np.sum(u_a, 0)
    u_sum_in[np.where(u_sum_in == 0)] = 1
    u_a_in = np.divide(u_a, u_sum_in)
    u_sum_out = np.sum(u_a, 1)
    u_sum_out[np.where(u_sum_out == 0)] = 1
    u_a_out = np.divide(u_a.transpose(), u_sum_out)
    u_a = np.concatenate([u_a_in, u_a_out]).transpose()
    alias = [np.where(node == i)[0][0] for i in items]
    return node, u_a[:, :max_nodes], u_a[:, max_nodes:], alias


@pytest.mark.parametrize("items", [[5, 7, 5, 9], [3, 3, 3], [4, 2, 8, 2, 4, 6, 6], [11]])
@pytest.mark.parametrize("direction", ["in", "out"])
def test_matches_srgnn_construction_up_to_node_order(items, direction):
    max_nodes, length = 6, 9
    history = np.array([0] * (length - len(items)) + items)
    graph = session_graph(history, max_nodes=max_nodes, direction=direction)
    node, a_in, a_out, alias = srgnn_reference(items, max_nodes)
    real = graph.nodes[graph.nodes != 0]
    np.testing.assert_array_equal(np.sort(real), node)
    # Our nodes come in first-appearance order: map SR-GNN's sorted indices onto ours.
    order = np.concatenate([np.searchsorted(node, real),
                            np.arange(len(real), max_nodes)])
    expected = (a_in if direction == "in" else a_out)[order][:, order]
    np.testing.assert_allclose(graph.adjacency, expected, atol=1e-7)
    np.testing.assert_array_equal(real[graph.alias[-len(items):]], items)
    np.testing.assert_array_equal(node[alias], items)
    np.testing.assert_array_equal(graph.alias[:length - len(items)], 0)


def test_hand_checked_graph():
    graph = session_graph([0, 0, 4, 2, 4, 4], max_nodes=3)
    assert graph.nodes.tolist() == [4, 2, 0]
    assert graph.alias.tolist() == [0, 0, 0, 1, 0, 0]
    # edges 4->2, 2->4, 4->4 (self-loop). "in": row i = predecessors of i.
    np.testing.assert_allclose(graph.adjacency, [[0.5, 0.5, 0], [1, 0, 0], [0, 0, 0]])
    out = session_graph([0, 0, 4, 2, 4, 4], max_nodes=3, direction="out")
    np.testing.assert_allclose(out.adjacency, [[0.5, 0.5, 0], [1, 0, 0], [0, 0, 0]])
    assert graph.nodes.dtype == np.int64 and graph.alias.dtype == np.int32
    assert graph.adjacency.dtype == np.float32


def test_directions_are_transposes_before_normalization():
    history = np.array([0, 3, 5, 6, 5, 3, 7])
    incoming = session_graph(history, direction="in").adjacency
    outgoing = session_graph(history, direction="out").adjacency
    np.testing.assert_array_equal(incoming > 0, (outgoing > 0).T)
    for adjacency in (incoming, outgoing):
        sums = adjacency.sum(-1)
        np.testing.assert_allclose(sums[sums > 0], 1.0, atol=1e-6)


def test_all_padding_history_gives_an_empty_graph():
    graph = session_graph([0, 0, 0], max_nodes=2)
    assert graph.nodes.tolist() == [0, 0] and graph.alias.tolist() == [0, 0, 0]
    np.testing.assert_array_equal(graph.adjacency, 0.0)


def test_max_nodes_defaults_to_history_length_and_pad_id_is_configurable():
    graph = session_graph([9, 9, 1, 2], pad_id=9)
    assert graph.nodes.tolist() == [1, 2, 9, 9]
    assert graph.alias.tolist() == [0, 0, 0, 1]


def test_batch_stacks_rows():
    histories = np.array([[0, 3, 4, 3], [5, 6, 7, 8], [0, 0, 0, 2]])
    graphs = session_graphs(histories, max_nodes=4)
    assert isinstance(graphs, SessionGraph)
    assert graphs.nodes.shape == (3, 4) and graphs.adjacency.shape == (3, 4, 4)
    assert graphs.alias.shape == (3, 4)
    for row, history in enumerate(histories):
        single = session_graph(history, max_nodes=4)
        for got, expected in zip(graphs, single, strict=True):
            np.testing.assert_array_equal(got[row], expected)


def test_feeds_graph_attention_and_alias_gathers_back_the_sequence():
    histories = np.array([[0, 0, 3, 4, 3], [5, 6, 7, 5, 8]])
    graphs = session_graphs(histories)
    table = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    nodes = table[graphs.nodes]
    states = GraphAttention(num_heads=2)([nodes, graphs.adjacency], mask=graphs.nodes != 0)
    sequence = tf.gather(states, graphs.alias, batch_dims=1)
    assert sequence.shape == (2, 5, 4)
    np.testing.assert_array_equal(states.numpy()[graphs.nodes == 0], 0.0)
    # Positions holding the same item get the same node state.
    np.testing.assert_allclose(sequence[0, 2], sequence[0, 4])


@pytest.mark.parametrize("history, kwargs, message", [
    ([[1, 2]], {}, "1-D"),
    ([1.5, 2.0], {}, "integer"),
    ([0, -3, 2], {}, "non-negative"),
    ([0, 3, 0, 4], {}, "left-padded.*position 2"),
    ([], {}, "at least one position"),
    ([1, 2, 3], {"max_nodes": 2}, "max_nodes=2 is smaller than the 3 distinct"),
    ([1, 2], {"max_nodes": 0}, "max_nodes must be a positive int"),
    ([1, 2], {"direction": "both"}, "direction must be one of"),
    ([1, 2], {"pad_id": 0.5}, "pad_id must be an int"),
])
def test_session_graph_validates_inputs(history, kwargs, message):
    with pytest.raises(ValueError, match=message):
        session_graph(history, **kwargs)


def test_session_graphs_names_the_bad_row():
    with pytest.raises(ValueError, match=r"histories\[1\] must be left-padded"):
        session_graphs([[0, 1, 2], [1, 0, 2]])
    with pytest.raises(ValueError, match="2-D"):
        session_graphs([1, 2, 3])
    with pytest.raises(ValueError, match="at least one row"):
        session_graphs(np.zeros((0, 3), np.int64))
