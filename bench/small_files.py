"""Small files: what an hour of live runs leaves in the Delta tables, and what hourly maintenance makes of it.

Streams `--rate` events/s (default 200) into a local broker for `--minutes` of wall time (default 60), and runs
what a live run of the open hour runs — bronze_events, silver_events, gold_trending_now — in one warm Spark
session, back to back as the sensor requests them: a run starts when the previous one has ended and at least
`--step` seconds of stream (default 10, the sensor's open-hour refresh) have passed since the previous run's. Before
each run the events of the stream time that passed are produced. The records carry their stream time within one
hour (the bench's topics take the producer's timestamps, where the project's take the broker's), so every run lands
in one broker hour. Then it counts, per table, the data files of the current version of that hour and the files
stored on disk, runs the maintenance job's steps (OPTIMIZE the hour, VACUUM with the 7-day retention, and with 0
hours as the lower bound), and counts again. The baseline is the same hour materialized once, by one run after all
events arrived.

    .venv/bin/python bench/small_files.py [--minutes 60] [--rate 200] [--step 10] [--out FILE]
"""

import argparse
import logging
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from confluent_kafka.admin import NewTopic
from dagster_pyspark.resources import spark_session_from_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from report import write_results  # noqa: E402

from reco_assets.bronze import events as bronze_events  # noqa: E402
from reco_assets.bronze.movielens import BUNDLED_SAMPLE  # noqa: E402
from reco_assets.events.generator import EventGenerator, load_population  # noqa: E402
from reco_assets.events.producer import EventProducer  # noqa: E402
from reco_assets.gold.now import trending_now  # noqa: E402
from reco_assets.kafka.client import EVENT_TOPICS, TOPIC_PARTITIONS, KafkaResource  # noqa: E402
from reco_assets.lakehouse import LakehouseResource  # noqa: E402
from reco_assets.lakehouse.hours import hour_key, hour_start, hour_value  # noqa: E402
from reco_assets.lakehouse.maintenance import compact_closed_hours, live_files_per_hour, stored_files, vacuum  # noqa: E402
from reco_assets.resources import spark_config  # noqa: E402
from reco_assets.services import LocalBroker, free_port  # noqa: E402
from reco_assets.silver import events as silver_events  # noqa: E402

TABLES = ("bronze.events", "bronze.event_ranges", "silver.event_outcomes", "gold.trending_now")


def live_run(spark, lakehouse: LakehouseResource, kafka: KafkaResource, hour: str) -> None:
    bronze_events.materialize_hour(hour, lakehouse, spark, kafka)
    silver_events.materialize_hour(hour, lakehouse, spark)
    rows, _ = trending_now(lakehouse, 20, 24.0, 1.0, datetime.now(UTC), logging.getLogger("small_files"))
    lakehouse.table("gold.trending_now").overwrite(rows)


def send_at(producer: EventProducer, batch, timestamp_ms: int) -> None:
    """Produce `batch` with every record stamped `timestamp_ms`; fail on any record the broker did not take."""
    errors = []

    def delivered(error, _message) -> None:
        if error is not None:
            errors.append(error.str())

    for topic, key, value in zip(batch.topics, batch.keys, batch.values, strict=True):
        while True:
            try:
                producer.producer.produce(topic, value, key, timestamp=timestamp_ms, on_delivery=delivered)
                break
            except BufferError:
                producer.producer.poll(0.05)
    if producer.producer.flush(60) or errors:
        raise RuntimeError(f"the broker did not take every record: {errors[:3] or 'flush timed out'}")


