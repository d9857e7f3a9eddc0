"""Graph attention (GAT, GATv2) over a dense adjacency, e.g. session graphs of item histories."""

from tfrec_attn._keras import keras, tf
from tfrec_attn.layers import masking
from tfrec_attn.layers.utils import (
    build_sublayer,
    clone_initializer,
    expand_axes,
    prunable_kernels,
)
from tfrec_attn.registry import register
from tfrec_attn.validation import (
    check_bool,
    check_choice,
    check_non_negative_float,
    check_optional_positive_int,
    check_positive_int,
    check_rate,
)

VERSIONS = (1, 2)


def _split_graph_inputs(inputs):
    if not isinstance(inputs, list | tuple) or len(inputs) != 2:
        count = len(inputs) if isinstance(inputs, list | tuple) else 1
        raise ValueError("GraphAttention inputs must be [nodes (batch, N, dim), adjacency "
                         f"(batch, N, N)]. Received {count} tensor(s).")
    return inputs[0], inputs[1]


def _node_mask(mask):
    """The node padding mask from `mask=` (a tensor, or Keras' per-input list)."""
    if isinstance(mask, list | tuple):
        return mask[0]
    return mask


@register()
class GraphAttention(keras.layers.Layer):
    """Multi-head graph attention: GAT (Velickovic et al., 2018) or GATv2 (Brody et al., 2022).

    Node `i` attends over its neighbours `j` (`adjacency[:, i, j] != 0`, plus itself with
    `add_self_loops`): with `h = W x`,
    `e_ij = LeakyReLU(a_t . h_i + a_s . h_j)` (`version=1`) or
    `e_ij = a . LeakyReLU(W_t x_i + W x_j)` (`version=2`, whose ranking of neighbours can depend
    on the receiver), `alpha_ij = softmax_j(e_ij)` over the neighbours and
    `out_i = activation(sum_j alpha_ij h_j + bias)`. Heads are concatenated or averaged.
    Only Dense, matmul, reshape/transpose and elementwise ops: TFMOT prunes and quantizes `W`
    (and `W_t`), TFLite lowers it to builtins. Version 2 forms a `(batch, heads, N, N, units)`
    tensor, fine for session graphs (N <= a few hundred).

    Args:
        units: int or None. Output size per head; defaults to `dim // num_heads` when
            `concat_heads` (output width = input width) and `dim` otherwise.
        num_heads: int. Attention heads. Defaults to `1`.
        version: `1` (GAT) or `2` (GATv2 scoring). Defaults to `1`.
        concat_heads: bool. Concatenate heads (`num_heads * units` outputs) or average them.
        add_self_loops: bool. Every real node also attends to itself. Defaults to `True`.
        activation: output activation (name or callable), applied after the bias.
        dropout: float. Dropout on the attention weights.
        negative_slope: float. LeakyReLU slope of the scores. Defaults to `0.2`.
        use_bias: bool. Output bias.
        kernel_initializer / bias_initializer: initializers (the kernel one also for the
            attention vectors).

    Call arguments:
        inputs: `[nodes (batch, N, dim), adjacency (batch, N, N)]`; `adjacency[:, i, j] != 0`
            means node `i` receives from node `j` (row = receiver; see
            `tfrec_attn.data.item_graph`, `direction="in"`). Only the pattern counts: edge
            weights are ignored.
        mask: optional boolean node padding mask `(batch, N)` (or Keras' per-input mask list):
            a padded node neither sends nor receives attention and outputs zeros.
        training: bool, for dropout.
        return_attention_scores: bool. Also return `(batch, heads, N, N)` float32 weights: zero
            off the edges, each real node's row sums to 1 over its neighbours.

    Returns:
        `(batch, N, num_heads * units)` (or `(batch, N, units)` when averaging heads), and the
        weights when asked. Padded nodes and nodes without any neighbour (no edge and no
        self-loop) get zero weights and zero outputs, never NaN.

    Example:
    >>> from tfrec_attn._keras import tf
    >>> layer = GraphAttention(units=4, num_heads=2)
    >>> nodes, adjacency = tf.ones((2, 5, 8)), tf.ones((2, 5, 5))
    >>> layer([nodes, adjacency], mask=tf.sequence_mask([3, 5], 5)).shape
    TensorShape([2, 5, 8])
    """

    def __init__(self, units: int | None = None, num_heads: int = 1, version: int = 1,
                 concat_heads: bool = True, add_self_loops: bool = True, activation=None,
                 dropout: float = 0.0, negative_slope: float = 0.2, use_bias: bool = True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        check_optional_positive_int("units", units)
        check_positive_int("num_heads", num_heads)
        check_positive_int("version", version)  # check_choice alone takes True and 1.0 for 1
        check_choice("version", version, VERSIONS)
        check_rate("dropout", dropout)
        check_non_negative_float("negative_slope", negative_slope)
        for name, flag in (("concat_heads", concat_heads), ("add_self_loops", add_self_loops),
                           ("use_bias", use_bias)):
            check_bool(name, flag)
        self.units = units
        self.num_heads = num_heads
        self.version = version
        self.concat_heads = concat_heads
        self.add_self_loops = add_self_loops
        self.activation = keras.activations.get(activation)
        self.dropout = dropout
        self.negative_slope = negative_slope
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.supports_masking = True

    # -- building ---------------------------------------------------------------------------
    def _head_units(self, dim: int) -> int:
        if self.units is not None:
            return self.units
        if not self.concat_heads:
            return dim
        if dim % self.num_heads:
            raise ValueError(f"With units=None and concat_heads=True the node width ({dim}) must "
                             f"be divisible by num_heads. Received: num_heads={self.num_heads}")
        return dim // self.num_heads

    def _output_dim(self, dim: int) -> int:
        units = self._head_units(dim)
        return units * self.num_heads if self.concat_heads else units

    def _vector(self, name: str):
        return self.add_weight(name=name, shape=(self.num_heads, self._units),
                               initializer=clone_initializer(self.kernel_initializer))

    def build(self, input_shape):
        nodes_shape, adjacency_shape = (tf.TensorShape(s) for s in
                                        _split_graph_inputs(input_shape))
        if nodes_shape.rank != 3 or adjacency_shape.rank != 3:
            raise ValueError("GraphAttention inputs must be nodes (batch, N, dim) and adjacency "
                             f"(batch, N, N). Received shapes {nodes_shape}, {adjacency_shape}")
        dim = nodes_shape[-1]
        self._units = self._head_units(dim)
        width = self.num_heads * self._units
        self.source_dense = self._dense(width, "source_dense", dim)
        if self.version == 2:
            self.target_dense = self._dense(width, "target_dense", dim)
            self.attention_vector = self._vector("attention_vector")
        else:
            self.attention_source = self._vector("attention_source")
            self.attention_target = self._vector("attention_target")
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self._output_dim(dim),),
                                        initializer=clone_initializer(self.bias_initializer))
        self._dropout_layer = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)
        super().build(input_shape)

    def _dense(self, units: int, name: str, input_dim: int) -> keras.layers.Dense:
        layer = keras.layers.Dense(units, use_bias=False, dtype=self.dtype_policy, name=name,
                                   kernel_initializer=clone_initializer(self.kernel_initializer))
        build_sublayer(layer, (None, None, input_dim))
        return layer

    # -- call --------------------------------------------------------------------------------
    def _split_heads(self, x: tf.Tensor) -> tf.Tensor:
        """`(batch, N, heads * units)` -> `(batch, heads, N, units)`."""
        x = tf.reshape(x, [-1, tf.shape(x)[1], self.num_heads, self._units])
        return tf.transpose(x, [0, 2, 1, 3])

    def _scores(self, nodes: tf.Tensor, source: tf.Tensor) -> tf.Tensor:
        """Logits `e[b, h, i, j]` (receiver `i`, sender `j`), `(batch, heads, N, N)`."""
        if self.version == 1:
            def project(vector):  # (batch, heads, N): a . h_n for every node n
                return tf.reduce_sum(source * tf.cast(vector, source.dtype)[None, :, None, :], -1)

            logits = (expand_axes(project(self.attention_target), 3)
                      + expand_axes(project(self.attention_source), 2))
            return tf.nn.leaky_relu(logits, alpha=self.negative_slope)
        target = self._split_heads(self.target_dense(nodes))
        hidden = tf.nn.leaky_relu(expand_axes(target, 3) + expand_axes(source, 2),
                                  alpha=self.negative_slope)
        vector = tf.cast(self.attention_vector, hidden.dtype)[None, :, None, None, :]
        return tf.reduce_sum(hidden * vector, axis=-1)

    def _edge_mask(self, adjacency: tf.Tensor, node_mask) -> tf.Tensor:
        """Boolean `(batch, 1, N, N)`: edges (and self-loops) between real nodes."""
        edges = tf.not_equal(adjacency, tf.zeros_like(adjacency))
        if self.add_self_loops:
            count = tf.shape(adjacency)[-1]
            eye = tf.equal(expand_axes(tf.range(count), 1), expand_axes(tf.range(count), 0))
            edges = tf.logical_or(edges, expand_axes(eye, 0))
        return masking.merge_masks(query_mask=node_mask, value_mask=node_mask,
                                   attention_mask=edges)

    def call(self, inputs, mask=None, training=None, return_attention_scores=False):
        nodes, adjacency = _split_graph_inputs(inputs)
        node_mask = _node_mask(mask)
        batch_and_nodes = nodes.shape[:2]
        masking.check_mask_shape("GraphAttention", "adjacency", adjacency,
                                 batch_and_nodes.concatenate(nodes.shape[1:2]), "(batch, N, N)")
        masking.check_mask_shape("GraphAttention", "mask", node_mask, batch_and_nodes,
                                 "(batch, N)")
        source = self._split_heads(self.source_dense(nodes))
        edge_mask = self._edge_mask(adjacency, node_mask)
        # Non-edge logits are zeroed before the fill (`zero_masked_logits`), so padded nodes'
        # content cannot move the softmax's fill value (nor, in int8, the logits' range).
        weights = masking.masked_softmax(self._scores(nodes, source), edge_mask,
                                         zero_masked_logits=True)
        dropped = self._dropout_layer(tf.cast(weights, source.dtype), training=training)
        heads = tf.matmul(dropped, source)  # (batch, heads, N, units)
        if self.concat_heads:
            outputs = tf.reshape(tf.transpose(heads, [0, 2, 1, 3]),
                                 [-1, tf.shape(heads)[2], self.num_heads * self._units])
        else:
            outputs = tf.reduce_mean(heads, axis=1)
        if self.bias is not None:
            outputs = outputs + tf.cast(self.bias, outputs.dtype)
        outputs = self.activation(outputs)
        # Padded nodes and nodes without neighbours output zeros (not activation(bias)).
        outputs = masking.apply_sequence_mask(outputs, tf.reduce_any(edge_mask[:, 0], axis=-1))
        if return_attention_scores:
            return outputs, weights
        return outputs

    def compute_mask(self, inputs, mask=None):
        return _node_mask(mask)

    def compute_output_shape(self, input_shape):
        nodes_shape = tf.TensorShape(_split_graph_inputs(input_shape)[0])
        return nodes_shape[:-1].concatenate([self._output_dim(nodes_shape[-1])])

    def get_prunable_weights(self) -> list:
        return prunable_kernels(self)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            units=self.units,
            num_heads=self.num_heads,
            version=self.version,
            concat_heads=self.concat_heads,
            add_self_loops=self.add_self_loops,
            activation=keras.activations.serialize(self.activation),
            dropout=self.dropout,
            negative_slope=self.negative_slope,
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
        )
        return config
