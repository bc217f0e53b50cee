"""Shared fixtures: one local Spark session, one real Kafka broker and one materialized batch graph per session."""

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster_pyspark.resources import spark_session_from_config

from reco_assets.definitions import defs
from reco_assets.kafka.client import KafkaResource, ensure_topics
from reco_assets.lakehouse import LakehouseResource
from reco_assets.resources import spark_config
from reco_assets.services import ConnectServer, LocalBroker, free_port
from reco_assets.services.s3 import S3Server

ROOT = Path(__file__).resolve().parents[1]
# The suite chooses where each test's lakehouse lives (`lakehouse_on_s3` for S3): a shell's export, as README's
# "On S3" block makes, must not send the local tests to S3.
os.environ.pop("RECO_LAKEHOUSE_URI", None)
# The evaluation's hybrid in runs whose tests do not read it: a small EASE and few trees.
SMALL_EVALUATION_HYBRID = {"ease_items": 500, "trees": 20}


@pytest.fixture(scope="session")
def spark():
    """The same local Spark session the assets use (getOrCreate returns it to them too)."""
    session = spark_session_from_config(spark_config())
    yield session
    session.stop()


def materialize(selection, data_dir: Path, instance: dg.DagsterInstance, run_config=None, raise_on_error=True,
                partition_key: str | None = None, kafka: KafkaResource | None = None):
    """Materialize a selection of the project's real assets (and their checks) into `data_dir`."""
    resources = {**defs.resources, "lakehouse": LakehouseResource(data_dir=str(data_dir))}
    if kafka is not None:
        resources["kafka"] = kafka
    return dg.materialize(
        [*defs.assets, *defs.asset_checks],
        selection=selection,
        resources=resources,
        instance=instance,
        run_config=run_config,
        raise_on_error=raise_on_error,
        partition_key=partition_key,
    )


def running_broker(tmp_path_factory) -> Iterator[LocalBroker]:
    """A real Apache Kafka broker (KRaft, from Maven Central jars) on free loopback ports, with the event topics."""
    broker = LocalBroker(tmp_path_factory.mktemp("kafka"), port=free_port(), controller_port=free_port())
    broker.up()
    ensure_topics(KafkaResource(bootstrap_servers=broker.bootstrap_servers).admin())
    yield broker
    broker.down()


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory):
    yield from running_broker(tmp_path_factory)


@pytest.fixture(scope="session")
def kafka(kafka_broker) -> KafkaResource:
    return KafkaResource(bootstrap_servers=kafka_broker.bootstrap_servers)


@pytest.fixture(scope="session")
def spark_connect(tmp_path_factory) -> Iterator[ConnectServer]:
    """One Spark Connect server for every test that runs Connect clients, started on first use (`.up()` is a no-op
    while it runs, and starts it again after a test stopped it)."""
    server = ConnectServer(tmp_path_factory.mktemp("connect"), port=free_port())
    yield server
    server.down(log=lambda m: None)


@pytest.fixture
def connect_server(spark_connect) -> ConnectServer:
    """The shared Spark Connect server, running."""
    spark_connect.up(log=lambda m: None)
    return spark_connect


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    """A real S3-compatible server (S3Proxy) on a free loopback port, with the bucket `lake`."""
    server = S3Server(tmp_path_factory.mktemp("s3"), port=free_port())
    server.up()
    server.create_bucket("lake")
    yield server
    server.down()


@pytest.fixture
def lakehouse_on_s3(s3_server, monkeypatch, tmp_path) -> LakehouseResource:
    """A lakehouse of this test's own under s3a://lake/<test folder>, with the server's settings in the
    environment (the catalog and the downloads stay in `tmp_path`)."""
    for name, value in s3_server.settings().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RECO_LAKEHOUSE_URI", f"s3a://lake/{tmp_path.name}")
    return LakehouseResource(data_dir=str(tmp_path))


@pytest.fixture(scope="session")
def dagster_instance(tmp_path_factory):
    with dg.instance_for_test(temp_dir=str(tmp_path_factory.mktemp("dagster_home"))) as instance:
        yield instance


def readme_blocks(section: str, language: str = "bash") -> list[str]:
    """The code blocks of a README section (a heading and what follows it up to the next heading), as written."""
    readme = (ROOT / "README.md").read_text()
    body = re.search(rf"^#{{2,4}} {re.escape(section)}\n(.*?)(?=^#{{2,4}} )", readme, re.S | re.M).group(1)
    return re.findall(rf"```{language}\n(.*?)```", body, re.S)


