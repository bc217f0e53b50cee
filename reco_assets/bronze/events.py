"""Bronze events: the raw Kafka records of each broker hour, read as exact offset ranges with Spark's Kafka source.

Two Delta tables, partitioned by hour: `bronze.events` (the records) and `bronze.event_ranges` (per topic-partition,
the offset range the hour was landed from). The records commit first: a run killed in between leaves the older
ranges, which the next run's guard and checks still read correctly.
"""

import json
import os
import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import pyarrow as pa
from dagster_pyspark import LazyPySparkResource
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from reco_assets.kafka.client import KafkaResource, OffsetRange
from reco_assets.lakehouse import LakehouseResource, retry_on_conflict
from reco_assets.lakehouse.hours import (
    HOUR_COLUMN,
    hour_key,
    hour_start,
    hour_value,
    hourly_events,
    is_live_run,
    value_hour,
)

# The event assets' steps share this concurrency pool (limit 1 in dagster.yaml): one at a time across all runs.
EVENT_HOURS_POOL = "lakehouse_event_hours"
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
RANGES_SCHEMA = pa.schema([
    ("topic", pa.string()), ("partition", pa.int32()), ("start_offset", pa.int64()), ("end_offset", pa.int64()),
    ("records", pa.int64()), ("closed", pa.bool_()), ("complete", pa.bool_()),
    ("landed_at", pa.timestamp("us", tz="UTC")), ("bootstrap_servers", pa.string()), (HOUR_COLUMN, pa.string()),
])
# A live run reads its new records in the run's process (KafkaResource.read_ranges) up to this many; a larger
# backlog (the sensor was stopped a while) is landed by Spark's Kafka source, as the hour whole.
LIVE_READ_MAX_RECORDS = int(os.environ.get("RECO_LIVE_READ_MAX_RECORDS", "200000"))


def range_rows(rows: list[tuple]) -> pa.Table:
    """bronze.event_ranges rows (tuples in RANGES_SCHEMA's order) as an Arrow table."""
    return pa.Table.from_pylist([dict(zip(RANGES_SCHEMA.names, row, strict=True)) for row in rows], RANGES_SCHEMA)


class PartialHourError(RuntimeError):
    """Kafka no longer holds all of an hour that bronze already keeps in full."""


def held_ranges(lakehouse: LakehouseResource, partition_key: str) -> dict[tuple, tuple]:
    """(topic, partition) -> [start, end) that bronze holds for the hour: from bronze.event_ranges, or, for an hour
    whose records committed without their ranges (a killed run), from the records' offsets."""
    rows = [r for r in lakehouse.table("bronze.event_ranges").rows_of_hours([partition_key]) if r["records"] > 0]
    if rows:
        return {(r["topic"], r["partition"]): (r["start_offset"], r["end_offset"]) for r in rows}
    events = lakehouse.table("bronze.events")
    version = events.version()
    if version is None:
        return {}
    offsets = events.arrow([partition_key], version, ["topic", "partition", "offset"]) \
        .group_by(["topic", "partition"]).aggregate([("offset", "min"), ("offset", "max")])
    return {(r["topic"], r["partition"]): (r["offset_min"], r["offset_max"] + 1) for r in offsets.to_pylist()}


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


def refuse_partial_overwrite(partition_key: str, held: dict[tuple, tuple], ranges: list[OffsetRange],
                             log_start: dict) -> None:
    """Never replace a complete bronze hour with less than it holds (retention may have deleted records)."""
    for r in ranges:
        old = held.get((r.topic, r.partition))
        if old and old[1] > old[0] and (r.start > old[0] or r.end < old[1]):
            raise PartialHourError(
                f"{r.topic}/{r.partition}: bronze holds offsets [{old[0]}, {old[1]}) of hour "
                f"{partition_key}, but Kafka now offers only [{r.start}, {r.end}) (log starts at "
                f"{log_start[(r.topic, r.partition)]}; retention deleted the rest). The existing partition is kept.")


