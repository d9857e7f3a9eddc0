"""`tfrec-attn benchmark speed`: epoch time and throughput of the sequential recommender.

Plus the compute rate of one fixed-shape train step (FLOPs counted by TF's profiler, see
`throughput.py`) against the CPU's measured matmul peak. The record is printed, and written to
`{output}/speed.json` when `--output` names a directory, as `attention`, `variants` and
`families` write into theirs.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from tfrec_attn._keras import keras, tf
from tfrec_attn.benchmarking.throughput import peak_matmul_gflops, train_step_throughput
from tfrec_attn.data import (
    build_sequences,
    generate_synthetic,
    leave_one_out,
    make_training_dataset,
    training_examples,
)
from tfrec_attn.models import SASRec, SASRecConfig
from tfrec_attn.training import EpochTimer

RECORD_FILE = "speed.json"


def check_speed_args(args) -> None:
    """Raises `ValueError` naming the bad flag of the `speed` command, before anything runs:
    the synthetic sizes (`--users` >= 1, `--items` >= 2, `--length` >= 1), the positive
    `--batch-size` and `--throughput-steps`, and a valid model (`--max-len`, `--dim`,
    `--blocks`, `--loss`, as `SASRecConfig` checks them).

    Example:
    >>> import types
    >>> args = types.SimpleNamespace(users=0, items=10, length=9.3, batch_size=8,
    ...                              throughput_steps=1, max_len=5, dim=8, blocks=1,
    ...                              loss="softmax")
    >>> check_speed_args(args)
    Traceback (most recent call last):
    ...
    ValueError: --users must be an int >= 1. Received: --users 0
    >>> check_speed_args(types.SimpleNamespace(**{**vars(args), "users": 1, "blocks": 0}))
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: --max-len / --dim / --blocks: num_blocks must be a positive int. Received: ...
    """
    for flag, low in (("users", 1), ("items", 2), ("batch_size", 1), ("throughput_steps", 1)):
        value = getattr(args, flag)
        if value < low:
            name = "--" + flag.replace("_", "-")
            raise ValueError(f"{name} must be an int >= {low}. Received: {name} {value}")
    if not args.length >= 1:
        raise ValueError(f"--length (mean events per user) must be >= 1. Received: --length "
                         f"{args.length}")
    try:
        SASRecConfig(vocab_size=4, max_len=args.max_len, dim=args.dim, num_blocks=args.blocks,
                     loss=args.loss)
    except ValueError as err:
        raise ValueError(f"--max-len / --dim / --blocks: {err}") from None


def measure_speed(args) -> dict:
    """Trains `args.epochs` epochs on synthetic data and times them; returns the JSON record.

    `args` holds the `speed` command's options (`users`, `items`, `length`, `max_len`, `dim`,
    `blocks`, `loss`, `batch_size`, `epochs`, `xla`, `no_trim`, `throughput_steps`,
    `verbose`).
    """
    frame = generate_synthetic(num_users=args.users, num_items=args.items,
                               mean_length=args.length, seed=0)
    data = build_sequences(frame)
    split = leave_one_out(data)
    config = SASRecConfig(vocab_size=data.vocab_size, max_len=args.max_len, dim=args.dim,
                          num_blocks=args.blocks, loss=args.loss)
    model = SASRec(config)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=args.xla)
    fixed = args.no_trim or args.xla  # XLA: one batch shape, one compilation (as in train)
    dataset = make_training_dataset(split.train, args.max_len, args.batch_size,
                                    trim=not fixed, bucket=not fixed, drop_remainder=args.xla)
    inputs, targets = training_examples(split.train, args.max_len)
    timer = EpochTimer()
    started = time.monotonic()
    if args.epochs > 0:  # --epochs 0: only the fixed-shape step below
        model.fit(dataset, epochs=args.epochs, callbacks=[timer], verbose=args.verbose)
    seconds = timer.seconds
    steady = float(np.median(seconds[1:] if len(seconds) > 1 else seconds)) if seconds else None
    rows = np.random.default_rng(0).permutation(len(inputs))[:args.batch_size]
    batch = {"history": tf.constant(inputs[rows]), "targets": tf.constant(targets[rows])}
    compute = train_step_throughput(model, batch, repeats=args.throughput_steps,
                                    jit_compile=args.xla, peak_gflops=peak_matmul_gflops())
    return {
        "users": data.num_users, "items": data.vocab_size - 2,
        "interactions": data.num_interactions, "sequences": int(len(inputs)),
        "target_positions": int((targets > 0).sum()),
        "max_len": args.max_len, "dim": args.dim, "blocks": args.blocks, "loss": args.loss,
        "batch_size": args.batch_size, "trim_and_bucket": not fixed, "xla": args.xla,
        "first_epoch_seconds": round(seconds[0], 2) if seconds else None,
        "epoch_seconds": round(steady, 2) if steady else None,
        "sequences_per_second": round(len(inputs) / steady, 1) if steady else None,
        "total_seconds": round(time.monotonic() - started, 2),
        "threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "fixed_batch_step": {"rows": len(rows), "width": args.max_len, **compute},
    }


def write_record(record: dict, output: str | os.PathLike) -> Path:
    """Writes `record` to `{output}/speed.json`, creating the directory; returns the file.

    Only that file is written: whatever else `output` holds is kept.
    """
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    path = out / RECORD_FILE
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path
