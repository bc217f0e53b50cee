"""bronze → silver events, the plan before 2026-11-23 against the current asset code, in one process.

Builds bronze hours the way `bronze_events` lands them (one Parquet file per topic-partition with topic, partition,
offset, broker timestamp, key and value bytes), from the project's event generator: a previous hour, a large hour
(default 1M events, 2 % malformed of every kind, duplicates inside the hour included, plus a share of events
replayed from the previous hour) and a small hour (default 13k events, the size of a live-path run). Then both
plans materialize the same hours into separate lakehouses, alternating which goes first, best of N; the outputs
of the two must be identical (rows and dead-letter details), or the script fails.

    .venv/bin/python bench/silver_events.py [--events 1000000] [--small-events 13000] [--repeat 3]
                                            [--invalid-rate 0.02] [--replayed 0.005] [--connect] [--out FILE]
"""

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest import mock

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from dagster_pyspark.resources import spark_session_from_config
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reco_assets.bronze.events import partition_path  # noqa: E402
from reco_assets.bronze.movielens import BUNDLED_SAMPLE  # noqa: E402
from reco_assets.events.generator import EventGenerator, load_population  # noqa: E402
from reco_assets.kafka.broker import free_port  # noqa: E402
from reco_assets.partitions import hour_folder, previous_hour  # noqa: E402
from reco_assets.resources import LakehouseResource, spark_config  # noqa: E402
from reco_assets.silver import event_contract  # noqa: E402
from reco_assets.silver import events as silver_events  # noqa: E402
from reco_assets.spark_connect import ConnectServer  # noqa: E402
from reco_assets.tables import duckdb_scalar  # noqa: E402

PARTITIONS = 3  # per topic, as the project creates them

# ---------------------------------------------------------------------------------------------------------------
# The plan as it was (commit a8f0204): the full contract check for every record, its columns built for every hour,
# a window over event_id across all wide rows, a left join of every row with the previous hour's ids, the checked
# records persisted (a cached table) and written twice, five DuckDB queries for the counts.


def baseline_validate_events(df: DataFrame) -> DataFrame:
    """The full check for every record: the stages without the fast path (no `_FAST_PATTERNS`)."""
    ec = event_contract
    out = df
    with mock.patch.dict(ec._FAST_PATTERNS, clear=True):
        stages = [*ec._parse_stages(), ec._value_stage(), ec._check_stage()]
    for columns in stages:
        out = out.withColumns({f"{ec._TMP}{name}": column for name, column in columns.items()})
    out = out.withColumns(ec._outputs())
    return out.drop(*[c for c in out.columns if c.startswith(ec._TMP)])


def baseline_split_hour(checked: DataFrame, previous_ids: DataFrame | None) -> tuple[DataFrame, DataFrame]:
    checked = checked.withColumn("received_at", F.col("timestamp"))
    valid = checked.where(F.col("reject_reason").isNull())
    first = Window.partitionBy("event_id").orderBy("received_at", "topic", "partition", "offset")
    valid = (valid.withColumn("_copy", F.row_number().over(first))
             .withColumn("_first", F.first(F.format_string("%s/%d@%d", "topic", "partition", "offset")).over(first)))
    if previous_ids is not None:
        valid = valid.join(previous_ids.select("event_id", F.lit(True).alias("_seen_before")), "event_id", "left")
    else:
        valid = valid.withColumn("_seen_before", F.lit(None).cast("boolean"))
    duplicate = (F.col("_copy") > 1) | F.col("_seen_before").isNotNull()
    silver = valid.where(~duplicate).select(*silver_events.EVENT_COLUMNS, "topic", "partition", "offset", "received_at")
    duplicates = valid.where(duplicate).select(
        "topic", "partition", "offset", "received_at", "key", "value",
        F.lit("duplicate").alias("reason"), F.lit("event_id").alias("field"),
        F.when(F.col("_seen_before").isNotNull(), F.lit("event_id already in the previous hour"))
        .otherwise(F.concat(F.lit("duplicate of "), F.col("_first"))).alias("detail"),
        "event_id",
    )
    invalid = checked.where(F.col("reject_reason").isNotNull()).select(
        "topic", "partition", "offset", "received_at", "key", "value",
        F.col("reject_reason").alias("reason"), F.col("reject_field").alias("field"),
        F.col("reject_detail").alias("detail"), F.lit(None).cast("string").alias("event_id"),
    )
    return silver, invalid.unionByName(duplicates)


