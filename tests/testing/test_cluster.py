"""The loopback-cluster process helpers the distribution tests start workers with."""

import json
import sys

from tfrec_attn.testing import cluster

PRINT_ENV = ("import json, os; print(json.dumps([os.environ.get('TF_CONFIG'), "
             "os.environ.get('CUDA_VISIBLE_DEVICES')]))")


def test_each_worker_gets_its_own_tf_config_and_no_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "inherited")
    configs = cluster.loopback_cluster(2)
    ports = {address.rsplit(":", 1)[1] for address in configs[0]["cluster"]["worker"]}
    assert len(ports) == 2  # two distinct free ports
    processes = {i: cluster.start_process([sys.executable, "-c", PRINT_ENV], tmp_path, c)
                 for i, c in enumerate(configs)}
    processes["none"] = cluster.start_process([sys.executable, "-c", PRINT_ENV], tmp_path)
    results = cluster.finish(processes, timeout=60)
    seen = {name: json.loads(r.stdout) for name, r in results.items()}
    assert [json.loads(seen[i][0]) for i in range(2)] == configs
    assert seen["none"][0] is None  # the parent's TF_CONFIG is not inherited
    assert {cuda for _, cuda in seen.values()} == {""}  # no GPU in any process
    assert cluster.failures(results) == ""


def test_a_hung_process_is_killed_and_reported(tmp_path):
    results = cluster.finish({
        "ok": cluster.start_process([sys.executable, "-c", "pass"], tmp_path),
        "hung": cluster.start_process([sys.executable, "-c", "import time; time.sleep(60)"],
                                      tmp_path),
        "failed": cluster.start_process([sys.executable, "-c", "raise SystemExit('bad')"],
                                        tmp_path),
    }, timeout=3)
    assert results["ok"].returncode == 0 and results["hung"].returncode < 0
    report = cluster.failures(results)
    assert "--- hung exited -9" in report and "--- failed exited 1:\nbad" in report
    assert "--- ok" not in report
