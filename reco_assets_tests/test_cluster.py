"""Beyond one machine, for real: README's commands for S3 and a Spark cluster (a real S3 server, a standalone master
and worker, the project's broker standing in for a Kafka cluster), checked against a local-mode run of the same
graph and hour. Minutes: `make test-cluster` runs it, `make test` does not."""

import json
import os
import shutil
import subprocess
import sys
import time

import dagster as dg
import pytest

from reco_assets.kafka.client import KafkaResource
from reco_assets.lakehouse import LakehouseResource, delta
from reco_assets.lakehouse.hours import value_hour
from reco_assets.lakehouse.tables import TABLES
from reco_assets.services import ConnectServer, free_port
from reco_assets.services.spark_cluster import cluster
from reco_assets_tests.conftest import ROOT, checkout_like, materialize, readme_blocks, run_readme

pytestmark = pytest.mark.cluster
METRICS = ("precision", "recall", "ndcg", "map", "coverage")
# ALS's seed fixes its initial factors, not the order in which partitions meet: a run on other partitioning may
# differ in the third decimal (on the bundled sample, measured: identical to the last digit).
ALS_TOLERANCE = 0.01
# The global temporal split tests 28 users of the sample: one hit more or less for one of them moves a mean metric
# by up to 1/28.
GLOBAL_ALS_TOLERANCE = 0.04


def row_counts(lakehouse: LakehouseResource) -> dict[str, int]:
    return {name: delta.table(table.uri).to_pyarrow_dataset().count_rows()
            for name in TABLES if (table := lakehouse.table(name)).exists()}


def evaluation(lakehouse: LakehouseResource) -> dict[tuple[str, str], dict]:
    rows = delta.rows(lakehouse.table("gold.reco_evaluation").uri)
    return {(row["protocol"], row["model"]): {metric: row[metric] for metric in METRICS} for row in rows}


@pytest.fixture(scope="module")
def on_cluster(tmp_path_factory):
    """README's two blocks, as written, in a checkout-like folder; the ports are free ones. Returns the folder, the
    environment the blocks ended with (S3 settings, SPARK_MASTER, the broker) and the hour they ran."""
    folder = checkout_like(tmp_path_factory.mktemp("cluster_checkout"))
    ports = {"RECO_S3_PORT": free_port(), "RECO_SPARK_MASTER_PORT": free_port(span=4), "KAFKA_PORT": free_port(span=2)}
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SPARK_", "RECO_", "AWS_", "KAFKA_", "DAGSTER_")) or k == "RECO_CACHE_DIR"}
    env |= {name: str(port) for name, port in ports.items()}
    blocks = readme_blocks("On S3 and a Spark cluster") + readme_blocks("On a Kafka cluster")
    dump = 'python3 -c "import json, os; print(json.dumps(dict(os.environ)))"'
    started = time.monotonic()
    try:
        done = run_readme("\n".join([*blocks, dump]), folder, env, timeout=1800)
        yield folder, json.loads(done.stdout.strip().splitlines()[-1]), time.monotonic() - started
    finally:
        subprocess.run(["make", "-s", "stop"], cwd=ROOT, env={**env, "RECO_DATA_DIR": str(folder / "data")},
                       capture_output=True, timeout=300)


