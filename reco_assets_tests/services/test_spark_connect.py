"""The warm Spark for the live path, for real: a Spark Connect server started like the broker, queried over sc://,
reading Kafka, and materializing one hour of bronze_events + silver_events for a Dagster run that connects to it.

Every Connect client here runs in a child interpreter, as a Dagster run does: a Connect session switches the whole
PySpark of its process into Connect mode, which would break the local session of the other tests.
"""

import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import NewTopic

from reco_assets.bronze.movielens import BUNDLED_SAMPLE
from reco_assets.contracts import check_event
from reco_assets.events.generator import EventGenerator, load_population
from reco_assets.events.producer import EventProducer
from reco_assets.kafka.client import KafkaResource
from reco_assets.lakehouse import LakehouseResource
from reco_assets.lakehouse.hours import hour_key, hour_start, hour_value
from reco_assets.services import ConnectServer, free_port, pid_alive
from reco_assets.services.base import children
from reco_assets_tests.sockets import listening

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
HOUR_ASSETS = ["bronze_events", "silver_events", "silver_events_rejected"]


@pytest.fixture
def server(connect_server):
    """The session's Spark Connect server (this module's last test stops it)."""
    status = connect_server.status()
    assert status.running and status.pid == connect_server.read_pid()
    return connect_server


def over_connect(server: ConnectServer, function: str, *args: str, timeout: float = 180) -> dict:
    """Call one of the client functions below in a fresh interpreter with SPARK_REMOTE set, as a Dagster run would.

    SPARK_MASTER names no master: a local Spark session started by mistake would fail instead of passing quietly.
    """
    env = os.environ | {"SPARK_REMOTE": server.url, "SPARK_MASTER": "not-a-master-connect-must-be-used",
                        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    code = (f"import json, sys; from reco_assets_tests.services.test_spark_connect import {function}; "
            f"print('result:', json.dumps({function}(*sys.argv[1:])))")
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
    results = [line for line in done.stdout.splitlines() if line.startswith("result: ")]
    assert done.returncode == 0 and results, f"client failed ({done.returncode}):\n{done.stdout[-3000:]}" \
                                             f"\n{done.stderr[-5000:]}"
    return json.loads(results[-1].removeprefix("result: "))


# --- client side (runs in the child interpreter) -----------------------------------------------------------------

def _session():
    """The session the project's resource would hand to an asset (dagster-pyspark's builder with spark_config())."""
    from dagster_pyspark.resources import spark_session_from_config

    from reco_assets.resources import spark_config

    started = time.monotonic()
    spark = spark_session_from_config(spark_config())
    return spark, time.monotonic() - started


def client_query() -> dict:
    from pyspark.core.context import SparkContext
    from pyspark.sql import functions as F

    spark, connect_s = _session()
    started = time.monotonic()
    total = spark.range(100_000).selectExpr("sum(id) AS total").first()["total"]
    query_s = time.monotonic() - started
    # A Python UDF runs in the server's Python workers: they must be this venv's interpreter.
    worker_python = spark.range(1).select(F.udf(lambda _: sys.executable, "string")("id")).first()[0]
    return {
        "session": type(spark).__module__,
        "local_context": SparkContext._active_spark_context is not None,
        "total": total,
        "connect_s": connect_s,
        "query_s": query_s,
        "worker_python": worker_python,
        "conf": {key: spark.conf.get(key) for key in ("spark.sql.session.timeZone", "spark.sql.shuffle.partitions",
                                                      "spark.sql.codegen.hugeMethodLimit")},
    }


def client_read_kafka(bootstrap_servers: str, topic: str) -> dict:
    spark, _ = _session()
    rows = (spark.read.format("kafka").option("kafka.bootstrap.servers", bootstrap_servers)
            .option("subscribe", topic).option("startingOffsets", "earliest").option("endingOffsets", "latest")
            .load().selectExpr("CAST(key AS STRING) AS key", "CAST(value AS STRING) AS value").collect())
    return {"records": sorted([row["key"], row["value"]] for row in rows)}


def client_materialize_hour(data_dir: str, hour: str, bootstrap_servers: str) -> dict:
    from pyspark.core.context import SparkContext

    from reco_assets_tests.conftest import materialize

    with dg.instance_for_test() as instance:
        result = materialize(HOUR_ASSETS, Path(data_dir), instance, partition_key=hour,
                             kafka=KafkaResource(bootstrap_servers=bootstrap_servers))
        steps = {e.step_key: e.event_specific_data.duration_ms / 1000 for e in result.all_events
                 if e.is_step_success}
        return {
            "success": result.success,
            "checks": {e.check_name: e.passed for e in result.get_asset_check_evaluations()},
            "step_seconds": steps,
            "local_context": SparkContext._active_spark_context is not None,
        }


def client_materialize_hybrid(data_dir: str) -> dict:
    from pyspark.core.context import SparkContext

    from reco_assets_tests.conftest import materialize

    with dg.instance_for_test() as instance:
        result = materialize(["gold_hybrid_recommendations"], Path(data_dir), instance)
        (materialized,) = result.get_asset_materialization_events()
        metadata = materialized.materialization.metadata
        return {
            "success": result.success,
            "checks": {e.check_name: e.passed for e in result.get_asset_check_evaluations()},
            "stage_seconds": metadata["stage_seconds"].value,
            "importances": metadata["feature_importances"].value,
            "local_context": SparkContext._active_spark_context is not None,
        }


# --- tests ----------------------------------------------------------------------------------------------------------

def test_status_reports_the_running_server(server):
    status = server.status()
    assert status.running and status.pid == server.read_pid() and status.address == server.url
    assert (server.home / "logs" / "server.log").exists()
    assert "Spark Connect server started" in server.log_file.read_text()


def test_the_server_and_the_broker_listen_on_the_loopback_only(server, kafka_broker):
    for pid in (server.read_pid(), kafka_broker.read_pid()):
        sockets = listening(pid)
        assert sockets and all(ipaddress.ip_address(host).is_loopback for host, _ in sockets), (pid, sockets)


def test_a_query_runs_over_connect_with_the_project_settings(server):
    answer = over_connect(server, "client_query")
    print(f"connect {answer['connect_s']:.2f} s, query {answer['query_s']:.2f} s")
    assert answer["session"].startswith("pyspark.sql.connect") and not answer["local_context"]
    assert answer["total"] == sum(range(100_000))
    assert Path(answer["worker_python"]).resolve() == Path(sys.executable).resolve()
    assert answer["conf"] == {"spark.sql.session.timeZone": "UTC", "spark.sql.shuffle.partitions": "8",
                              "spark.sql.codegen.hugeMethodLimit": "8000"}


def test_spark_reads_kafka_over_connect(server, kafka):
    topic = f"connect_probe_{free_port()}"
    admin = kafka.admin()
    for future in admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)]).values():
        future.result(timeout=30)
    sent = [[f"k{i}", json.dumps({"n": i})] for i in range(25)]
    producer = Producer(kafka.client_config())
    for key, value in sent:
        producer.produce(topic, key=key.encode(), value=value.encode())
    assert producer.flush(30) == 0
    try:
        assert over_connect(server, "client_read_kafka", kafka.bootstrap_servers, topic)["records"] == sorted(sent)
    finally:
        for future in admin.delete_topics([topic]).values():
            future.result(timeout=30)


