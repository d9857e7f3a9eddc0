"""`python -m pipelines.benchmark speed`: epoch time and throughput of the sequential recommender.

Measured on the synthetic generator at a chosen size (default: Amazon-Games-sized, 31k users,
24k items, ~9 events a user), so the numbers are reproducible anywhere. Quality benchmarks are
runs of the train command; docs/BENCHMARKS.md lists both with their commands.
"""

import argparse
import json
import sys
import time

import numpy as np

from tfrec_attn._keras import keras, tf
from tfrec_attn.data import (
    build_sequences,
    generate_synthetic,
    leave_one_out,
    make_training_dataset,
    training_examples,
)
from tfrec_attn.models import SASRec, SASRecConfig
from tfrec_attn.training import EpochTimer


def speed(args) -> dict:
    frame = generate_synthetic(num_users=args.users, num_items=args.items,
                               mean_length=args.length, seed=0)
    data = build_sequences(frame)
    split = leave_one_out(data)
    config = SASRecConfig(vocab_size=data.vocab_size, max_len=args.max_len, dim=args.dim,
                          num_blocks=args.blocks, loss=args.loss)
    model = SASRec(config)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=args.xla)
    dataset = make_training_dataset(split.train, args.max_len, args.batch_size,
                                    trim=not args.no_trim, bucket=not args.no_trim)
    inputs, targets = training_examples(split.train, args.max_len)
    timer = EpochTimer()
    started = time.monotonic()
    model.fit(dataset, epochs=args.epochs, callbacks=[timer], verbose=args.verbose)
    steady = float(np.median(timer.seconds[1:])) if len(timer.seconds) > 1 else timer.seconds[0]
    return {
        "users": data.num_users, "items": data.vocab_size - 2,
        "interactions": data.num_interactions, "sequences": int(len(inputs)),
        "target_positions": int((targets > 0).sum()),
        "max_len": args.max_len, "dim": args.dim, "blocks": args.blocks, "loss": args.loss,
        "batch_size": args.batch_size, "trim_and_bucket": not args.no_trim, "xla": args.xla,
        "first_epoch_seconds": round(timer.seconds[0], 2),
        "epoch_seconds": round(steady, 2),
        "sequences_per_second": round(len(inputs) / steady, 1),
        "total_seconds": round(time.monotonic() - started, 2),
        "threads": tf.config.threading.get_inter_op_parallelism_threads(),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines.benchmark")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("speed", help="epoch time / throughput on synthetic data")
    s.add_argument("--users", type=int, default=31000)
    s.add_argument("--items", type=int, default=24000)
    s.add_argument("--length", type=float, default=9.3, help="mean events per user")
    s.add_argument("--max-len", type=int, default=50)
    s.add_argument("--dim", type=int, default=64)
    s.add_argument("--blocks", type=int, default=2)
    s.add_argument("--batch-size", type=int, default=128)
    s.add_argument("--loss", default="softmax", choices=["softmax", "sampled", "bce"])
    s.add_argument("--epochs", type=int, default=3)
    s.add_argument("--xla", action="store_true", help="compile the train step with XLA")
    s.add_argument("--no-trim", action="store_true", help="pad every batch to max-len")
    s.add_argument("--verbose", type=int, default=2)
    s.add_argument("--output", help="write the JSON record here too")
    args = p.parse_args(argv)
    record = speed(args)
    text = json.dumps(record, indent=2)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
