"""Training throughput of a compiled Keras model against the CPU's measured float32 peak.

FLOPs per step come from TensorFlow's profiler (`tf.compat.v1.profiler`, `float_ops`) on the
traced graph of `model.train_step`. Shapes that depend on the data (e.g. the positions kept by
`tf.boolean_mask`) are unknown when tracing, and the profiler counts nothing for ops whose shapes
are incomplete, so they are first filled from one run of the same graph (what `tfprof` does with
a `RunMetadata`, which TF2 functions no longer provide with per-node shapes).
"""

from __future__ import annotations

from tfrec_attn._keras import tf
from tfrec_attn.benchmarking.timing import median_ms

_NUMERIC = (tf.float16, tf.bfloat16, tf.float32, tf.float64, tf.int32, tf.int64, tf.bool)


def peak_matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Measured float32 GFLOP/s of an `n x n` matmul in TensorFlow (`2 n^3` FLOPs a call)."""
    if n <= 0 or repeats <= 0:
        raise ValueError(f"n and repeats must be positive. Received: n={n}, repeats={repeats}")
    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    matmul = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))
    return 2.0 * n**3 / (median_ms(matmul, (a, b), repeats, warmup=2) / 1e3) / 1e9


def graph_float_ops(fn, example: dict) -> int:
    """Float operations of one `fn(example)` from the profiler, data-dependent shapes filled in.

    Args:
        fn: a function of a dict of tensors (e.g. `model.train_step`).
        example: the dict of tensors to count for (its shapes are fixed in the trace).

    Returns:
        `total_float_ops` (a MatMul of `m x k` by `k x n` counts `2 m k n`).

    Example:
    >>> from tfrec_attn._keras import tf
    >>> graph_float_ops(lambda d: tf.matmul(d["a"], d["a"]), {"a": tf.ones((4, 4))})
    128
    """
    names = sorted(example)
    specs = [tf.TensorSpec(example[k].shape, example[k].dtype, name=k) for k in names]
    wrapped = tf.compat.v1.wrap_function(lambda *args: fn(dict(zip(names, args))), specs)
    graph = wrapped.graph
    missing = [t for op in graph.get_operations() for t in op.outputs
               if t.dtype in _NUMERIC and not t.shape.is_fully_defined()]
    if missing:
        values = wrapped.prune(feeds=wrapped.inputs, fetches=missing)(
            *[example[k] for k in names])
        for tensor, value in zip(missing, values):
            tensor.set_shape(value.shape)
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return int(tf.compat.v1.profiler.profile(graph, options=options).total_float_ops)


def train_step_throughput(model, batch: dict, repeats: int = 10, warmup: int = 3,
                          jit_compile: bool = False, peak_gflops: float | None = None) -> dict:
    """Times `model.train_step` on one fixed batch and relates it to its counted FLOPs.

    Args:
        model: a compiled Keras model whose `train_step` takes `batch`.
        batch: dict of tensors (first dimension = sequences per step).
        repeats / warmup: timed and untimed steps (median reported).
        jit_compile: XLA-compile the step.
        peak_gflops: the machine's measured peak (see `peak_matmul_gflops`), for the fraction.

    Returns:
        Dict with `step_ms`, `sequences_per_second`, `flops_per_step`, `achieved_gflops` and,
        given a peak, `fraction_of_peak`.
    """
    step = tf.function(model.train_step, jit_compile=jit_compile)
    seconds = median_ms(step, (batch,), repeats, warmup) / 1e3  # warm-up creates optimizer slots
    flops = graph_float_ops(model.train_step, batch)
    rows = int(next(iter(batch.values())).shape[0])
    result = {"step_ms": round(seconds * 1e3, 2),
              "sequences_per_second": round(rows / seconds, 1),
              "flops_per_step": flops, "achieved_gflops": round(flops / seconds / 1e9, 4),
              "jit_compile": jit_compile,
              "flops_method": "tf.compat.v1.profiler float_ops on the traced train_step graph, "
                              "data-dependent shapes filled from one run"}
    if peak_gflops:
        result["peak_gflops"] = round(peak_gflops, 2)
        result["fraction_of_peak"] = round(flops / seconds / 1e9 / peak_gflops, 4)
    return result