def _baseline_write(lakehouse: LakehouseResource, df: DataFrame, table: str, partition_key: str) -> Path:
    final = partition_path(lakehouse, table, "silver", partition_key)
    with lakehouse.staged_dir(final) as staged:
        df.coalesce(1).write.mode("overwrite").parquet(str(staged))
    return final


def baseline_materialize_hour(partition_key: str, lakehouse: LakehouseResource, spark: SparkSession) -> dict:
    bronze_path = partition_path(lakehouse, "events", "bronze", partition_key)
    previous = partition_path(lakehouse, "events", "silver", previous_hour(partition_key))
    previous_ids = spark.read.parquet(str(previous)).select("event_id") if previous.exists() else None
    checked = baseline_validate_events(spark.read.parquet(str(bronze_path))).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        silver, rejected = baseline_split_hour(checked, previous_ids)
        silver_path = _baseline_write(lakehouse, silver, "events", partition_key)
        rejected_path = _baseline_write(lakehouse, rejected, "events_rejected", partition_key)
    finally:
        checked.unpersist()
    reasons = duckdb_scalar(
        "SELECT coalesce(json_group_object(reason, n), '{}')::VARCHAR FROM "
        "(SELECT reason, count(*) AS n FROM read_parquet(?) GROUP BY reason ORDER BY reason)",
        str(rejected_path / "*.parquet"))
    return {
        "bronze": duckdb_scalar("SELECT count(*) FROM read_parquet(?)", str(bronze_path / "*.parquet")),
        "silver": duckdb_scalar("SELECT count(*) FROM read_parquet(?)", str(silver_path / "*.parquet")),
        "rejected": duckdb_scalar("SELECT count(*) FROM read_parquet(?)", str(rejected_path / "*.parquet")),
        "reasons": reasons,
        "duplicate_ids": duckdb_scalar(
            "SELECT count(*) - count(DISTINCT event_id) FROM read_parquet(?)",
            [str(silver_path / "*.parquet")] + ([str(previous / "*.parquet")] if previous.exists() else [])),
    }


# ---------------------------------------------------------------------------------------------------------------
# Bronze hours from the project's generator, laid out as bronze_events writes them.