def test_one_hour_of_bronze_and_silver_events_materializes_over_connect(server, kafka, tmp_path):
    now = datetime.now(UTC)
    to_next_hour = hour_start(hour_key(now)) + timedelta(hours=1) - now
    if to_next_hour < timedelta(seconds=20):  # keep the batch inside one broker hour
        time.sleep(to_next_hour.total_seconds() + 1)
    batch = EventGenerator(load_population("/nonexistent", BUNDLED_SAMPLE), invalid_rate=0.1, seed=11).batch(400)
    producer = EventProducer(kafka.client_config())
    producer.send(batch)
    producer.flush()
    assert sum(producer.acked.values()) == len(batch)
    hour = hour_key(datetime.now(UTC))
    window = hour_start(hour)
    in_hour = sum(r.count for r in kafka.offsets().ranges(int(window.timestamp() * 1000),
                                                          int((window + timedelta(hours=1)).timestamp() * 1000)))

    started = time.monotonic()
    run = over_connect(server, "client_materialize_hour", str(tmp_path), hour, kafka.bootstrap_servers)
    print(f"run process {time.monotonic() - started:.1f} s, steps {run['step_seconds']}")
    assert run["success"] and not run["local_context"]
    assert run["checks"] == {"offset_ranges_meet_neighbours": True, "event_id_unique": True,
                             "reconciles_with_bronze": True}

    lakehouse = LakehouseResource(data_dir=str(tmp_path))

    def read(table: str, view: str, columns: str) -> list[tuple]:
        with duckdb.connect() as con:
            return con.execute(f"SELECT {columns} FROM {lakehouse.table(table).duckdb(view)} WHERE hour = ?",
                               [hour_value(hour)]).fetchall()

    bronze = read("bronze.events", None, "topic, value")
    silver_ids = Counter(r[0] for r in read("silver.event_outcomes", "silver.events", "event_id"))
    rejected = read("silver.event_outcomes", "silver.events_rejected", "topic, value, reason")
    # The session broker may hold other tests' events in this hour: bronze is all of the hour, and ours is in it.
    assert len(bronze) == in_hour and len(silver_ids) + len(rejected) == len(bronze)
    assert max(silver_ids.values()) == 1
    now = datetime.now(UTC)
    ours = [(topic, value, check_event(topic, value, now)) for topic, value in zip(batch.topics, batch.values,
                                                                                      strict=True)]
    assert {json.loads(value)["event_id"] for _, value, problem in ours if problem is None} <= set(silver_ids)
    rejected_reasons = Counter((topic, bytes(value), reason) for topic, value, reason in rejected)
    for topic, value, problem in ours:
        if problem is not None:
            assert rejected_reasons[(topic, value, problem.reason)] > 0


