"""Bronze events: the raw Kafka records of each broker hour, read as exact offset ranges with Spark's Kafka source."""

import json
import time
from datetime import timedelta
from pathlib import Path

import dagster as dg
from dagster_pyspark import LazyPySparkResource
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from reco_assets.catalog import register_views
from reco_assets.kafka.client import KafkaResource, OffsetRange
from reco_assets.partitions import hour_folder, hour_key, hour_start, hourly_events
from reco_assets.resources import LakehouseResource
from reco_assets.tables import duckdb_scalar

RANGES_NAME = "_ranges.json"
# An hour counts as closed this long after its end: LogAppendTime is the broker's clock, allow for skew.
CLOSE_GRACE = timedelta(seconds=10)

BRONZE_EVENT_SCHEMA = T.StructType([
    T.StructField("topic", T.StringType()),
    T.StructField("partition", T.IntegerType()),
    T.StructField("offset", T.LongType()),
    T.StructField("timestamp", T.TimestampType()),
    T.StructField("key", T.BinaryType()),
    T.StructField("value", T.BinaryType()),
])


class PartialHourError(RuntimeError):
    """Kafka no longer holds all of an hour that bronze already keeps in full."""


def partition_path(lakehouse: LakehouseResource, table: str, layer: str, partition_key: str) -> Path:
    return lakehouse.table_path(layer, table) / hour_folder(partition_key)


def read_ranges(path: Path) -> dict | None:
    """The `_ranges.json` a bronze hour was written with (None when the hour is not materialized)."""
    try:
        return json.loads((path / RANGES_NAME).read_text())
    except FileNotFoundError:
        return None


def read_kafka_ranges(spark: SparkSession, kafka: KafkaResource, ranges: list[OffsetRange]) -> DataFrame:
    """Exactly the records of `ranges`, one Spark task per topic-partition (JVM consumers, no Python loop)."""
    ranges = [r for r in ranges if r.count > 0]
    if not ranges:
        return spark.createDataFrame([], BRONZE_EVENT_SCHEMA)
    assign, starting, ending = {}, {}, {}
    for r in ranges:
        assign.setdefault(r.topic, []).append(r.partition)
        starting.setdefault(r.topic, {})[str(r.partition)] = r.start
        ending.setdefault(r.topic, {})[str(r.partition)] = r.end
    return (
        spark.read.format("kafka")
        .options(**kafka.spark_options())
        .option("assign", json.dumps(assign))
        .option("startingOffsets", json.dumps(starting))
        .option("endingOffsets", json.dumps(ending))
        .load()
        .select("topic", "partition", "offset", "timestamp", "key", "value")
    )


def refuse_partial_overwrite(previous: dict | None, ranges: list[OffsetRange], log_start: dict) -> None:
    """Never replace a complete bronze hour with less than it holds (retention may have deleted records)."""
    if not previous:
        return
    kept = {(r["topic"], r["partition"]): r for r in previous["ranges"]}
    for r in ranges:
        old = kept.get((r.topic, r.partition))
        if old and old["end"] > old["start"] and (r.start > old["start"] or r.end < old["end"]):
            raise PartialHourError(
                f"{r.topic}/{r.partition}: bronze holds offsets [{old['start']}, {old['end']}) of hour "
                f"{previous['hour']}, but Kafka now offers only [{r.start}, {r.end}) (log starts at "
                f"{log_start[(r.topic, r.partition)]}; retention deleted the rest). The existing partition is kept.")


