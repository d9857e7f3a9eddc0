"""Attention cost against sequence length: forward time, train-step time and peak memory.

For every variant and length `L`, one layer is built for `(batch, L, dim)` self-attention with a
left-padding mask, and two `tf.function`s are timed after warm-up: the forward pass and a train
step (forward + backward under a `GradientTape`, gradients w.r.t. the inputs and the weights).
Peak memory is read from TensorFlow's own CPU allocator: `tf.config.experimental.get_memory_info`
has statistics for `CPU:0` when oneDNN's allocator is in use (TensorFlow's default on x86) or
TensorFlow was started with `TF_CPU_ALLOCATOR_USE_BFC=true`, and none otherwise (checked on TF
2.20, e.g. under `TF_ENABLE_ONEDNN_OPTS=0`), so `run_cli` re-runs the benchmark in one child
process with that variable set when the current process lacks them. `peak_bytes` is the
allocator's peak during one train step minus the bytes already live before it (weights, inputs):
the step's own tensors. Allocations made outside TensorFlow's allocator (e.g. oneDNN scratch
space) are not included.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import platform
import time

import numpy as np

from tfrec_attn._keras import keras, tf
from tfrec_attn.benchmarking.timing import median_ms
from tfrec_attn.layers import MultiHeadAttention

MEMORY_ENV = "TF_CPU_ALLOCATOR_USE_BFC"
MEMORY_METHOD = ("TensorFlow CPU allocator peak (tf.config.experimental.get_memory_info('CPU:0') "
                 f"with {MEMORY_ENV}=true) during one train step, minus the bytes live before it")
FACTORY_MODULE = "tfrec_attn.layers.attention_factory"


@dataclasses.dataclass(frozen=True)
class Variant:
    """One benchmarked attention: `kind` is `"keras"`, `"full"` or an `attention_factory` kind."""

    name: str
    kind: str
    options: dict = dataclasses.field(default_factory=dict)


# Adding a variant is one line here; kinds not importable yet are skipped with a warning.
VARIANTS = {v.name: v for v in (
    Variant("keras_mha", "keras"),
    Variant("full", "full"),
    Variant("low_rank", "low_rank", {"projection_length": 32}),
    Variant("local", "local", {"window": 16}),
    Variant("linear_elu", "linear", {"feature_map": "elu"}),
    Variant("linear_favor", "linear", {"feature_map": "favor", "num_features": 64}),
    Variant("top_k", "top_k", {"k": 8}),
)}


def _construct(variant: Variant, num_heads: int, length: int, dim: int, causal: bool):
    if variant.kind == "keras":
        return keras.layers.MultiHeadAttention(num_heads, key_dim=dim // num_heads)
    if variant.kind == "full":
        return MultiHeadAttention(num_heads=num_heads, causal=causal)
    make_attention = importlib.import_module(FACTORY_MODULE).make_attention
    options = dict(variant.options)
    if variant.kind == "low_rank":
        options["max_length"] = length
    return make_attention(variant.kind, num_heads=num_heads, causal=causal, **options)


def build_layer(variant: Variant, num_heads: int, length: int, dim: int):
    """`(layer, causal)`: causal if the variant accepts it, else non-causal (e.g. low-rank).

    Raises ImportError when the variant's module is missing, ValueError for an unknown kind.
    """
    try:
        return _construct(variant, num_heads, length, dim, causal=True), True
    except (TypeError, ValueError) as err:
        if "causal" not in str(err):
            raise
        return _construct(variant, num_heads, length, dim, causal=False), False


def resolve_variants(names, num_heads: int = 1, dim: int = 64, log=print):
    """Checks names and builds each variant once; `(usable names, {skipped name: reason})`.

    Unknown names raise ValueError; a variant whose layer cannot be imported or built is
    skipped with a printed warning (and listed with the reason).
    """
    names = list(names)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        raise ValueError(f"variants must be a non-empty list of {sorted(VARIANTS)}. "
                         f"Received unknown: {unknown or names}")
    usable, skipped = [], {}
    for name in names:
        try:
            build_layer(VARIANTS[name], num_heads, 16, dim)
        except (ImportError, ValueError) as err:
            skipped[name] = f"{type(err).__name__}: {err}"
            log(f"WARNING: skipping variant {name!r}: {skipped[name]}")
            continue
        usable.append(name)
    return usable, skipped


def check_lengths(lengths) -> list[int]:
    """Sorted unique positive ints, or ValueError naming `lengths`."""
    lengths = list(lengths)
    bad = [v for v in lengths if not isinstance(v, int | np.integer) or v <= 0]
    if bad or not lengths:
        raise ValueError(f"lengths must be positive ints. Received: lengths={lengths}")
    return sorted({int(v) for v in lengths})


def padded_inputs(batch: int, length: int, dim: int, seed: int = 0):
    """Random `(batch, length, dim)` inputs and a left-padding mask (row 0 unpadded, others up
    to a quarter padding), as in the recommender's right-aligned histories."""
    rng = np.random.default_rng(seed)
    pads = rng.integers(0, length // 4 + 1, size=batch)
    pads[0] = 0
    mask = np.arange(length)[None, :] >= pads[:, None]
    x = rng.standard_normal((batch, length, dim)).astype(np.float32)
    return tf.constant(x), tf.constant(mask)


def _call(layer, x, mask, causal: bool, training: bool):
    if isinstance(layer, keras.layers.MultiHeadAttention):
        out = layer(x, x, attention_mask=mask[:, None, :], use_causal_mask=causal,
                    training=training)
        return out * tf.cast(mask, out.dtype)[:, :, None]  # zero padded queries, as ours do
    return layer(x, mask=mask, training=training)


def step_functions(layer, causal: bool, dim: int):
    """`(forward, train_step)` `tf.function`s of `(x, mask)`, traced once for any batch and
    length (as in the recommender, whose history length is unknown when the graph is traced)."""
    signature = [tf.TensorSpec((None, None, dim), tf.float32), tf.TensorSpec((None, None), tf.bool)]

    @tf.function(input_signature=signature)
    def forward(x, mask):
        return _call(layer, x, mask, causal, training=False)

    @tf.function(input_signature=signature)
    def train_step(x, mask):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_mean(tf.square(_call(layer, x, mask, causal, training=True)))
        return loss, tape.gradient(loss, [x, *layer.trainable_variables])

    return forward, train_step


def memory_stats_available() -> bool:
    """Whether TensorFlow's CPU allocator keeps statistics in this process."""
    try:
        tf.config.experimental.get_memory_info("CPU:0")
    except ValueError:
        return False
    return True


def peak_step_bytes(fn, args) -> int:
    """Allocator peak during one `fn(*args)` minus the bytes live before it."""
    tf.config.experimental.reset_memory_stats("CPU:0")
    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    fn(*args)
    return int(tf.config.experimental.get_memory_info("CPU:0")["peak"] - before)


def predict_peak(measured: list[tuple[int, int]], length: int, batch: int, heads: int) -> float:
    """Expected peak bytes at `length`: log-log extrapolation of this variant's last two points
    (slope at least 1), or a dense-attention bound (ten `(batch, heads, L, L)` float tensors)."""
    if len(measured) >= 2:
        (l0, b0), (l1, b1) = measured[-2:]
        slope = max(1.0, np.log(max(b1, 1) / max(b0, 1)) / np.log(l1 / l0))
        return b1 * (length / l1) ** slope
    return 10.0 * batch * heads * length * length * 4


def measure(functions, length: int, settings: dict, memory: bool) -> dict:
    """`forward_ms`, `train_step_ms`, `peak_bytes` (and the forward's peak) at `length`."""
    forward, train_step = functions
    args = padded_inputs(settings["batch_size"], length, settings["dim"], settings["seed"])
    repeats, warmup = settings["repeats"], settings["warmup"]
    return {"forward_ms": round(median_ms(forward, args, repeats, warmup), 3),
            "train_step_ms": round(median_ms(train_step, args, repeats, warmup), 3),
            "peak_bytes": peak_step_bytes(train_step, args) if memory else None,
            "forward_peak_bytes": peak_step_bytes(forward, args) if memory else None}


def fit_slope(lengths, values) -> float | None:
    """Log-log slope of `values` against `lengths` on the largest half of the points (at least
    two); None when fewer than two positive values.

    Example:
    >>> round(fit_slope([64, 128, 256, 512], [1.0, 3.0, 9.0, 36.0]), 3)  # from 256 and 512
    2.0
    """
    points = sorted((int(n), float(v)) for n, v in zip(lengths, values)
                    if v is not None and v > 0)
    if len(points) < 2:
        return None
    tail = points[len(points) - max(2, (len(points) + 1) // 2):]
    n, v = np.log([p[0] for p in tail]), np.log([p[1] for p in tail])
    return float(np.polyfit(n, v, 1)[0])


def slopes(records: list[dict]) -> dict:
    """`{variant: {metric: slope}}` over the measured records (per head count if several)."""
    out = {}
    for key in sorted({_key(r) for r in records}):
        rows = [r for r in records if _key(r) == key and not r.get("skipped")]
        out[key] = {m: _round(fit_slope([r["length"] for r in rows], [r[m] for r in rows]))
                    for m in ("forward_ms", "train_step_ms", "peak_bytes")}
    return out


def ratios_at(records: list[dict], length: int, reference: str = "full") -> dict:
    """`(speedups, memory ratios)` against `reference` at `length`: speedup = reference time /
    variant time (per metric); memory ratio = variant peak / reference peak."""
    at = {_key(r): r for r in records if r["length"] == length and not r.get("skipped")}
    speedups, memory = {}, {}
    for key, row in at.items():
        ref = at.get(_key({"variant": reference, "num_heads": row["num_heads"]}))
        if ref is None or row["variant"] == reference:
            continue
        speedups[key] = {m: _round(ref[m] / row[m]) for m in ("forward_ms", "train_step_ms")}
        if row["peak_bytes"] and ref["peak_bytes"]:
            memory[key] = _round(row["peak_bytes"] / ref["peak_bytes"])
    return speedups, memory


def _key(record: dict) -> str:
    heads = record.get("num_heads", 1)
    return record["variant"] if heads == 1 else f"{record['variant']}/h{heads}"


def _round(value):
    return None if value is None else round(float(value), 3)


# -- the grid ----------------------------------------------------------------------------------
FULL_GRID = {"lengths": [64, 128, 256, 512, 1024, 2048, 4096], "batch_size": 8, "repeats": 5,
             "warmup": 2}
QUICK_GRID = {"lengths": [64, 128, 256, 512, 1024], "batch_size": 4, "repeats": 3, "warmup": 1}


def machine_info() -> dict:
    """CPU model, cores, load and TensorFlow build facts recorded beside the numbers."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f
                          if line.startswith("model name")), model)
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "load_average": list(os.getloadavg()),
            "tensorflow": tf.__version__, "python": platform.python_version(),
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default")}


def _progress(index: int, total: int, record: dict, seconds: float) -> str:
    head = (f"[{index:>3d}/{total}] {_key(record):<14s} L={record['length']:>5d} "
            f"{'causal' if record.get('causal') else 'non-causal':<10s}")
    if record.get("skipped"):
        return f"{head} skipped: {record['skipped']}"
    peak = record["peak_bytes"]
    memory = "" if peak is None else f" - peak {peak / 2**20:9.1f} MB"
    return (f"{head} - forward {record['forward_ms']:9.2f} ms - train step "
            f"{record['train_step_ms']:9.2f} ms{memory} - {seconds:.1f}s")


def run_benchmark(settings: dict, memory: bool, log=print) -> dict:
    """Measures the grid in `settings`; returns the `attention.json` payload."""
    lengths = check_lengths(settings["lengths"])
    names, skipped_variants = resolve_variants(settings["variants"], settings["heads"][0],
                                               settings["dim"], log)
    cap = settings["memory_cap_gb"] * 2**30
    batch, total = settings["batch_size"], len(settings["heads"]) * len(names) * len(lengths)
    records = []
    for heads in settings["heads"]:
        for name in names:
            started = time.monotonic()
            # Built once for the longest L (low-rank's projection covers max_length).
            layer, causal = build_layer(VARIANTS[name], heads, lengths[-1], settings["dim"])
            functions = step_functions(layer, causal, settings["dim"])
            measured = []
            for length in lengths:
                record = {"variant": name, "length": length, "num_heads": heads,
                          "causal": causal, "batch_size": batch}
                expected = predict_peak(measured, length, batch, heads)
                if expected > cap:
                    record.update(forward_ms=None, train_step_ms=None, peak_bytes=None,
                                  forward_peak_bytes=None,
                                  skipped=f"predicted peak {expected / 2**30:.1f} GiB exceeds "
                                          f"the memory cap of {settings['memory_cap_gb']} GiB")
                else:
                    record.update(measure(functions, length, settings, memory))
                    if record["peak_bytes"]:
                        measured.append((length, record["peak_bytes"]))
                records.append(record)
                log(_progress(len(records), total, record, time.monotonic() - started))
                started = time.monotonic()
    compare = 2048 if 2048 in lengths else None
    speedups, memory_ratios = ratios_at(records, compare) if compare else ({}, {})
    longest = max((r["length"] for r in records
                   if r["variant"] == "full" and not r.get("skipped")), default=None)
    at_longest = ratios_at(records, longest) if longest else ({}, {})
    return {
        "records": records,
        "slopes": slopes(records),
        "speedup_at_2048": speedups,
        "memory_ratio_at_2048": memory_ratios,
        "at_longest_full_length": {"length": longest, "speedup": at_longest[0],
                                   "memory_ratio": at_longest[1]},
        "skipped_variants": skipped_variants,
        "settings": {**settings, "lengths": lengths,
                     "slope_fit": "numpy.polyfit of log(cost) on log(L), largest half of L",
                     "speedup": "full's time / variant's time (same L, heads)",
                     "reference": "full"},
        "memory_method": MEMORY_METHOD if memory else "not measured",
        "machine": machine_info(),
    }

