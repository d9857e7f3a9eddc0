"""`tf.distribute` strategies for training: one device, local GPUs, or several machines.

`run_training` builds and compiles the model inside `make_strategy(name).scope()`; Keras' `fit`
then splits every global batch of `batch_size` rows into `batch_size / num_replicas` rows per
replica. With several workers every worker reads the whole (deterministic, identically seeded)
dataset and keeps its part (`AutoShardPolicy.DATA`); the chief (worker 0, or the `chief` task)
writes the run's outputs and the other workers write theirs to temporary directories (the Keras
multi-worker rule: every worker saves, so collective ops stay in step, but only one copy is kept).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from tfrec_attn._keras import tf

STRATEGIES = ("default", "mirrored", "multi-worker")
TF_CONFIG = "TF_CONFIG"
_TF_CONFIG_EXAMPLE = ('{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                      '"task": {"type": "worker", "index": 0}}')


class StrategyError(ValueError):
    """`--strategy` cannot run as asked (a missing or malformed `TF_CONFIG`, a global batch
    that does not split over the replicas); the train command reports it as a usage error."""


def _tf_config_error(problem: str) -> StrategyError:
    return StrategyError(f"--strategy multi-worker: the {TF_CONFIG} environment variable "
                         f"{problem}. Expected JSON like {_TF_CONFIG_EXAMPLE} (the same "
                         "cluster on every machine, its own task on each).")


def read_tf_config(environ=None) -> dict:
    """The parsed and checked `TF_CONFIG` (cluster and this machine's task).

    Args:
        environ: mapping to read `TF_CONFIG` from. Defaults to `os.environ`.

    Returns:
        The `TF_CONFIG` dict: `{"cluster": {"worker": [...], ...}, "task": {...}}`.

    Raises:
        ValueError: `TF_CONFIG` is missing, not JSON, or its cluster/task are malformed.

    Example:
    >>> env = {"TF_CONFIG": '{"cluster": {"worker": ["a:1", "b:2"]}, '
    ...                     '"task": {"type": "worker", "index": 1}}'}
    >>> read_tf_config(env)["task"]
    {'type': 'worker', 'index': 1}
    """
    environ = os.environ if environ is None else environ
    raw = environ.get(TF_CONFIG)
    if not raw:
        raise _tf_config_error("is not set")
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as err:
        raise _tf_config_error(f"is not valid JSON ({err}). Received: {raw!r}") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not (cluster.get("worker") or cluster.get("chief")):
        raise _tf_config_error(f"has no 'cluster' with a 'worker' list. Received: {raw!r}")
    for job, addresses in cluster.items():
        if not isinstance(addresses, list) or not all(
                isinstance(a, str) and a.rpartition(":")[2].isdigit() for a in addresses):
            raise _tf_config_error(f"has cluster[{job!r}] that is not a list of 'host:port' "
                                   f"strings. Received: {addresses!r}")
    if not isinstance(task, dict) or task.get("type") not in cluster:
        raise _tf_config_error(f"needs a 'task' whose 'type' is one of {sorted(cluster)}. "
                               f"Received: task={task!r}")
    index = task.get("index")
    if (isinstance(index, bool) or not isinstance(index, int)
            or not 0 <= index < len(cluster[task["type"]])):
        raise _tf_config_error(f"has task index {index!r} outside cluster[{task['type']!r}] "
                               f"(0..{len(cluster[task['type']]) - 1})")
    return config


def make_strategy(name: str = "default") -> tf.distribute.Strategy:
    """The `tf.distribute` strategy called `name` (one of `STRATEGIES`).

    Args:
        name: `"default"` (the current strategy: one device), `"mirrored"` (`MirroredStrategy`
            over all local GPUs, or the CPU when there is none) or `"multi-worker"`
            (`MultiWorkerMirroredStrategy`, configured by `TF_CONFIG`; create it before any
            other TensorFlow work in the process).

    Returns:
        The strategy.

    Raises:
        ValueError: unknown `name`, or a missing/malformed `TF_CONFIG` for `"multi-worker"`.

    Example:
    >>> make_strategy("default").num_replicas_in_sync
    1
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi-worker":
        read_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"strategy must be one of {STRATEGIES}. Received: strategy={name!r}")


