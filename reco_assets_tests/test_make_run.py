"""`make run` for real, in its own process group as a terminal runs it: Ctrl+C (SIGINT to the group) as a
sensor-launched run starts stops every Dagster process and the HTTP API within 10 s, leaves no run marked as
running, and says what keeps running."""

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

from reco_assets.services import LocalBroker, free_port
from reco_assets.services.leftovers import group_members

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]


def graphql(base_url: str, query: str) -> dict:
    request = urllib.request.Request(f"{base_url}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)["data"]


def location_loaded(base_url: str) -> bool:
    try:
        entries = graphql(base_url, "{ workspaceOrError { ... on Workspace { locationEntries { loadStatus } } } }")[
            "workspaceOrError"]["locationEntries"]
    except OSError:
        return False
    return bool(entries) and all(entry["loadStatus"] == "LOADED" for entry in entries)


def started_runs(base_url: str) -> list[str]:
    query = "{ runsOrError(filter: {statuses: [STARTED]}) { ... on Runs { results { runId } } } }"
    return [run["runId"] for run in graphql(base_url, query)["runsOrError"]["results"]]


def test_ctrl_c_stops_every_dagster_process_and_says_what_keeps_running(tmp_path, connect_server):
    """Runs go to the session's Spark Connect server, as `make run` sends them to its own."""
    port, kafka_port, api_port = free_port(), free_port(span=2), free_port()  # the broker's controller: + 1
    data_dir, base_url = tmp_path / "data", f"http://127.0.0.1:{port}"
    env = {key: value for key, value in os.environ.items() if key not in ("DAGSTER_HOME", "KAFKA_BOOTSTRAP_SERVERS")}
    env |= {"RECO_DATA_DIR": str(data_dir), "DAGSTER_PORT": str(port), "KAFKA_PORT": str(kafka_port),
            "SPARK_REMOTE": connect_server.url, "RECO_API_PORT": str(api_port)}
    log_path = tmp_path / "make-run.log"
    with log_path.open("w") as log:
        make = subprocess.Popen(["make", "run"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not location_loaded(base_url):
            assert make.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(1)
        # Events for the sensor: Ctrl+C comes while the run it launches works.
        subprocess.run([str(ROOT / ".venv/bin/reco-assets"), "generate-events", "--num-events", "3000"],
                       env=env | {"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka_port}"}, check=True, timeout=120)
        while not (running := started_runs(base_url)):
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.5)
        # Ctrl+C as the run starts: its worker defers the interrupt to its first step, and once kept the code server
        # up past 10 s; make run then kills what is left and marks the run canceled.
        members = group_members(make.pid)
        commands = " | ".join(members.values())
        with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/openapi.json", timeout=10) as api:
            assert api.status == 200  # the HTTP API started beside Dagster
        for process in ("dagster dev", "dagster._daemon", "dagster_webserver", "code-server", "reco-assets serve"):
            assert process in commands, (process, commands[:3000])

        os.killpg(make.pid, signal.SIGINT)  # what a terminal's Ctrl+C does
        stopped = time.monotonic()
        while group_members(make.pid) and time.monotonic() - stopped < 10:
            time.sleep(0.2)
        left, took = group_members(make.pid), time.monotonic() - stopped
        assert not left, f"still running {took:.0f} s after Ctrl+C: {left}"
        with dg.DagsterInstance.from_config(str(data_dir / "dagster_home")) as instance:
            status = instance.get_run_by_id(running[0]).status
        print(f"make run stopped {took:.1f} s after Ctrl+C; the run it interrupted ended as {status.value}; it said: "
              f"{[line for line in log_path.read_text().splitlines() if 'marked canceled' in line]}")
        assert status.value in ("CANCELED", "FAILURE"), status  # not left STARTED: its hour is run again
        output = log_path.read_text()
        assert "[run] Dagster stopped. Still running, for the next start: the Kafka broker" in output, output[-2000:]
        assert "make stop" in output
    finally:
        if group_members(make.pid):
            os.killpg(make.pid, signal.SIGKILL)
        make.wait(timeout=30)
        LocalBroker(data_dir, port=kafka_port).down(log=lambda message: None)