def test_the_graph_on_s3_and_a_cluster_matches_a_local_run(on_cluster, batch_graph, monkeypatch, tmp_path):
    folder, env, seconds = on_cluster
    print(f"README blocks on S3 and the cluster: {seconds:.0f} s")
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION",
                 "AWS_REQUEST_CHECKSUM_CALCULATION", "AWS_RESPONSE_CHECKSUM_VALIDATION", "RECO_LAKEHOUSE_URI"):
        monkeypatch.setenv(name, env[name])
    remote = LakehouseResource(data_dir=str(folder / "data"))
    assert remote.location == "s3a://lake/reco"
    on_s3 = row_counts(remote)
    ran_on_s3 = evaluation(remote)
    (hour,) = {value_hour(row["hour"]) for row in delta.rows(remote.table("bronze.event_ranges").uri)}
    assert not (folder / "data" / "lakehouse").exists()

    # The same hour of the same broker in local mode, beside (a copy of) the batch graph that README's headless
    # command ran in local mode.
    monkeypatch.delenv("RECO_LAKEHOUSE_URI")
    shutil.copytree(batch_graph[1] / "lakehouse", tmp_path / "lakehouse")
    local = LakehouseResource(data_dir=str(tmp_path))
    kafka = KafkaResource(bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"])
    with dg.instance_for_test() as instance:
        materialize(["bronze_events", "silver_events", "silver_events_rejected", "gold_trending"], tmp_path,
                    instance, partition_key=hour, kafka=kafka)
    in_local_mode = row_counts(local)
    assert on_s3 == in_local_mode
    assert on_s3["bronze.events"] == 3000
    assert on_s3["silver.event_outcomes"] == 3000  # accepted and dead-lettered, every record once

    local_metrics = evaluation(local)
    print(f"rows per table (both runs): {on_s3}\nmetrics on the cluster: {ran_on_s3}\nin local mode: {local_metrics}")
    assert set(ran_on_s3) == set(local_metrics)
    for (protocol, model), metrics in local_metrics.items():
        tolerance = (1e-9 if model in ("popularity", "recent_popularity")
                     else GLOBAL_ALS_TOLERANCE if protocol == "global_temporal" else ALS_TOLERANCE)
        assert ran_on_s3[protocol, model] == pytest.approx(metrics, abs=tolerance), (protocol, model)


def test_the_master_ran_the_runs_and_the_catalog_answers_over_s3(on_cluster):
    folder, env, _ = on_cluster
    master, _ = cluster(folder / "data", int(env["RECO_SPARK_MASTER_PORT"]))
    assert env["SPARK_MASTER"] == master.url
    apps = master.state()["completedapps"] + master.state()["activeapps"]
    assert len(apps) >= 2  # the batch graph's run and the hour's run, each a driver of the cluster
    done = subprocess.run([str(ROOT / ".venv/bin/reco-assets"), "--data-dir", str(folder / "data"), "sql", "--format",
                           "json", "SELECT count(*) AS n FROM gold.recommendations"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [{"n": 610 * 20}]


CONNECT_CLIENT = """
import os, sys
from pyspark.sql import SparkSession
spark = SparkSession.builder.remote(sys.argv[1]).getOrCreate()
def pids(batches):
    import pandas as pd
    for _ in batches:
        yield pd.DataFrame({"pid": [os.getpid()]})
print(sorted({r.pid for r in spark.range(100, numPartitions=2).mapInPandas(pids, "pid long").collect()}))
"""


def test_the_connect_server_drives_the_cluster(on_cluster, monkeypatch, tmp_path):
    folder, env, _ = on_cluster
    master, _ = cluster(folder / "data", int(env["RECO_SPARK_MASTER_PORT"]))
    before = len(master.state()["completedapps"]) + len(master.state()["activeapps"])
    monkeypatch.delenv("SPARK_REMOTE", raising=False)
    monkeypatch.setenv("SPARK_MASTER", env["SPARK_MASTER"])
    server = ConnectServer(tmp_path, port=free_port())
    server.up()
    try:
        done = subprocess.run([sys.executable, "-c", CONNECT_CLIENT, server.url], capture_output=True, text=True,
                              timeout=300, env={k: v for k, v in env.items() if not k.startswith("SPARK_")})
        assert done.returncode == 0, done.stderr[-3000:]
        assert server.read_pid() not in json.loads(done.stdout.strip().splitlines()[-1])
        apps = master.state()["activeapps"]
        assert len(apps) + len(master.state()["completedapps"]) == before + 1
        assert any(app["name"] == "reco_assets-connect" for app in apps)  # the server is an application of the master
    finally:
        server.down()


# A run's Spark resource set up as a run sets it up, in a process of its own (this one has a local session).
SETUP = """
import sys
import dagster as dg
from reco_assets.resources import spark_resource
try:
    spark_resource().setup_for_execution(dg.build_init_resource_context())
except dg.Failure as failure:
    print(failure.description)
    sys.exit(3)
print("ready")
"""


@pytest.mark.parametrize("python, refused", [(sys.executable, False), ("/usr/bin/python3", True)])
def test_executors_without_the_project_python_are_refused_before_the_first_step(on_cluster, python, refused):
    _, env, _ = on_cluster
    if refused and (not os.path.exists(python) or
                    subprocess.run([python, "-c", "import numpy"], capture_output=True).returncode == 0):
        pytest.skip(f"{python} is missing or has numpy: no Python without the project to try")
    done = subprocess.run([sys.executable, "-c", SETUP], capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in env.items() if k != "SPARK_REMOTE"} | {"PYSPARK_PYTHON": python})
    if refused:
        assert done.returncode == 3, done.stderr[-3000:]
        assert f"the executors of {env['SPARK_MASTER']} cannot run the project's Python" in done.stdout
    else:
        assert done.returncode == 0 and "ready" in done.stdout, done.stderr[-3000:]
