"""Wall-clock timing shared by the benchmarks."""

import time

import numpy as np


def median_ms(fn, args, repeats: int, warmup: int) -> float:
    """Median wall time in ms of `repeats` calls of `fn(*args)` after `warmup` calls.

    >>> median_ms(lambda x: x + 1, (1,), repeats=3, warmup=1) >= 0.0
    True
    """
    for _ in range(warmup):
        fn(*args)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))
