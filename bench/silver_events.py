"""bronze → silver events with the dedupe window full, against the same hour with an empty window, in one process.

Builds, in a lakehouse of its own:
- `--history-hours` hours (default 24) of `--history-events` accepted events each (default 1M) in
  silver.event_outcomes, the hours before the measured one, written directly (random ids, no JSON);
- one bronze hour of `--events` generated events (default 1M; 2 % malformed of every kind, duplicates inside the
  hour included) of which `--replayed` (0.5 %) carry the id of an event of the history, as a replay would.
Then `silver_events.materialize_hour` runs on that hour with the window of the topics' retention (7 days, so every
history hour is in it) and with a window of 0 hours (nothing to read: the baseline), alternating with Spark's
floor, best of `--repeat`: the same hour's contract check by Spark (`validate_events`) and one Delta commit of its
rows replacing the hour, nothing else (no duplicate search, no dead-letter details, no read-back). Silver checks
an hour of up to 1M records in its own process (Arrow for the contract's common form, Spark for the rest), so it
can run above that floor. Outputs are checked: with the window, exactly the replayed events (and only they) are
rejected as duplicates of a history hour, and bronze = silver + rejected.

    .venv/bin/python bench/silver_events.py [--events 1000000] [--history-hours 24] [--history-events 1000000]
                                            [--repeat 3] [--replayed 0.005] [--out FILE]
"""

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
from dagster_pyspark.resources import spark_session_from_config
from pyspark.sql import functions as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from report import write_results  # noqa: E402

from reco_assets.bronze.events import BRONZE_EVENT_SCHEMA, range_rows  # noqa: E402
from reco_assets.bronze.movielens import BUNDLED_SAMPLE  # noqa: E402
from reco_assets.events.generator import EventGenerator, load_population  # noqa: E402
from reco_assets.lakehouse import LakehouseResource  # noqa: E402
from reco_assets.lakehouse.hours import HOUR_PATTERN, hour_key, hour_start, hour_value  # noqa: E402
from reco_assets.lakehouse.tables import OUTCOME_COLUMNS, OUTCOME_TYPES  # noqa: E402
from reco_assets.resources import spark_config  # noqa: E402
from reco_assets.silver import events as silver_events  # noqa: E402

HOUR = "2026-11-23-12:00"
PARTITIONS = 3


