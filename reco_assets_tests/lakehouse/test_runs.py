"""Real runs against the Delta lakehouse: killed at several points (in local Spark and over Spark Connect), or two at
once on the same hour, they lose nothing, every table stays readable, and a rerun lands exactly the rows of an
unkilled run."""

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from reco_assets.bronze.movielens import BUNDLED_SAMPLE
from reco_assets.events.generator import EventGenerator, load_population
from reco_assets.events.producer import EventProducer
from reco_assets.kafka.client import KafkaResource
from reco_assets.lakehouse import LakehouseResource
from reco_assets.lakehouse.hours import hour_key, hour_value
from reco_assets_tests.conftest import materialize, running_broker

pytestmark = pytest.mark.integration
HOURLY = ["bronze_events", "silver_events", "silver_events_rejected", "gold_trending", "gold_genre_minute_stats"]
TABLES = {"bronze.events": None, "silver.event_outcomes": None, "gold.trending": None,
          "gold.genre_minute_stats": None}
# What each table holds of the hour, in an order that makes equal content compare equal.
CONTENT = {"bronze.events": "topic, partition, \"offset\", timestamp, key, value",
           "silver.event_outcomes": "* EXCLUDE (hour)",
           "gold.trending": "* EXCLUDE (hour)",
           "gold.genre_minute_stats": "* EXCLUDE (hour)"}


@pytest.fixture(scope="module")
def hour_of_events(tmp_path_factory, dagster_instance):
    """10,000 events (5 % malformed) in one broker hour of a broker of this module's own, and the hour materialized
    once without interruption: (kafka, hour, data dir of that run)."""
    brokers = running_broker(tmp_path_factory)
    broker = next(brokers)
    kafka = KafkaResource(bootstrap_servers=broker.bootstrap_servers, request_timeout_s=3.0)
    if datetime.now(UTC).minute == 59:  # keep every record in one hour
        time.sleep(61 - datetime.now(UTC).second)
    producer = EventProducer(kafka.client_config())
    producer.send(EventGenerator(load_population("/nonexistent", BUNDLED_SAMPLE), invalid_rate=0.05,
                                 seed=21).batch(10_000))
    producer.flush()
    hour = hour_key(datetime.now(UTC))
    baseline = tmp_path_factory.mktemp("unkilled")
    assert materialize(HOURLY, baseline, dagster_instance, partition_key=hour, kafka=kafka).success
    yield kafka, hour, baseline
    next(brokers, None)


def content(data_dir: Path, hour: str) -> dict[str, list]:
    lakehouse = LakehouseResource(data_dir=str(data_dir))
    with duckdb.connect() as con:
        return {name: con.execute(f"SELECT {CONTENT[name]} FROM {lakehouse.table(name).duckdb()} WHERE hour = ? "
                                  "ORDER BY ALL", [hour_value(hour)]).fetchall()
                for name in TABLES if lakehouse.table(name).exists()}


def table_state(data_dir: Path, name: str) -> tuple[int, int]:
    """(commits in the table's Delta log, data files in its folder)."""
    folder = Path(LakehouseResource(data_dir=str(data_dir)).table(name).uri)
    return (len(list(folder.glob("_delta_log/*.json"))), len(list(folder.rglob("*.parquet"))) -
            len(list(folder.glob("_delta_log/*.parquet"))))


def state(data_dir: Path) -> dict[str, tuple[int, int]]:
    """Per table: (commits in its Delta log, data files in its folder)."""
    return {name: table_state(data_dir, name) for name in TABLES}


def run(data_dir: Path, kafka: KafkaResource, hour: str, assets: list[str] = HOURLY,
        remote: str | None = None) -> subprocess.Popen:
    """`dagster asset materialize` of the hour's event assets: a run process of its own, as the UI launches, in
    local Spark or as a client of the Spark Connect server at `remote`. Its output goes to `output.log` in its
    Dagster home (a pipe nobody reads would block it)."""
    home = data_dir / f"home-{time.monotonic_ns()}"
    home.mkdir()
    output = (home / "output.log").open("w")
    env = os.environ | {"DAGSTER_HOME": str(home), "RECO_DATA_DIR": str(data_dir),
                        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers}
    env.pop("SPARK_REMOTE", None)
    if remote:
        env["SPARK_REMOTE"] = remote
    process = subprocess.Popen([sys.executable, "-m", "dagster", "asset", "materialize", "-m",
                                "reco_assets.definitions", "--select", ",".join(assets), "--partition", hour], env=env,
                               start_new_session=True, stdout=output, stderr=subprocess.STDOUT)
    process.log_path = home / "output.log"
    return process


def kill_before_commit(process: subprocess.Popen, data_dir: Path, table: str) -> dict:
    """SIGKILL the run once `table` has new data files and no new commit yet."""
    before = table_state(data_dir, table)
    deadline = time.monotonic() + 180
    reached = False
    while not reached and time.monotonic() < deadline and process.poll() is None:
        commits, files = table_state(data_dir, table)  # only this table: the poll shares 2 cores with the run
        reached = files > before[1] and commits == before[0]
        if not reached:
            time.sleep(0.005)
    running = process.poll() is None
    if running:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert running and reached, f"the run ended or timed out before the kill point in {table}:\n" \
                                f"{process.log_path.read_text()[-3000:]}"
    return {"table": table, "before": before, "after": table_state(data_dir, table)}


