"""Test processes as a `MultiWorkerMirroredStrategy` cluster on this machine's loopback.

The distribution tests start real TensorFlow processes (a cluster cannot live in one process):
`loopback_cluster` gives each worker its `TF_CONFIG`, `start_process` starts a command without
GPUs and with only that `TF_CONFIG`, and `finish` waits for all of them, killing every process
when one hangs. The tests check the return codes and read stderr on failure.

Example:
>>> configs = loopback_cluster(2)
>>> [config["task"] for config in configs]
[{'type': 'worker', 'index': 0}, {'type': 'worker', 'index': 1}]
>>> configs[0]["cluster"] == configs[1]["cluster"]
True
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Sequence


def loopback_cluster(num_workers: int) -> list[dict]:
    """`TF_CONFIG` dicts of a `num_workers` cluster on free 127.0.0.1 ports (worker i's i-th)."""
    sockets = [socket.create_server(("127.0.0.1", 0)) for _ in range(num_workers)]
    workers = [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]
    for s in sockets:
        s.close()
    return [{"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}
            for i in range(num_workers)]


def start_process(command: Sequence[str], cwd: str | os.PathLike,
                  tf_config: dict | None = None) -> subprocess.Popen:
    """Starts `command` in `cwd` with no GPU, TensorFlow's warnings off and `tf_config` as its
    `TF_CONFIG` (none inherited); stdout and stderr are piped as text."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return subprocess.Popen(list(command), cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(processes: dict[str, subprocess.Popen],
           timeout: float) -> dict[str, subprocess.CompletedProcess]:
    """Waits for every process (name -> Popen) within `timeout` seconds in all; when that runs
    out every process is killed (a worker whose peer died waits forever). Returns each one's
    `CompletedProcess` (a killed process has a negative `returncode`)."""
    outputs, deadline = {}, time.monotonic() + timeout
    try:
        for name, process in processes.items():
            outputs[name] = process.communicate(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        for process in processes.values():
            process.kill()
        for name, process in processes.items():
            if name not in outputs:
                outputs[name] = process.communicate()
    return {name: subprocess.CompletedProcess(process.args, process.returncode, *outputs[name])
            for name, process in processes.items()}


def failures(results: dict[str, subprocess.CompletedProcess]) -> str:
    """The exit codes and stderr tails of the processes that failed (`""` when none did)."""
    return "\n".join(f"--- {name} exited {r.returncode}:\n{r.stderr[-3000:]}"
                     for name, r in results.items() if r.returncode)