def history_id(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def build_history(spark, lakehouse: LakehouseResource, hours: int, per_hour: int) -> None:
    """`hours` hours before HOUR of accepted events with ids history_id(0 … hours × per_hour - 1)."""
    first = hour_start(HOUR) - timedelta(hours=hours)
    ids = F.format_string("00000000-0000-4000-8000-%012d", F.col("id"))
    at = F.timestamp_seconds(F.lit(int(first.timestamp())) + (F.col("id") * 3600 / per_hour).cast("long"))
    rows = spark.range(hours * per_hour, numPartitions=hours).select(
        ids.alias("event_id"), F.lit("view").alias("event_type"), at.alias("event_ts"),
        (F.col("id") % 600 + 1).cast("int").alias("user_id"), (F.col("id") % 9000 + 1).cast("int").alias("movie_id"),
        F.lit("s").alias("session_id"), F.lit("mobile").alias("device_type"), (F.col("id") % 3).cast("int")
        .alias("partition"), F.lit("events_views").alias("topic"), F.col("id").alias("offset"), at.alias("received_at"))
    # Cast by type names: over Spark Connect, casts to the client's DataType objects left `string collate
    # UTF8_BINARY` in the Delta schema, a type delta-rs refuses to read.
    rows = rows.select(*[(F.col(c) if c in rows.columns else F.lit(None)).cast(OUTCOME_TYPES.get(c, "string")).alias(c)
                         for c in OUTCOME_COLUMNS])
    keys = [hour_key(first + timedelta(hours=h)) for h in range(hours)]
    lakehouse.table("silver.event_outcomes").replace_hours(
        rows.withColumn("event_hash", F.xxhash64("event_id")).withColumn("rejected", F.lit(False))
        .withColumn("hour", F.date_format("received_at", HOUR_PATTERN)).select(*OUTCOME_COLUMNS), keys)


def build_hour(spark, lakehouse: LakehouseResource, events: int, replayed: float, history: int) -> int:
    """The bronze hour: generated events, `replayed` of them re-using history ids; returns how many were replayed."""
    generator = EventGenerator(load_population("/nonexistent", BUNDLED_SAMPLE), invalid_rate=0.02, seed=7)
    start = hour_start(HOUR)
    values, topics, keys = [], [], []
    while len(values) < events:
        batch = generator.batch(min(50_000, events - len(values)), now=start)
        values += batch.values
        topics += batch.topics
        keys += batch.keys
    every = max(1, int(1 / replayed)) if replayed else 0
    replays = 0
    for i in range(0, len(values), every) if every else ():
        event = _parsed(values[i])
        if event is not None and history:
            event["event_id"] = history_id((i * 7919) % history)
            values[i] = json.dumps(event, separators=(",", ":")).encode()
            replays += 1
    offsets: dict[tuple, int] = {}
    columns = {name: [] for name in ("topic", "partition", "offset", "timestamp", "key", "value")}
    for i, (topic, key, value) in enumerate(zip(topics, keys, values, strict=True)):
        partition = zlib.crc32(key) % PARTITIONS
        offset = offsets.get((topic, partition), 0)
        offsets[(topic, partition)] = offset + 1
        for name, item in zip(columns, (topic, partition, offset, start + timedelta(
                microseconds=3_599_000_000 * i // len(values)), key, value), strict=True):
            columns[name].append(item)
    # Through Arrow: a million Python rows would take minutes through py4j.
    df = spark.createDataFrame(pd.DataFrame(columns), BRONZE_EVENT_SCHEMA).withColumn("hour", F.lit(hour_value(HOUR)))
    lakehouse.table("bronze.events").replace_hours(df.repartition(PARTITIONS * 3), [HOUR])
    ranges = [(t, p, 0, n, n, True, True, datetime.now(UTC), "bench", hour_value(HOUR)) for (t, p), n in
              offsets.items()]
    lakehouse.table("bronze.event_ranges").replace_hours(range_rows(ranges), [HOUR])
    return replays


def floor_hour(spark, lakehouse: LakehouseResource) -> None:
    """Spark's floor for the hour: its contract check by Spark (as silver runs it for hours above 1M records) and one
    commit of its rows replacing the hour, rejected or not, without the duplicate search or the dead letter's
    details."""
    checked = silver_events.contract_checked(silver_events.bronze_hour(spark, lakehouse, HOUR,
                                                                        lakehouse.table("bronze.events").version()))
    rows = silver_events.outcome_rows(checked, silver_events.NO_DUPLICATES, HOUR)
    lakehouse.table("silver.event_outcomes").replace_hours(rows, [HOUR])


def history_ids_kept(spark, lakehouse: LakehouseResource) -> int:
    return lakehouse.table("silver.event_outcomes").read_hours(spark, [HOUR], view="silver.events") \
        .where(F.col("event_id").startswith("00000000-0000-4000-8000-")).count()


def _parsed(value: bytes) -> dict | None:
    try:
        event = json.loads(value)
    except ValueError:
        return None
    return event if isinstance(event, dict) and isinstance(event.get("event_id"), str) else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--history-hours", type=int, default=24)
    parser.add_argument("--history-events", type=int, default=1_000_000, help="accepted events per history hour")
    parser.add_argument("--replayed", type=float, default=0.005)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="reco-silver-window-"))
    lakehouse = LakehouseResource(data_dir=str(work))
    spark = spark_session_from_config(spark_config(remote=False))
    lines = []

    def report(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    try:
        started = time.perf_counter()
        build_history(spark, lakehouse, args.history_hours, args.history_events)
        history = args.history_hours * args.history_events
        replays = build_hour(spark, lakehouse, args.events, args.replayed, history)
        print(f"history ({history:,} events) and the hour built in {time.perf_counter() - started:.0f} s "
              f"under {work}", flush=True)
        windows = {"empty window (0 h)": 0.0, "window 168 h": 168.0}
        floor = "Spark's floor: contract check + one Delta commit"
        times = {name: [] for name in [*windows, floor]}
        counts, kept = {}, 0
        silver_events.materialize_hour(HOUR, lakehouse, spark, 0.0)  # warm-up
        for round_ in range(args.repeat):
            for name in (list(times) if round_ % 2 == 0 else list(reversed(times))):
                t0 = time.perf_counter()
                if name == floor:
                    floor_hour(spark, lakehouse)
                else:
                    counts[name] = silver_events.materialize_hour(HOUR, lakehouse, spark, windows[name])
                times[name].append(time.perf_counter() - t0)
                print(f"  pass {round_ + 1} {name}: {times[name][-1]:.2f} s {counts.get(name, '')}", flush=True)
                if name == "window 168 h":
                    kept = max(kept, history_ids_kept(spark, lakehouse))
        full, empty = counts["window 168 h"], counts["empty window (0 h)"]
        problems = []
        for name, c in counts.items():
            if c["bronze"] != c["silver"] + c["rejected"] or c["duplicate_ids"]:
                problems.append(f"{name}: {c}")
        extra = full["reasons"].get("duplicate", 0) - empty["reasons"].get("duplicate", 0)
        # A replayed id may sit on a record that is rejected anyway (malformed, or a copy inside the hour).
        if kept or not 0 < extra <= replays:
            problems.append(f"{kept} history ids kept in silver; {extra} more duplicates than without the window "
                            f"for {replays} replayed ids")
        n = full["bronze"]
        best = {name: min(s) for name, s in times.items()}
        full_s, empty_s, floor_s = best["window 168 h"], best["empty window (0 h)"], best[floor]
        report(f"- hour of {n:,} events ({replays:,} replaying ids of the history), dedupe window holding "
               f"{args.history_hours} hours × {args.history_events:,} events: **{n / full_s:,.0f} ev/s** "
               f"({full_s:.2f} s); the same hour with an empty window {n / empty_s:,.0f} ev/s ({empty_s:.2f} s) "
               f"→ the window costs **{full_s / empty_s:.2f}×** the time "
               f"(all passes: {json.dumps({k: [round(s, 2) for s in v] for k, v in times.items()})})")
        report(f"- Spark's floor, the hour's contract check by Spark and one Delta commit of its rows, nothing else: "
               f"{n / floor_s:,.0f} ev/s ({floor_s:.2f} s); silver with the window runs at **{floor_s / full_s:.2f}×** "
               f"that floor")
        report(f"- replayed ids rejected as duplicates of a history hour: {extra:,} of {replays:,} (the others sit on "
               f"records rejected anyway); history ids kept in silver: {kept}; checks: "
               f"{'all hold' if not problems else 'FAILED'}; the Python process peaked at "
               f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB")
        for p in problems:
            report(f"  - {p}")
    finally:
        spark.stop()
        shutil.rmtree(work, ignore_errors=True)
    if args.out:
        write_results(args.out, "silver_events with the dedupe window", lines, "2 cores, local Spark")
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