def check_cluster_batch(batch_size: int, strategy_name: str, environ=None) -> None:
    """Before a multi-worker strategy is made (its start-up waits for every peer): the global
    `batch_size` must split over the cluster's machines (`TF_CONFIG`'s workers and chief), a
    necessary condition of `replica_batch_size`, which checks the replicas once they exist.

    Example:
    >>> env = {"TF_CONFIG": '{"cluster": {"worker": ["a:1", "b:2"]}, '
    ...                     '"task": {"type": "worker", "index": 0}}'}
    >>> check_cluster_batch(255, "multi-worker", env)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tfrec_attn.training.distribution.StrategyError: batch_size is the global batch and must ...
    """
    if strategy_name != "multi-worker":
        return
    cluster = read_tf_config(environ)["cluster"]
    machines = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    if batch_size % machines:
        raise StrategyError(
            f"batch_size is the global batch and must be divisible by the {machines} machines "
            f"of {TF_CONFIG}'s cluster (checked before waiting for them). "
            f"Received: batch_size={batch_size}")


def num_workers(strategy: tf.distribute.Strategy) -> int:
    """Machines taking part in `strategy` (1 unless it is multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return 1
    spec = resolver.cluster_spec().as_dict()
    return max(1, len(spec.get("worker", [])) + len(spec.get("chief", [])))


def is_chief(strategy: tf.distribute.Strategy | None = None) -> bool:
    """Whether this process writes the run's outputs: the `chief` task, else worker 0.

    Example:
    >>> is_chief(make_strategy("default"))
    True
    """
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return _is_chief_task(resolver.task_type, resolver.task_id,
                          resolver.cluster_spec().as_dict())


def _is_chief_task(task_type: str | None, task_id: int | None, cluster: dict) -> bool:
    """The chief rule: the `chief` task, else worker 0 of a cluster without one."""
    return task_type in (None, "chief") or (
        task_type == "worker" and task_id == 0 and "chief" not in cluster)


def non_chief_task(environ=None) -> str | None:
    """This machine's task (`"worker:1"`) when `TF_CONFIG` makes it another task than the
    chief (`is_chief`'s rule), else `None`; read without making a strategy.

    Example:
    >>> env = {"TF_CONFIG": '{"cluster": {"worker": ["a:1", "b:2"]}, '
    ...                     '"task": {"type": "worker", "index": 1}}'}
    >>> non_chief_task(env)
    'worker:1'
    """
    config = read_tf_config(environ)
    kind, index = config["task"]["type"], config["task"]["index"]
    return None if _is_chief_task(kind, index, config["cluster"]) else f"{kind}:{index}"


def replica_batch_size(batch_size: int, strategy: tf.distribute.Strategy) -> int:
    """Rows each replica trains on per step when the global batch is `batch_size`.

    Raises:
        ValueError: `batch_size` is not a multiple of the number of replicas.

    Example:
    >>> replica_batch_size(128, make_strategy("default"))
    128
    """
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise StrategyError(
            f"batch_size is the global batch and must be divisible by the {replicas} replicas "
            f"in sync. Received: batch_size={batch_size}")
    return batch_size // replicas


def shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """`dataset` set to be sharded by elements across workers (`AutoShardPolicy.DATA`).

    Every worker runs the same seeded pipeline, so each sees the same global batches in the same
    order and keeps its replicas' parts. (`FILE`, the default, fails: the data is in memory.)
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    return dataset.with_options(options)


def any_worker(flag: bool, strategy: tf.distribute.Strategy) -> bool:
    """Whether `flag` is true on any worker (an all-reduce: every worker must call it together).

    Lets wall-clock decisions (a time budget) stop all workers at the same step.
    """
    if num_workers(strategy) == 1:
        return bool(flag)
    votes = strategy.run(lambda: tf.constant(float(flag)))
    return bool(strategy.reduce(tf.distribute.ReduceOp.SUM, votes, axis=None) > 0)


@contextlib.contextmanager
def output_dir(path: str | os.PathLike, strategy: tf.distribute.Strategy):
    """Yields `path` on the chief and a temporary directory (deleted afterwards) elsewhere.

    Example:
    >>> with output_dir("runs/x", make_strategy("default")) as out:
    ...     str(out)
    'runs/x'
    """
    if is_chief(strategy):
        yield Path(path)
        return
    scratch = Path(tempfile.mkdtemp(prefix="tfrec_attn_worker_"))
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