def bronze_hour(generator: EventGenerator, n: int, start: datetime, replay: list[tuple[str, bytes, bytes]]) -> dict:
    """Columns of one bronze hour: n generated events (plus `replay` records from an earlier hour), assigned to
    topic-partitions by key as Kafka's default partitioner would (any stable mapping will do), broker times
    spread over the hour in offset order."""
    topics, keys, values = [], [], []
    left = n
    while left > 0:
        batch = generator.batch(min(50_000, left), now=start)
        topics += batch.topics
        keys += batch.keys
        values += batch.values
        left -= len(batch)
    step = len(replay) and n // (len(replay) + 1)
    for i, (topic, key, value) in enumerate(replay):  # interleaved, so replays are not all at the hour's start
        at = (i + 1) * step + i
        topics.insert(at, topic)
        keys.insert(at, key)
        values.insert(at, value)
    total = len(values)
    columns = {"topic": topics, "partition": [zlib.crc32(k) % PARTITIONS for k in keys], "key": keys, "value": values}
    next_offset: dict[tuple[str, int], int] = {}
    offsets = []
    for t, p in zip(columns["topic"], columns["partition"], strict=True):
        offsets.append(next_offset.get((t, p), 0))
        next_offset[(t, p)] = offsets[-1] + 1
    columns["offset"] = offsets
    span_us = 3_599_000_000
    columns["timestamp"] = [start + timedelta(microseconds=span_us * i // total) for i in range(total)]
    return columns


def write_bronze(columns: dict, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.table({
        "topic": pa.array(columns["topic"], pa.string()),
        "partition": pa.array(columns["partition"], pa.int32()),
        "offset": pa.array(columns["offset"], pa.int64()),
        "timestamp": pa.array(columns["timestamp"], pa.timestamp("us", tz="UTC")),
        "key": pa.array(columns["key"], pa.binary()),
        "value": pa.array(columns["value"], pa.binary()),
    })
    for i, (topic, partition) in enumerate(sorted({(t, p) for t, p in zip(columns["topic"], columns["partition"],
                                                                            strict=True)})):
        mask = pc.and_(pc.equal(table["topic"], topic), pc.equal(table["partition"], partition))
        part = table.filter(mask).sort_by("offset")
        pq.write_table(part, folder / f"part-{i:05d}-bench.snappy.parquet", compression="snappy")


def build_bronze(root: Path, hours: dict[str, int], invalid_rate: float, replayed: float) -> None:
    """Bronze hours in `root` (a lakehouse data dir); each hour after the first replays a share of the hour before."""
    generator = EventGenerator(load_population(root, BUNDLED_SAMPLE), invalid_rate=invalid_rate, seed=7)
    lakehouse = LakehouseResource(data_dir=str(root))
    earlier = None
    for key, n in hours.items():
        start = datetime.strptime(key, "%Y-%m-%d-%H:%M").replace(tzinfo=UTC)
        replay = []
        if earlier is not None and replayed > 0:
            every = max(1, int(1 / replayed))
            replay = [(t, k, v) for t, k, v in zip(earlier["topic"], earlier["key"], earlier["value"], strict=True)
                      ][::every][: int(n * replayed)]
        columns = bronze_hour(generator, n, start, replay)
        write_bronze(columns, partition_path(lakehouse, "events", "bronze", key))
        earlier = columns


# ---------------------------------------------------------------------------------------------------------------


def same_outputs(a: LakehouseResource, b: LakehouseResource, key: str) -> list[str]:
    """Differences between the two lakehouses' silver and dead-letter rows of one hour (empty when identical)."""
    problems = []
    with duckdb.connect() as con:
        for table in ("events", "events_rejected"):
            left = str(a.table_path("silver", table) / hour_folder(key) / "*.parquet")
            right = str(b.table_path("silver", table) / hour_folder(key) / "*.parquet")
            schemas = [con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [p]).fetchall() for p in (left, right)]
            if schemas[0] != schemas[1]:
                problems.append(f"{table} {key}: schemas differ: {schemas[0]} vs {schemas[1]}")
                continue
            for x, y in ((left, right), (right, left)):
                n = con.execute("SELECT count(*) FROM (SELECT * FROM read_parquet(?) EXCEPT ALL "
                                "SELECT * FROM read_parquet(?))", [x, y]).fetchone()[0]
                if n:
                    problems.append(f"{table} {key}: {n} rows of {x} not in {y}")
    return problems


def cpu_seconds(jvm_pid: int) -> float:
    """CPU time used so far by Spark's JVM (driver and executor threads) and this process (py4j, DuckDB)."""
    fields = Path(f"/proc/{jvm_pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = os.times()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") + own.user + own.system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the large hour")
    parser.add_argument("--small-events", type=int, default=13_000, help="events in the small hour")
    parser.add_argument("--repeat", type=int, default=3, help="passes of each plan; the best one counts")
    parser.add_argument("--invalid-rate", type=float, default=0.02)
    parser.add_argument("--replayed", type=float, default=0.005,
                        help="share of the hour that repeats records of the previous hour")
    parser.add_argument("--connect", action="store_true",
                        help="run both plans over a Spark Connect server started for the benchmark (the live path's "
                             "warm Spark) instead of a local session in this process")
    parser.add_argument("--out", type=Path, help="also write the results as Markdown here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="reco-silver-bench-"))
    previous, large, small = "2026-11-23-10:00", "2026-11-23-11:00", "2026-11-23-12:00"
    started = time.perf_counter()
    build_bronze(work / "old", {previous: args.events // 10, large: args.events, small: args.small_events},
                 args.invalid_rate, args.replayed)
    shutil.copytree(work / "old" / "lakehouse" / "bronze", work / "new" / "lakehouse" / "bronze")
    print(f"bronze hours built in {time.perf_counter() - started:.0f} s under {work}", flush=True)
    plans = {"old": (baseline_materialize_hour, LakehouseResource(data_dir=str(work / "old"))),
             "new": (silver_events.materialize_hour, LakehouseResource(data_dir=str(work / "new")))}
    lines = []

    def report(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    server = None
    if args.connect:
        server = ConnectServer(work / "connect", port=free_port())
        server.up(log=lambda message: None)
        os.environ["SPARK_REMOTE"] = server.url  # as scripts/run.sh sets it for Dagster runs
        spark = spark_session_from_config(spark_config())
        jvm_pid = server.read_pid()
    else:
        spark = spark_session_from_config(spark_config(remote=False))
        jvm_pid = spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()
    try:
        for materialize, lakehouse in plans.values():  # the previous hour, which both plans dedup against; warm-up
            materialize(previous, lakehouse, spark)
        times = {(name, key): [] for name in plans for key in (large, small)}
        cpu = {(name, key): [] for name in plans for key in (large, small)}
        counts = {}
        for round_ in range(args.repeat):
            order = list(plans) if round_ % 2 == 0 else list(reversed(plans))
            for key in (large, small):  # the small hour's previous hour is the large one
                for name in order:
                    materialize, lakehouse = plans[name]
                    gc.collect()
                    c0, t0 = cpu_seconds(jvm_pid), time.perf_counter()
                    counts[(name, key)] = materialize(key, lakehouse, spark)
                    times[(name, key)].append(time.perf_counter() - t0)
                    cpu[(name, key)].append(cpu_seconds(jvm_pid) - c0)
                    print(f"  pass {round_ + 1} {name} {key}: {times[(name, key)][-1]:.2f} s, "
                          f"CPU {cpu[(name, key)][-1]:.1f} s", flush=True)
        problems = [p for key in (large, small) for p in same_outputs(plans["old"][1], plans["new"][1], key)]
        for key in (large, small):
            old, new = counts[("old", key)], counts[("new", key)]
            if old != new:
                problems.append(f"{key}: counts differ: old {old}, new {new}")
        load = Path("/proc/loadavg").read_text().split()[:3]
        report(f"- large hour: {counts[('new', large)]['bronze']:,} bronze records → "
               f"{counts[('new', large)]['silver']:,} silver, {counts[('new', large)]['rejected']:,} rejected "
               f"({counts[('new', large)]['reasons']})")
        for key, label in ((large, "large hour"), (small, "small hour")):
            n = counts[("new", key)]["bronze"]
            old_s, new_s = min(times[("old", key)]), min(times[("new", key)])
            old_c, new_c = min(cpu[("old", key)]), min(cpu[("new", key)])
            report(f"- {label} ({n:,} events), best of {args.repeat}: old plan {old_s:.2f} s "
                   f"({n / old_s:,.0f} ev/s), new plan {new_s:.2f} s ({n / new_s:,.0f} ev/s) → "
                   f"**{old_s / new_s:.2f}×**; CPU (JVM + Python) old {old_c:.1f} s, new {new_c:.1f} s → "
                   f"{old_c / new_c:.2f}× (all passes, wall: old {', '.join(f'{s:.1f}' for s in times[('old', key)])}"
                   f"; new {', '.join(f'{s:.1f}' for s in times[('new', key)])})")
        report(f"- outputs identical (silver rows, dead-letter rows with their details, counts): "
               f"{'yes' if not problems else 'NO'}; load average at the end {' '.join(load)}")
        for p in problems:
            report(f"  - {p}")
    finally:
        spark.stop()
        if server:
            server.down(log=lambda message: None)
        shutil.rmtree(work, ignore_errors=True)
    if args.out:
        header = (f"# silver_events plan comparison ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, 2 cores, "
                  f"{args.events:,} + {args.small_events:,} events, "
                  f"{'Spark Connect server' if args.connect else 'local Spark session'})\n\n")
        args.out.write_text(header + "\n".join(lines) + "\n")
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
