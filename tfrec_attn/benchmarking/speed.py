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