def counts(spark, lakehouse: LakehouseResource, hour: str) -> dict[str, tuple[int, int]]:
    """Per table: (data files of the current version in the hour, or in all for an unpartitioned table; stored)."""
    found = {}
    for name in TABLES:
        table = lakehouse.table(name)
        live = live_files_per_hour(spark, table)[hour_value(hour)] if table.spec.hourly else \
            spark.sql(f"DESCRIBE DETAIL delta.`{table.uri}`").first()["numFiles"]
        found[name] = (live, stored_files(table))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--step", type=int, default=10)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not 0 < args.minutes <= 60:
        parser.error("--minutes must fit in one hour of stream (0 < minutes <= 60)")

    work = Path(tempfile.mkdtemp(prefix="reco-small-files-"))
    broker = LocalBroker(work, port=free_port(), controller_port=free_port())
    broker.up(log=lambda m: None)
    kafka = KafkaResource(bootstrap_servers=broker.bootstrap_servers)
    admin = kafka.admin()
    created = admin.create_topics(
        [NewTopic(topic, num_partitions=TOPIC_PARTITIONS, replication_factor=1,
                  config={"message.timestamp.type": "CreateTime"}) for topic in EVENT_TOPICS])
    for future in created.values():
        future.result()
    spark = spark_session_from_config(spark_config(remote=False))
    live, once = LakehouseResource(data_dir=str(work / "live")), LakehouseResource(data_dir=str(work / "once"))
    lines = []

    def report(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    try:
        hour = hour_key(datetime.now(UTC) - timedelta(hours=1))  # the hour of stream the records are stamped in
        start_ms = int(hour_start(hour).timestamp() * 1000)
        generator = EventGenerator(load_population("/nonexistent", BUNDLED_SAMPLE), seed=3)
        producer = EventProducer(kafka.client_config())
        started = time.perf_counter()
        run_seconds, streamed, events = [], 0.0, 0  # streamed: seconds of stream produced so far
        while streamed < args.minutes * 60:
            time.sleep(max(0.0, started + streamed + args.step - time.perf_counter()))
            upto = min(time.perf_counter() - started, args.minutes * 60)
            batch = round(args.rate * upto) - events
            stamp_ms = start_ms + int(upto * 1000) - 1  # events and their records carry the same stream time
            send_at(producer, generator.batch(batch, now=datetime.fromtimestamp(stamp_ms / 1000, UTC)), stamp_ms)
            events, streamed = events + batch, upto
            t0 = time.perf_counter()
            live_run(spark, live, kafka, hour)
            run_seconds.append(time.perf_counter() - t0)
            if len(run_seconds) % 20 == 1:
                print(f"  run {len(run_seconds)}: {events:,} events so far, {run_seconds[-1]:.1f} s", flush=True)
        live_run(spark, once, kafka, hour)
        after_runs = counts(spark, live, hour)
        baseline = counts(spark, once, hour)
        closed = datetime.strptime(hour, "%Y-%m-%d-%H:%M").replace(tzinfo=UTC) + timedelta(hours=1, minutes=7)
        for name in TABLES:
            compact_closed_hours(spark, live.table(name), now=closed)
            vacuum(spark, live.table(name), 168.0)
        after_optimize = counts(spark, live, hour)
        spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
        for name in TABLES:
            vacuum(spark, live.table(name), 0.0)
        after_vacuum_0 = counts(spark, live, hour)
        median = sorted(run_seconds)[len(run_seconds) // 2]
        report(f"- {args.minutes:g} min of stream at {args.rate} events/s ({events:,} events) and "
               f"{len(run_seconds)} live runs (bronze_events, silver_events, gold_trending_now) of its hour, back to "
               f"back, each after at least {args.step} s of new stream; run time median {median:.1f} s, last "
               f"{run_seconds[-1]:.1f} s")
        report("")
        report("| table | files of the hour, one run (baseline) | after the live runs: current version / stored | "
               "after OPTIMIZE + VACUUM 168 h | after VACUUM 0 h |")
        report("|---|---:|---:|---:|---:|")
        for name in TABLES:
            report(f"| {name} | {baseline[name][0]} | {after_runs[name][0]} / {after_runs[name][1]:,} | "
                   f"{after_optimize[name][0]} / {after_optimize[name][1]:,} | "
                   f"{after_vacuum_0[name][0]} / {after_vacuum_0[name][1]:,} |")
    finally:
        spark.stop()
        broker.down(log=lambda m: None)
        shutil.rmtree(work, ignore_errors=True)
    if args.out:
        write_results(args.out, "Small files", lines, "2 cores, local Spark")


if __name__ == "__main__":
    main()