CANCELLER = """
import sys, time
from pyspark.sql import SparkSession
session = SparkSession.builder.remote(sys.argv[1]).getOrCreate()
print("ready", flush=True)
sys.stdin.readline()
interrupted = []
for _ in range(40):  # until the server runs nothing more of the session
    ops = session.interruptAll()
    if not ops:
        break
    interrupted += [op for op in ops if op not in interrupted]
    time.sleep(0.25)
else:
    sys.exit("operations still running after 10 s of interrupts")
print("interrupted:", ",".join(interrupted), flush=True)
"""


class Canceller:
    """What an operator does when a client died under Spark Connect: attach to its session and interrupt what it left
    running on the server (its write would otherwise go on without it). Attached before the run starts, so that the
    interrupt follows the kill at once."""

    def __init__(self, remote: str):
        env = {k: v for k, v in os.environ.items() if k != "SPARK_REMOTE"}
        self.process = subprocess.Popen([sys.executable, "-c", CANCELLER, remote], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, env=env)
        assert self.process.stdout.readline().strip() == "ready"

    def cancel(self) -> list[str]:
        """Interrupt the session's operations until none runs; return the interrupted ones."""
        output, _ = self.process.communicate("go\n", timeout=120)
        assert self.process.returncode == 0, output
        line = next(line for line in output.splitlines() if line.startswith("interrupted:"))
        return [op for op in line.removeprefix("interrupted:").strip().split(",") if op]


def assert_consistent(data_dir: Path, hour: str, spark) -> None:
    """Every table reads (Spark and DuckDB), and silver accounts for every bronze record of the hour."""
    lakehouse = LakehouseResource(data_dir=str(data_dir))
    for name in TABLES:
        table = lakehouse.table(name)
        if table.exists():
            table.read(spark).count()
    found = content(data_dir, hour)
    if "silver.event_outcomes" in found:
        assert len(found["silver.event_outcomes"]) == len(found["bronze.events"])


def test_killed_runs_leave_every_table_readable_and_a_rerun_converges(hour_of_events, connect_server, tmp_path,
                                                                    spark):
    kafka, hour, baseline = hour_of_events
    kills = []
    # In local Spark (bronze) the JVM dies with the run. Over Spark Connect (silver, gold) the server's query
    # outlives its client, so the kill is followed by cancelling what the dead run's session left running. The kill
    # in gold comes after silver's commit, so it also leaves a committed silver behind an unwritten gold.
    for table, over_connect in (("bronze.events", False), ("silver.event_outcomes", True), ("gold.trending", True)):
        remote = f"{connect_server.url}/;session_id={uuid.uuid4()}" if over_connect else None
        canceller = Canceller(remote) if remote else None
        silver_commits = table_state(tmp_path, "silver.event_outcomes")[0]
        kills.append(kill_before_commit(run(tmp_path, kafka, hour, remote=remote), tmp_path, table))
        if table == "gold.trending":
            assert table_state(tmp_path, "silver.event_outcomes")[0] == silver_commits + 1, "silver committed first"
        if canceller:
            kills[-1]["interrupted"] = canceller.cancel()
            cancelled = state(tmp_path)
            kills[-1]["after"] = cancelled[table]
            time.sleep(3)  # the session runs nothing now: nothing of the dead run commits later
            assert {name: commits for name, (commits, _) in state(tmp_path).items()} == \
                {name: commits for name, (commits, _) in cancelled.items()}, kills[-1]
        assert_consistent(tmp_path, hour, spark)
    # The interrupts reached the dead runs' sessions: the kill while silver wrote left its write running there.
    assert any(k.get("interrupted") for k in kills), kills
    # At least one kill hit a table between writing its files and committing them: those files are not read.
    assert any(k["after"][1] > k["before"][1] and k["after"][0] == k["before"][0] for k in kills), kills
    with dg.instance_for_test() as instance:
        assert materialize(HOURLY, tmp_path, instance, partition_key=hour, kafka=kafka).success
    assert content(tmp_path, hour) == content(baseline, hour)


def test_two_runs_of_one_hour_at_once_lose_nothing(hour_of_events, connect_server, tmp_path):
    """Two run processes of one hour, each a client of the warm Spark Connect server with a session of its own, as
    `make run` launches them."""
    kafka, hour, baseline = hour_of_events
    runs = [run(tmp_path, kafka, hour, HOURLY[:3], remote=f"{connect_server.url}/;session_id={uuid.uuid4()}")
            for _ in range(2)]
    codes = [r.wait(timeout=600) for r in runs]
    outputs = [r.log_path.read_text() for r in runs]
    # Each run either commits (retrying on top of the other's version after a conflict) or fails naming the hour.
    for code, output in zip(codes, outputs, strict=True):
        assert code == 0 or f"hour {hour}" in output and "another run committed" in output, output[-3000:]
    assert 0 in codes
    landed = content(tmp_path, hour)
    assert landed == {name: rows for name, rows in content(baseline, hour).items() if name in landed}
    assert set(landed) == {"bronze.events", "silver.event_outcomes"}