def neighbour_problems(lakehouse: LakehouseResource, partition_key: str,
                       ranges: list[OffsetRange]) -> tuple[list[str], list[str]]:
    """(neighbour hours compared, problems): this hour's ranges must start where the previous hour's end and end
    where the next hour's start."""
    start = hour_start(partition_key)
    neighbours = {hour_key(start - timedelta(hours=1)): ("start", "end_offset"),
                  hour_key(start + timedelta(hours=1)): ("end", "start_offset")}
    rows = lakehouse.table("bronze.event_ranges").rows_of_hours(list(neighbours))
    problems, compared = [], sorted({value_hour(r["hour"]) for r in rows})
    for row in rows:
        mine_attr, theirs_column = neighbours[value_hour(row["hour"])]
        for r in ranges:
            mine = getattr(r, mine_attr)
            if (r.topic, r.partition) == (row["topic"], row["partition"]) and row[theirs_column] != mine:
                problems.append(f"{r.topic}/{r.partition}: {mine_attr} {mine} vs {row['hour']}:00 "
                                f"{theirs_column} {row[theirs_column]}")
    return compared, problems


def _ranges_table(ranges: list[OffsetRange]) -> str:
    lines = ["| topic | partition | start | end | records |", "|---|---|---|---|---|"]
    lines += [f"| {r.topic} | {r.partition} | {r.start} | {r.end} | {r.count} |" for r in ranges]
    return "\n".join(lines)


def appendable(held: dict[tuple, tuple], ranges: list[OffsetRange], held_records: int) -> list[OffsetRange] | None:
    """The ranges still to land when the hour can grow by appending them to what bronze holds, else None.

    Only when bronze holds a prefix of each of the hour's ranges (the same starts, no end past the log's; none at
    all for a new hour) and its records are exactly those of its ranges: an earlier run killed between its two
    commits left records without their ranges, and then the hour is replaced whole.
    """
    if sum(end - start for start, end in held.values()) != held_records:
        return None
    now = {(r.topic, r.partition): r for r in ranges}
    if not held.keys() <= now.keys():
        return None
    rest = []
    for key, r in now.items():
        start, end = held.get(key, (r.start, r.start))
        if start != r.start or end > r.end:
            return None
        rest.append(OffsetRange(r.topic, r.partition, end, r.end))
    return rest


def materialize_hour(partition_key: str, lakehouse: LakehouseResource, spark: SparkSession,
                     kafka: KafkaResource, log=None, append: bool = False) -> dict:
    """Land one hour in one commit of its records, then one of its ranges; return what was landed.

    With `append` (the open hour's live runs), only the records past those bronze holds are read, in this process,
    and appended, when they can be (`appendable`, at most LIVE_READ_MAX_RECORDS); otherwise, and always for other
    runs, Spark reads the hour and replaces it whole.
    """
    window = hourly_events.time_window_for_partition_key(partition_key)
    offsets = kafka.offsets()
    start_ms, end_ms = int(window.start.timestamp() * 1000), int(window.end.timestamp() * 1000)
    ranges = offsets.ranges(start_ms, end_ms)
    log_start = offsets.start([(r.topic, r.partition) for r in ranges])
    held = held_ranges(lakehouse, partition_key)
    refuse_partial_overwrite(partition_key, held, ranges, log_start)
    # Retention may have cut this hour's beginning when its range starts where the log now starts.
    maybe_truncated = [f"{r.topic}/{r.partition}" for r in ranges
                       if log_start[(r.topic, r.partition)] > 0 and r.start == log_start[(r.topic, r.partition)]]
    closed = time.time() * 1000 >= end_ms + CLOSE_GRACE.total_seconds() * 1000
    records = sum(r.count for r in ranges)
    events = lakehouse.table("bronze.events")
    version = events.version()
    held_records = events.hour_counts([partition_key], version).get(partition_key, 0) if version is not None else 0
    rest = appendable(held, ranges, held_records) if append and not closed and version is not None else None
    new = records if rest is None else sum(r.count for r in rest)
    if new > LIVE_READ_MAX_RECORDS:
        rest = None
    commit = None
    if rest is not None and new:
        rows = kafka.read_ranges(rest)
        rows = rows.append_column(HOUR_COLUMN, pa.array([hour_value(partition_key)] * rows.num_rows, pa.string()))
        commit = events.append_to_hour(rows, partition_key, log)
        landed = events.hour_counts([partition_key], commit.version).get(partition_key, 0)
        if landed != records:  # another writer changed the hour meanwhile: land it whole instead
            if log:
                log.warning(f"hour {partition_key}: bronze holds {landed} records after the append, not {records}; "
                            "replacing the hour whole")
            rest = None
    if rest is None:
        new = records
        rows = read_kafka_ranges(spark, kafka, ranges).select("*", F.lit(hour_value(partition_key)).alias(HOUR_COLUMN))
        commit = events.replace_hours(rows, [partition_key], log)
        if commit.rows != records:
            raise RuntimeError(f"hour {partition_key}: Kafka ranges hold {records} records but {commit.rows} were "
                               f"written (bronze.events version {commit.version})")
    landed_at = datetime.now(UTC)
    rows = [(r.topic, r.partition, r.start, r.end, r.count, closed, f"{r.topic}/{r.partition}" not in maybe_truncated,
             landed_at, kafka.bootstrap_servers, hour_value(partition_key)) for r in ranges]
    ranges_table = lakehouse.table("bronze.event_ranges")
    if commit is not None or not ranges_table.rows_of_hours([partition_key]):  # or a killed run left none
        ranges_table.replace_hours(range_rows(rows), [partition_key], log)
    if rest is not None and new:
        compacted = events.compact_hour(partition_key)
        if compacted and log:
            log.info(f"hour {partition_key}: compacted {compacted} files of the live runs' appends")
    return {"hour": partition_key, "ranges": ranges, "records": records, "new_records": new,
            "appended": rest is not None, "closed": closed, "maybe_truncated": maybe_truncated,
            "version": commit.version if commit else version}