def checkout_like(folder: Path) -> Path:
    """`folder` set up as README's commands expect the project's root: its .venv and dagster.yaml, and `data/`
    of its own."""
    for name in (".venv", "dagster.yaml"):
        (folder / name).symlink_to(ROOT / name)
    return folder


def run_readme(commands: str, cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Run README commands as a user pastes them into bash (any failing command fails the whole)."""
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", commands], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"README commands failed ({done.returncode}):\n{commands}\n{done.stderr[-3000:]}"
    return done


class Api:
    """A `reco-assets serve` process on a free port over `data_dir` (its output in `log`), and requests to it."""

    def __init__(self, data_dir: Path, kafka_servers: str, log: Path, *serve_args: str):
        self.data_dir = data_dir
        self.base = f"http://127.0.0.1:{free_port()}"
        env = os.environ | {"KAFKA_BOOTSTRAP_SERVERS": kafka_servers}
        env.pop("SPARK_REMOTE", None)
        with log.open("w") as out:
            self.process = subprocess.Popen(
                [str(ROOT / ".venv/bin/reco-assets"), "--data-dir", str(data_dir), "serve", "--port",
                 self.base.rsplit(":", 1)[1], *serve_args], env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.get("/openapi.json")
                return
            except OSError:
                assert self.process.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)

    def get(self, path: str) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=30) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            return error.code, json.load(error)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


class HeadlessRun:
    """What the tests read of the run a headless command made, from its Dagster instance."""

    def __init__(self, instance: dg.DagsterInstance):
        self.instance = instance
        (self.run,) = instance.get_runs()
        self.events = [r.dagster_event for r in instance.all_logs(self.run.run_id) if r.dagster_event]

    @property
    def success(self) -> bool:
        return self.run.is_success

    def get_asset_materialization_events(self):
        return [e for e in self.events if e.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION]

    def get_asset_check_evaluations(self):
        return [e.event_specific_data for e in self.events
                if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION]


@pytest.fixture(scope="session")
def batch_graph(tmp_path_factory):
    """The whole batch graph materialized on the bundled sample by README's headless command, as written, in a
    folder set up like a checkout: (the run, read from its instance; data dir)."""
    folder = checkout_like(tmp_path_factory.mktemp("checkout"))
    (command,) = readme_blocks("Headless")[:1]
    run_readme(command, folder, dict(os.environ), timeout=1200)
    data_dir = folder / "data"
    with dg.DagsterInstance.from_config(str(data_dir / "dagster_home")) as instance:
        yield HeadlessRun(instance), data_dir


def copy_tables(source_dir: Path, target_dir: Path, *tables: str) -> None:
    """Copy lakehouse tables (`silver.ratings`, …) from one local data directory to another. A Delta table's paths
    are relative to its folder, so a copy is a table."""
    for name in tables:
        folder = Path("lakehouse", *name.split("."))
        shutil.copytree(source_dir / folder, target_dir / folder)


@pytest.fixture
def http_server(tmp_path):
    """A loopback HTTP server over a temporary folder: (folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


def write_silver_events(lakehouse: LakehouseResource, events) -> list[str]:
    """Accepted events (a Spark DataFrame with some of silver.events' columns, `received_at` among them) committed
    to silver.event_outcomes as silver_events writes them, one hour each; returns the hours written."""
    from pyspark.sql import functions as F

    from reco_assets.lakehouse.hours import HOUR_PATTERN, value_hour
    from reco_assets.lakehouse.tables import OUTCOME_COLUMNS, OUTCOME_TYPES

    derived = {"event_hash": F.xxhash64(F.lower("event_id")), "rejected": F.lit(False),
               "hour": F.date_format("received_at", HOUR_PATTERN)}
    rows = events.select(*[
        (F.col(c) if c in events.columns else derived.get(c, F.lit(None))).cast(OUTCOME_TYPES.get(c, "string"))
        .alias(c) for c in OUTCOME_COLUMNS])
    hours = sorted(value_hour(r["hour"]) for r in rows.select("hour").distinct().collect())
    lakehouse.table("silver.event_outcomes").replace_hours(rows, hours)
    return hours
