"""Freshness under `dagster dev`: from sending an event to `gold.trending_now` reflecting it.

For each phase, a fresh data dir gets its own Kafka broker and `dagster dev` (webserver + daemon, the project's
dagster.yaml, the sensor on by default). Events stream at --rate for --minutes; one sampled event every
--sample-every seconds records when it was sent and its broker time. A watcher reads `gold/trending_now` through
DuckDB every 0.2 s: an event is reflected once the table's `as_of` (the latest broker time it includes) has
reached it. Reports p50 / p95 / max and where the time goes (waiting for the sensor and for the run before,
queue and process launch, each Spark step, visibility), from the Dagster instance's run and step records. The
samples, the watcher's observations and the runs are left in the phase's data dir (samples.json) for a look at
the tail.

Phases: `connect` (runs reach one warm Spark Connect server, what `make run` does) and `local` (every run starts
its own local Spark: the baseline). The ratio of their p50s is the figure.

    .venv/bin/python bench/freshness.py --minutes 3 --rate 200
    .venv/bin/python bench/freshness.py --minutes 3 --rate 200 --phases connect --preload 500000  # late in an hour
    .venv/bin/python bench/freshness.py --minutes 3 --rate 2000 --phases connect                  # 10x the load
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import dagster as dg
import duckdb
from confluent_kafka import Producer

from reco_assets.bronze.movielens import BUNDLED_SAMPLE
from reco_assets.events.generator import EventGenerator, load_population
from reco_assets.kafka.client import KafkaResource, ensure_topics
from reco_assets.lakehouse import LakehouseResource
from reco_assets.lakehouse.hours import HOUR_STATE_TAG
from reco_assets.sensors import events_job
from reco_assets.services import ConnectServer, LocalBroker, free_port

ROOT = Path(__file__).resolve().parents[1]


def wait_for(what: str, ready, timeout: float, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = ready()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s")


class Watcher(threading.Thread):
    """Polls trending_now's `as_of` through DuckDB; keeps (seen at, as_of) whenever it moves."""

    def __init__(self, data_dir: Path):
        super().__init__(daemon=True)
        self.source = LakehouseResource(data_dir=str(data_dir)).table("gold.trending_now").duckdb()
        self.changes: list[tuple[float, float]] = []
        self.stopped = threading.Event()

    def run(self):
        con = duckdb.connect()
        while not self.stopped.is_set():
            try:
                as_of = con.execute(f"SELECT epoch(max(as_of)) FROM {self.source}").fetchone()[0]
            except duckdb.Error:
                as_of = None  # no table yet
            if as_of is not None and (not self.changes or as_of > self.changes[-1][1]):
                self.changes.append((time.time(), as_of))
            self.stopped.wait(0.2)

    def visible_at(self, broker_ts: float) -> float | None:
        return next((seen for seen, as_of in self.changes if as_of >= broker_ts), None)


def preload(bootstrap: str, events: int, seed: int) -> None:
    """Send `events` at once (as fast as the producer goes): an open hour as full as it is late in the hour."""
    generator = EventGenerator(load_population("/nonexistent", BUNDLED_SAMPLE), seed=seed)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True})
    started = time.monotonic()
    for start in range(0, events, 10_000):
        batch = generator.batch(min(10_000, events - start))
        for topic, key, value in zip(batch.topics, batch.keys, batch.values, strict=True):
            while True:
                try:
                    producer.produce(topic, value, key)
                    break
                except BufferError:
                    producer.poll(0.05)
        producer.poll(0)
    producer.flush(120)
    print(f"  preloaded {events:,} events in {time.monotonic() - started:.0f} s", flush=True)


def stream(bootstrap: str, rate: float, seconds: float, sample_every: float, seed: int) -> list[dict]:
    """Produce at `rate` events/s; return the samples: sent (wall clock) and broker time (LogAppendTime)."""
    generator = EventGenerator(load_population("/nonexistent", BUNDLED_SAMPLE), seed=seed)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
    samples: list[dict] = []

    def sampled(sample):
        def report(error, message):
            if error is None:
                sample["broker_ts"] = message.timestamp()[1] / 1000
        return report

    started = time.monotonic()
    sent, next_sample = 0, 0.0
    while (elapsed := time.monotonic() - started) < seconds:
        due = int(elapsed * rate) + 1 - sent
        if due > 0:
            batch = generator.batch(due)
            for i, (topic, key, value) in enumerate(zip(batch.topics, batch.keys, batch.values, strict=True)):
                if i == 0 and elapsed >= next_sample:
                    sample = {"sent": time.time()}
                    samples.append(sample)
                    producer.produce(topic, value, key, on_delivery=sampled(sample))
                    next_sample += sample_every
                else:
                    producer.produce(topic, value, key)
            sent += due
        producer.poll(0)
        time.sleep(0.01)
    producer.flush(30)
    print(f"  sent {sent:,} events in {seconds:.0f} s ({sent / seconds:.0f}/s), {len(samples)} samples", flush=True)
    return [s for s in samples if "broker_ts" in s]