# The event topics themselves, outside Dagster's control: kafka_events_sensor records their end offsets and the lag
# of bronze behind them as observations, which the UI plots.
kafka_event_topics = dg.AssetSpec(
    "kafka_event_topics", group_name="bronze", kinds={"kafka"},
    description="The event topics (events_views, events_clicks, events_ratings). kafka_events_sensor observes "
                "their retained records and bronze's lag behind them (records not landed yet), per topic.",
)


@dg.asset(
    partitions_def=hourly_events,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[kafka_event_topics],
    group_name="bronze",
    kinds={"kafka", "spark", "delta"},
    pool=EVENT_HOURS_POOL,
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
    hours, compared, problems = [], set(), []
    append = is_live_run(context)
    # A single-run backfill hands over many hours: land them in order in this one Spark session.
    for partition_key in context.partition_keys:
        try:
            landed = retry_on_conflict(lambda key=partition_key: materialize_hour(key, lakehouse, spark, kafka,
                                                                                  context.log, append), context.log)
        except PartialHourError as error:
            raise dg.Failure(description=str(error)) from error
        if landed["maybe_truncated"]:
            context.log.warning(f"hour {partition_key}: retention may have deleted its first records in "
                                f"{', '.join(landed['maybe_truncated'])}")
        context.log.info(f"hour {partition_key}: {landed['records']} records, "
                         f"{'appended' if landed['appended'] else 'written'} {landed['new_records']} "
                         f"(bronze.events version {landed['version']})")
        hours.append(landed)
        neighbours, found = neighbour_problems(lakehouse, partition_key, landed["ranges"])
        compared.update(neighbours)
        problems += found
    seconds = time.monotonic() - started
    records = sum(h["records"] for h in hours)
    per_topic = {}
    for landed in hours:
        for r in landed["ranges"]:
            per_topic[r.topic] = per_topic.get(r.topic, 0) + r.count
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(records),
            "delta_version": dg.MetadataValue.int(hours[-1]["version"]),
            "table": "bronze.events",
            "path": dg.MetadataValue.path(lakehouse.table("bronze.events").uri),
            "hours": ", ".join(h["hour"] for h in hours),
            "offset_ranges": dg.MetadataValue.md("\n\n".join(f"**{h['hour']}**\n\n{_ranges_table(h['ranges'])}"
                                                              for h in hours)),
            **{f"records_{topic}": dg.MetadataValue.int(n) for topic, n in sorted(per_topic.items())},
            "new_records": dg.MetadataValue.int(sum(h["new_records"] for h in hours)),
            "appended": all(h["appended"] for h in hours),
            "hour_closed": all(h["closed"] for h in hours),
            "complete": not any(h["maybe_truncated"] for h in hours),
            "seconds": round(seconds, 2),
            "records_per_second": round(sum(h["new_records"] for h in hours) / seconds, 1) if seconds else 0.0,
        },
        check_results=[dg.AssetCheckResult(
            check_name="offset_ranges_meet_neighbours",
            passed=not problems,
            metadata={"hours_checked": len(hours), "neighbours_compared": ", ".join(sorted(compared)) or "none",
                      "problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems) or "none")},
        )],
    )