def test_the_ranker_learns_and_serves_over_connect_as_in_local_spark(server, batch_graph, tmp_path):
    """gold_hybrid_recommendations (EASE, the candidates, the learned ranker) as a client of the Connect server, on
    the batch graph's silver tables: its lists are the ones the batch graph served in local Spark."""
    from reco_assets_tests.conftest import copy_tables

    _, batch_dir = batch_graph
    copy_tables(batch_dir, tmp_path, "silver.movies", "silver.ratings", "silver.tags")
    run = over_connect(server, "client_materialize_hybrid", str(tmp_path), timeout=600)
    print(f"over Connect: stages {run['stage_seconds']}")
    assert run["success"] and not run["local_context"]
    assert run["checks"] == {"hybrid_excludes_seen": True}
    assert set(run["importances"]) >= {"ease", "popularity"}, run["importances"]

    def served(data_dir: Path) -> list[tuple]:
        table = LakehouseResource(data_dir=str(data_dir)).table("gold.hybrid_recommendations")
        with duckdb.connect() as con:
            return con.execute(f"SELECT user_id, rank, movie_id FROM {table.duckdb()} ORDER BY ALL").fetchall()

    local, remote = served(batch_dir), served(tmp_path)
    assert len(remote) == len(local) > 0
    assert remote == local


def test_down_stops_the_server_and_its_workers(server):
    pid = server.read_pid()
    assert pid is not None
    workers = children(pid)  # the Python worker daemon, after the query test's UDF
    started = time.monotonic()
    assert server.down()
    print(f"stopped in {time.monotonic() - started:.1f} s (workers {workers})")
    assert not pid_alive(pid) and server.read_pid() is None and not server.pid_file.exists()
    assert not [w for w in workers if pid_alive(w)]
    assert not server.status().running and server.status().detail == "not running"
    assert not server.down()


def test_spark_config_sends_only_runtime_sql_settings_over_connect(monkeypatch):
    from reco_assets.resources import spark_config

    monkeypatch.delenv("SPARK_REMOTE", raising=False)
    local = spark_config()
    assert local["spark.master"] == "local[*]" and "spark-sql-kafka" in local["spark.jars"]
    assert "delta-spark" in local["spark.jars"] and local["spark.sql.extensions"].startswith("io.delta")
    monkeypatch.setenv("SPARK_REMOTE", "sc://127.0.0.1:1")
    remote = spark_config()
    static = {"spark.sql.extensions", "spark.sql.catalog.spark_catalog"}  # the server's: fixed at its start
    assert remote == {key: value for key, value in local.items()
                      if key.startswith(("spark.sql.", "spark.databricks.delta.")) and key not in static}
    assert remote["spark.sql.session.timeZone"] == "UTC" and spark_config(remote=False) == local


def test_the_server_gets_the_local_settings_and_the_kafka_jars(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARK_REMOTE", "sc://127.0.0.1:1")  # a client setting: the server's are the local ones
    command = ConnectServer(tmp_path, port=12345).command()
    assert command[command.index("--master") + 1] == "local[*]" and "--driver-memory" in command
    assert "spark-sql-kafka" in command[command.index("--jars") + 1]
    assert "delta-spark" in command[command.index("--jars") + 1]
    for setting in ("spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension",
                    "spark.connect.grpc.binding.port=12345", "spark.connect.grpc.binding.address=127.0.0.1",
                    "spark.sql.session.timeZone=UTC", "spark.sql.codegen.hugeMethodLimit=8000",
                    f"spark.pyspark.python={os.environ.get('PYSPARK_PYTHON', sys.executable)}"):
        assert setting in command


def test_a_server_that_cannot_start_fails_with_its_log(tmp_path, monkeypatch):
    from reco_assets.services import ConnectServerError

    monkeypatch.setenv("SPARK_DRIVER_MEMORY", "lots")
    server = ConnectServer(tmp_path, port=free_port())
    with pytest.raises(ConnectServerError, match="exited during start-up") as failure:
        server.up(timeout=60)
    assert "Invalid maximum heap size" in str(failure.value) and server.read_pid() is None
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(ConnectServerError, match="is taken by another process"):
            ConnectServer(tmp_path, port=taken.getsockname()[1]).up()