def run_breakdown(instance: dg.DagsterInstance) -> list[dict]:
    """Per events run: requested, started, and when each step started and ended (epoch seconds)."""
    runs = []
    for record in instance.get_run_records(dg.RunsFilter(job_name=events_job.name)):
        steps = {s.step_key: (s.start_time, s.end_time) for s in instance.get_run_step_stats(record.dagster_run.run_id)
                 if s.start_time and s.end_time}
        if "gold_trending_now" in steps and record.start_time:
            runs.append({"created": record.create_timestamp.timestamp(), "started": record.start_time,
                         "ended": record.end_time, "steps": steps,
                         "state": record.dagster_run.tags.get(HOUR_STATE_TAG)})
    runs.sort(key=lambda r: r["steps"]["gold_trending_now"][1])
    # A run can start only when the hour's run before it has ended (it may be requested earlier and queue).
    for before, run in zip([None, *runs], runs, strict=False):
        run["ready"] = max(run["created"], before["ended"] if before and before["ended"] else 0.0)
    return runs


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def phase(name: str, minutes: float, rate: float, sample_every: float, preloaded: int = 0) -> dict:
    data_dir = Path(tempfile.mkdtemp(prefix=f"freshness-{name}-"))
    home = data_dir / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").symlink_to(ROOT / "dagster.yaml")
    broker = LocalBroker(data_dir, port=free_port(), controller_port=free_port())
    connect = ConnectServer(data_dir, port=free_port()) if name == "connect" else None
    dev = None
    try:
        started = time.monotonic()
        broker.up(log=lambda m: None)
        ensure_topics(KafkaResource(bootstrap_servers=broker.bootstrap_servers).admin())
        env = {**os.environ, "RECO_DATA_DIR": str(data_dir), "DAGSTER_HOME": str(home),
               "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers}
        env.pop("SPARK_REMOTE", None)
        if connect:
            connect.up(log=lambda m: None)
            env["SPARK_REMOTE"] = connect.url
        port = free_port()
        dev = subprocess.Popen([str(ROOT / ".venv" / "bin" / "dagster"), "dev", "-w", "workspace.yaml",
                                "-h", "127.0.0.1", "-p", str(port)], cwd=ROOT, env=env, start_new_session=True,
                               stdout=open(data_dir / "dagster-dev.log", "w"), stderr=subprocess.STDOUT)
        wait_for("dagster dev", lambda: _answers(f"http://127.0.0.1:{port}/server_info"), 180)
        print(f"  {name}: broker{' + Spark Connect' if connect else ''} + dagster dev up in "
              f"{time.monotonic() - started:.0f} s ({data_dir})", flush=True)
        watcher = Watcher(data_dir)
        watcher.start()
        if preloaded:
            preload(broker.bootstrap_servers, preloaded, seed=3)
        warm = stream(broker.bootstrap_servers, rate, 5, 5, seed=1)
        wait_for("the first trending_now", lambda: watcher.visible_at(warm[-1]["broker_ts"]), 600, every=1)
        print(f"  warm-up: first trending_now {watcher.changes[-1][0] - warm[0]['sent']:.1f} s after the first "
              "event", flush=True)
        samples = stream(broker.bootstrap_servers, rate, minutes * 60, sample_every, seed=2)
        last = max(s["broker_ts"] for s in samples)
        wait_for("the last sample", lambda: watcher.visible_at(last), 300, every=1)
        watcher.stopped.set()
        print(f"  gold_trending_now's freshness policy, as the daemon evaluated it: {freshness_status(port)}")
        with dg.DagsterInstance.from_config(str(home)) as instance:
            runs = run_breakdown(instance)
            states = Counter(f"{r.dagster_run.tags.get(HOUR_STATE_TAG)} {r.dagster_run.status.value.lower()}"
                             for r in instance.get_run_records(dg.RunsFilter(job_name=events_job.name)))
        print(f"  runs by state: {', '.join(f'{n} {state}' for state, n in sorted(states.items()))}")
        (data_dir / "samples.json").write_text(json.dumps({"samples": samples, "changes": watcher.changes,
                                                           "runs": runs}))
    finally:
        if dev:
            os.killpg(dev.pid, signal.SIGTERM)
            try:
                dev.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(dev.pid, signal.SIGKILL)
        if connect:
            connect.down(log=lambda m: None)
        broker.down(log=lambda m: None)
    return summarize(name, samples, watcher, runs)


def freshness_status(port: int) -> str:
    query = ('{ assetNodes(assetKeys: [{path: ["gold_trending_now"]}]) '
             '{ freshnessStatusInfo { freshnessStatus } } }')
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        nodes = json.loads(response.read())["data"]["assetNodes"]
    return nodes[0]["freshnessStatusInfo"]["freshnessStatus"] if nodes and nodes[0]["freshnessStatusInfo"] else "none"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def summarize(name: str, samples: list[dict], watcher: Watcher, runs: list[dict]) -> dict:
    parts: dict[str, list[float]] = {}
    latencies = []
    for sample in samples:
        visible = watcher.visible_at(sample["broker_ts"])
        latencies.append(visible - sample["sent"])
        # The run that made it visible: the first whose bronze step began after the event reached Kafka.
        run = next((r for r in runs if r["steps"]["bronze_events"][0] >= sample["broker_ts"]), None)
        if run is None:
            continue
        steps = run["steps"]
        breakdown = {
            "wait for sensor and previous run": max(0.0, run["ready"] - sample["sent"]),
            "queue + run process launch": steps["bronze_events"][0] - max(run["ready"], sample["sent"]),
            **{f"step {key}": end - start for key, (start, end) in steps.items()
               if start <= steps["gold_trending_now"][0]},
            "between steps": steps["gold_trending_now"][1] - steps["bronze_events"][0]
            - sum(end - start for start, end in steps.values() if start <= steps["gold_trending_now"][0]),
            "trending_now written → seen": visible - steps["gold_trending_now"][1],
        }
        for part, seconds in breakdown.items():
            parts.setdefault(part, []).append(seconds)
    third = max(1, len(latencies) // 3)
    result = {"phase": name, "samples": len(latencies), "runs": len(runs),
              "p50": statistics.median(latencies), "p95": percentile(latencies, 0.95), "max": max(latencies),
              "first_third_p50": statistics.median(latencies[:third]),
              "last_third_p50": statistics.median(latencies[-third:])}
    print(f"\n{name}: {len(latencies)} samples, {len(runs)} runs — p50 {result['p50']:.1f} s, "
          f"p95 {result['p95']:.1f} s, max {result['max']:.1f} s")
    # Live runs that keep up give the same latency at the end as at the start; falling behind makes it grow.
    print(f"  keeping up: p50 of the first third of the samples {result['first_third_p50']:.1f} s, of the last "
          f"third {result['last_third_p50']:.1f} s")
    print("  where the time goes (median per sampled event; steps that ran in only some of the runs say how often):")
    for part, seconds in parts.items():
        share = "" if len(seconds) == len(latencies) else f"  ({len(seconds)} of {len(latencies)} samples)"
        print(f"    {part:<40} {statistics.median(seconds):6.1f} s{share}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--rate", type=float, default=200.0, help="events per second")
    parser.add_argument("--sample-every", type=float, default=2.0, help="seconds between sampled events")
    parser.add_argument("--phases", default="connect,local", help="connect, local or both (default)")
    parser.add_argument("--preload", type=int, default=0,
                        help="events sent at once before the measurement: an open hour as full as late in the hour")
    args = parser.parse_args()
    results = [phase(name, args.minutes, args.rate, args.sample_every, args.preload)
               for name in args.phases.split(",")]
    print("\n| phase | samples | runs | p50 s | p95 s | max s | p50, first / last third |\n"
          "|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['phase']} | {r['samples']} | {r['runs']} | {r['p50']:.1f} | {r['p95']:.1f} | {r['max']:.1f} | "
              f"{r['first_third_p50']:.1f} / {r['last_third_p50']:.1f} |")
    by_phase = {r["phase"]: r for r in results}
    if {"connect", "local"} <= by_phase.keys():
        print(f"\np50 local / connect: {by_phase['local']['p50'] / by_phase['connect']['p50']:.2f}×; "
              f"p95: {by_phase['local']['p95'] / by_phase['connect']['p95']:.2f}×")


if __name__ == "__main__":
    sys.exit(main())
