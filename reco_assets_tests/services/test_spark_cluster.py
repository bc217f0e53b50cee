"""A Spark standalone cluster for real: a master and a worker from the pyspark wheel's spark-class, and a driver
whose numpy tasks run in the worker's executor, in the project's Python."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reco_assets.services import free_port, pid_alive
from reco_assets.services.spark_cluster import SparkClusterError, SparkMaster, cluster

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

DRIVER = """
import json, os, sys
from pyspark.sql import SparkSession
spark = (SparkSession.builder.master(sys.argv[1]).appName("reco-assets-cluster-test")
         .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
         .config("spark.executor.memory", "512m").config("spark.pyspark.python", sys.executable).getOrCreate())

def where(batches):
    import numpy as np
    import pandas as pd
    for batch in batches:
        yield pd.DataFrame({"pid": [os.getpid()], "python": [sys.executable],
                            "total": [int(np.sum(batch["id"].to_numpy()))]})

rows = spark.range(1000, numPartitions=2).mapInPandas(where, "pid long, python string, total long").collect()
print(json.dumps({"driver": os.getpid(), "pids": sorted({r.pid for r in rows}),
                  "pythons": sorted({r.python for r in rows}), "total": sum(r.total for r in rows)}))
spark.stop()
"""


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROOT / ".venv/bin/reco-assets"), "--data-dir", str(data_dir), "cluster", *args],
                          capture_output=True, text=True, timeout=300)


def test_a_master_and_a_worker_run_numpy_tasks_in_the_project_python(tmp_path):
    port = str(free_port(span=4))  # the master, its UI, worker 1, its UI
    up = cli(tmp_path, "up", "--port", port, "--memory", "1g")
    assert up.returncode == 0, up.stderr[-3000:] + up.stdout
    master, (worker,) = cluster(tmp_path, int(port))
    try:
        assert f"export SPARK_MASTER=spark://127.0.0.1:{port}" in up.stdout
        assert [w["state"] for w in master.state()["workers"]] == ["ALIVE"]
        env = {k: v for k, v in os.environ.items() if k != "SPARK_REMOTE"} | {"SPARK_LOCAL_IP": "127.0.0.1"}
        done = subprocess.run([sys.executable, "-c", DRIVER, master.url], capture_output=True, text=True, env=env,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        ran = json.loads(done.stdout.strip().splitlines()[-1])
        assert ran["total"] == sum(range(1000))
        assert ran["pythons"] == [sys.executable] and ran["driver"] not in ran["pids"]  # in the worker's executor
        assert [app["name"] for app in master.state()["completedapps"]] == ["reco-assets-cluster-test"]
        assert "running, ready" in cli(tmp_path, "status", "--port", port).stdout
    finally:
        pids = [master.read_pid(), worker.read_pid()]
        down = cli(tmp_path, "down", "--port", port)
    assert down.stdout.count("stopped") == 2, down.stdout + down.stderr
    assert not any(pid and pid_alive(pid) for pid in pids)


def test_a_worker_without_its_master_is_refused(tmp_path):
    master = SparkMaster(tmp_path, free_port(span=4))
    _, (worker,) = cluster(tmp_path, master.port)
    with pytest.raises(SparkClusterError, match="no Spark master at spark://127.0.0.1"):
        worker.up(log=lambda message: None)