def _neighbour_check(lakehouse: LakehouseResource, partition_key: str,
                     ranges: list[OffsetRange]) -> dg.AssetCheckResult:
    """This hour's ranges must start where the previous hour's end and end where the next hour's start."""
    start = hour_start(partition_key)
    problems, compared = [], []
    for neighbour, mine_attr, theirs_attr in ((start - timedelta(hours=1), "start", "end"),
                                              (start + timedelta(hours=1), "end", "start")):
        other = read_ranges(partition_path(lakehouse, "events", "bronze", hour_key(neighbour)))
        if other is None:
            continue
        compared.append(other["hour"])
        theirs = {(r["topic"], r["partition"]): r[theirs_attr] for r in other["ranges"]}
        for r in ranges:
            mine = getattr(r, mine_attr)
            if theirs.get((r.topic, r.partition), mine) != mine:
                problems.append(f"{r.topic}/{r.partition}: {mine_attr} {mine} vs {other['hour']} "
                                f"{theirs_attr} {theirs[(r.topic, r.partition)]}")
    return dg.AssetCheckResult(
        check_name="offset_ranges_meet_neighbours",
        passed=not problems,
        metadata={"neighbours_compared": ", ".join(compared) or "none materialized",
                  "problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems) or "none")},
    )


def _ranges_table(ranges: list[OffsetRange]) -> str:
    lines = ["| topic | partition | start | end | records |", "|---|---|---|---|---|"]
    lines += [f"| {r.topic} | {r.partition} | {r.start} | {r.end} | {r.count} |" for r in ranges]
    return "\n".join(lines)


def materialize_hour(partition_key: str, lakehouse: LakehouseResource, spark: SparkSession,
                     kafka: KafkaResource) -> tuple[dict, list[OffsetRange]]:
    """Land one hour; return its `_ranges.json` content and ranges."""
    window = hourly_events.time_window_for_partition_key(partition_key)
    offsets = kafka.offsets()
    start_ms, end_ms = int(window.start.timestamp() * 1000), int(window.end.timestamp() * 1000)
    ranges = offsets.ranges(start_ms, end_ms)
    log_start = offsets.start([(r.topic, r.partition) for r in ranges])
    final = partition_path(lakehouse, "events", "bronze", partition_key)
    refuse_partial_overwrite(read_ranges(final), ranges, log_start)
    # Retention may have cut this hour's beginning when its range starts where the log now starts.
    maybe_truncated = [f"{r.topic}/{r.partition}" for r in ranges
                       if log_start[(r.topic, r.partition)] > 0 and r.start == log_start[(r.topic, r.partition)]]
    closed = time.time() * 1000 >= end_ms + CLOSE_GRACE.total_seconds() * 1000
    manifest = {
        "hour": partition_key,
        "closed": closed,
        "complete": not maybe_truncated,
        "maybe_truncated": maybe_truncated,
        "bootstrap_servers": kafka.bootstrap_servers,
        "ranges": [{"topic": r.topic, "partition": r.partition, "start": r.start, "end": r.end} for r in ranges],
        "records": sum(r.count for r in ranges),
        "landed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with lakehouse.staged_dir(final) as staged:
        read_kafka_ranges(spark, kafka, ranges).write.mode("overwrite").parquet(str(staged))
        written = duckdb_scalar("SELECT count(*) FROM read_parquet(?)", str(staged / "*.parquet"))
        if written != manifest["records"]:
            raise RuntimeError(f"hour {partition_key}: Kafka ranges hold {manifest['records']} records but "
                               f"{written} were written; nothing was replaced")
        (staged / RANGES_NAME).write_text(json.dumps(manifest, indent=2))
    return manifest, ranges


@dg.asset(
    partitions_def=hourly_events,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="bronze",
    kinds={"kafka", "spark", "parquet"},
    check_specs=[dg.AssetCheckSpec("offset_ranges_meet_neighbours", asset="bronze_events",
                                   description="no gap and no overlap with the previous and next hour")],
)
def bronze_events(
    context: dg.AssetExecutionContext, lakehouse: LakehouseResource, pyspark: LazyPySparkResource,
    kafka: KafkaResource,
):
    """Raw Kafka records (topic, partition, offset, broker timestamp, key, value bytes) of each broker hour.

    The hour is the exact offset range `[offsets_for_times(start), offsets_for_times(end))` of every
    topic-partition, so re-materializing an hour reads the same records while Kafka retains them.
    """
    spark = pyspark.spark_session
    started = time.monotonic()
    hours, checks = [], []
    # A single-run backfill hands over many hours: land them in order in this one Spark session.
    for partition_key in context.partition_keys:
        try:
            manifest, ranges = materialize_hour(partition_key, lakehouse, spark, kafka)
        except PartialHourError as error:
            raise dg.Failure(description=str(error)) from error
        if manifest["maybe_truncated"]:
            context.log.warning(f"hour {partition_key}: retention may have deleted its first records in "
                                f"{', '.join(manifest['maybe_truncated'])}")
        context.log.info(f"hour {partition_key}: {manifest['records']} records")
        hours.append((partition_key, manifest, ranges))
        checks.append(_neighbour_check(lakehouse, partition_key, ranges))
    register_views(lakehouse, ["bronze.events"], context.log)
    seconds = time.monotonic() - started
    records = sum(manifest["records"] for _, manifest, _ in hours)
    per_topic = {}
    for _, _, ranges in hours:
        for r in ranges:
            per_topic[r.topic] = per_topic.get(r.topic, 0) + r.count
    problems = [c.metadata["problems"].value for c in checks if not c.passed]
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(records),
            "path": dg.MetadataValue.path(str(lakehouse.table_path("bronze", "events"))),
            "hours": ", ".join(key for key, _, _ in hours),
            "offset_ranges": dg.MetadataValue.md("\n\n".join(f"**{key}**\n\n{_ranges_table(ranges)}"
                                                              for key, _, ranges in hours)),
            **{f"records_{topic}": dg.MetadataValue.int(n) for topic, n in sorted(per_topic.items())},
            "hour_closed": all(manifest["closed"] for _, manifest, _ in hours),
            "complete": all(manifest["complete"] for _, manifest, _ in hours),
            "seconds": round(seconds, 2),
            "records_per_second": round(records / seconds, 1) if seconds else 0.0,
        },
        check_results=[dg.AssetCheckResult(
            check_name="offset_ranges_meet_neighbours",
            passed=not problems,
            metadata={"hours_checked": len(checks), "problems": dg.MetadataValue.md("\n".join(problems) or "none")},
        )],
    )
