"""Silver events: parsed, contract-checked events per broker hour, unique by event_id across the dedupe window, and
a dead letter for every other record; both in `silver.event_outcomes`, one commit per hour."""

import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash
from dagster_pyspark import LazyPySparkResource
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from reco_assets.bronze.events import EVENT_HOURS_POOL, bronze_events
from reco_assets.kafka.client import RECORD_COLUMNS, RETENTION_HOURS
from reco_assets.lakehouse import ConcurrentWriteError, LakehouseResource, Table, retry_on_conflict
from reco_assets.lakehouse.hours import (
    HOUR_COLUMN,
    HOUR_PATTERN,
    hour_key,
    hour_start,
    hour_value,
    hourly_events,
    hours_between,
    is_live_run,
)
from reco_assets.lakehouse.tables import EVENT_COLUMNS, OUTCOME_COLUMNS
from reco_assets.silver.event_contract import validate_events, validate_fast
from reco_assets.silver.increment import COORDINATES, duplicate_details, split_new

# Hours of up to this many records broadcast their event hashes, candidates and duplicates into the joins, so that
# neither the window's hashes nor the checked rows are shuffled; larger hours leave the join strategy to adaptive
# execution.
BROADCAST_RECORDS = 2_000_000
IN_MEMORY_RECORDS_SETTING = "RECO_SILVER_IN_MEMORY_RECORDS"
# By Spark jobs, an hour of fewer records is written by one task (two files: accepted, rejected); a larger one keeps
# the partitions it was read in, written in parallel (coalescing those into fewer files left them uneven).
ONE_TASK_RECORDS = 500_000
# Records that Arrow cannot prove valid go to Spark from memory. Over more than this many, Spark's optimizer would run
# the check itself on the driver, without generated code (ConvertToLocalRelation; in a probe, 12-19 s for 100k
# records against 4 s repartitioned, docs/benchmarks.md), so they are repartitioned.
LOCAL_RELATION_RECORDS = 10_000
XXHASH64_SEED = 42  # Spark's xxhash64
PLAIN_EVENT_ID = re.compile(rb'"event_id"\s*:\s*"([^"\\]*)"')  # an id spelled without escapes, in raw bytes
NO_DUPLICATES = pa.table({"topic": pa.array([], pa.string()), "partition": pa.array([], pa.int32()),
                          "offset": pa.array([], pa.int64()), "detail": pa.array([], pa.string())})
NONE_SEEN = pa.table({"event_id": pa.array([], pa.string()), HOUR_COLUMN: pa.array([], pa.string())})


def read_events(spark: SparkSession, lakehouse: LakehouseResource, partition_keys: list[str] | None = None,
                version: int | None = None) -> DataFrame:
    """silver.events (accepted events) of these hours (default: all), with `hour` as the hour's start timestamp."""
    table = lakehouse.table("silver.event_outcomes")
    events = (table.read(spark, version, view="silver.events") if partition_keys is None
              else table.read_hours(spark, partition_keys, version, view="silver.events"))
    return events.withColumn(HOUR_COLUMN, F.to_timestamp(HOUR_COLUMN, HOUR_PATTERN))


def latest_event(lakehouse: LakehouseResource) -> tuple[int, str, datetime] | None:
    """(silver.event_outcomes' version, the latest hour with accepted events, their latest `received_at`), from
    the log and that hour's files; None while silver holds no events."""
    table = lakehouse.table("silver.event_outcomes")
    version = table.version()
    latest = None if version is None else table.latest_hour(version, rejected=False)
    if latest is None:
        return None
    received = table.arrow([latest], version, ["received_at"], where=~pc.field("rejected"))["received_at"]
    return version, latest, pc.max(received).as_py().astimezone(UTC)


def recent_events(spark: SparkSession, lakehouse: LakehouseResource,
                  window_hours: float) -> tuple[DataFrame | None, datetime | None]:
    """Silver events received within `window_hours` before the latest one, and that latest `received_at`, read at
    one version. (None, None) when silver holds no events yet."""
    latest = latest_event(lakehouse)
    if latest is None:
        return None, None
    version, latest_hour, as_of = latest
    since = as_of - timedelta(hours=window_hours)
    events = read_events(spark, lakehouse, hours_between(hour_key(since), latest_hour), version)
    return events.where(F.col("received_at") > F.lit(since)), as_of


def bronze_hour(spark: SparkSession, lakehouse: LakehouseResource, partition_key: str, version: int) -> DataFrame:
    """One bronze hour's records as silver checks them: Kafka's timestamp as `received_at`, no hour column."""
    return (lakehouse.table("bronze.events").read_hours(spark, [partition_key], version).drop(HOUR_COLUMN)
            .withColumnRenamed("timestamp", "received_at"))


def bronze_records(lakehouse: LakehouseResource, partition_key: str, version: int,
                   where: pc.Expression | None = None) -> pa.Table:
    """`bronze_hour` read into memory without Spark (only the records matching `where`)."""
    records = lakehouse.table("bronze.events").arrow([partition_key], version, RECORD_COLUMNS, where)
    return records.rename_columns(["received_at" if c == "timestamp" else c for c in records.column_names])


def _hinted(small: DataFrame, broadcast: bool) -> DataFrame:
    """`small` with a broadcast hint when the hour is small enough (`BROADCAST_RECORDS`)."""
    return F.broadcast(small) if broadcast else small


def dedupe_window(partition_key: str, window_hours: float) -> tuple[str, str]:
    """The first and last `hour` values that can hold a copy received within `window_hours` of an event of this
    hour (the hour itself is left out by the caller)."""
    start, reach = hour_start(partition_key), timedelta(hours=window_hours)
    return hour_value(hour_key(start - reach)), hour_value(hour_key(start + timedelta(hours=1) + reach
                                                                    - timedelta(microseconds=1)))


def window_events(outcomes: DataFrame, partition_key: str, window_hours: float) -> DataFrame:
    """event_hash, event_id, hour of the accepted events of every other hour within the window."""
    first, last = dedupe_window(partition_key, window_hours)
    hour = F.col(HOUR_COLUMN)
    return (outcomes.where(~F.col("rejected") & hour.between(first, last) & (hour != hour_value(partition_key)))
            .select("event_hash", "event_id", HOUR_COLUMN))


def duplicate_rows(checked: DataFrame, window: DataFrame | None, broadcast: bool = True) -> pa.Table:
    """The hour's duplicates (their coordinates and the dead letter's detail), from its contract-checked records
    (`contract_checked`, with `received_at`) and the window (`window_events`).

    Duplicates are rare, so only 64-bit hashes move, and the rules run in memory (`duplicate_details`): the hour's
    hashes come to the driver, where those with more than one copy are found; the window's events that share a hash
    with the hour come back from Spark; all the valid copies with one of these hashes then come to the driver, and
    their exact ids decide (a hash collision only adds a candidate).
    """
    spark = checked.sparkSession
    valid = checked.where(F.col("reject_reason").isNull())
    hashes = np.sort(valid.select("event_hash").toArrow()["event_hash"].to_numpy())
    repeated = hashes[1:] == hashes[:-1]
    candidates = np.unique(hashes[1:][repeated])
    seen = NONE_SEEN
    if window is not None and len(hashes):
        distinct = spark.createDataFrame(pa.table({"event_hash": hashes[np.concatenate(([True], ~repeated))]}))
        seen = window.join(_hinted(distinct, broadcast), "event_hash", "left_semi").toArrow()
        candidates = np.union1d(candidates, seen["event_hash"].to_numpy())
    if not len(candidates):
        return NO_DUPLICATES
    candidate_hashes = spark.createDataFrame(pa.table({"event_hash": candidates}))
    copies = (valid.join(_hinted(candidate_hashes, broadcast), "event_hash", "left_semi")
              .select("event_id", "received_at", *COORDINATES).toArrow())
    details = duplicate_details(copies, seen)
    duplicates = copies.select(COORDINATES).append_column("detail", details)
    return duplicates.filter(pc.is_valid(details))


def outcome_rows(checked: DataFrame, duplicates: pa.Table, partition_key: str, broadcast: bool = True) -> DataFrame:
    """The rows of silver.event_outcomes for one bronze hour, in one pass over its contract-checked records
    (`contract_checked`, with `received_at`): accepted, or rejected with the contract's reason, or with `duplicate`
    when `duplicate_rows` lists them. Rejected rows keep the record's raw key and value."""
    detail = F.lit(None).cast("string")
    if duplicates.num_rows:
        found = checked.sparkSession.createDataFrame(duplicates.rename_columns([*COORDINATES, "duplicate_detail"]))
        checked = checked.join(_hinted(found, broadcast), COORDINATES, "left")
        detail = F.col("duplicate_detail")
    valid, duplicate = F.col("reject_reason").isNull(), detail.isNotNull()
    accepted = valid & ~duplicate
    columns = {c: F.when(accepted, F.col(c)) for c in [*EVENT_COLUMNS, "event_hash"]}
    columns |= {
        "event_id": F.col("event_id"),  # the dead letter keeps the id of a valid record's copy
        **{c: F.when(~accepted, F.col(c)) for c in ("key", "value")},
        "reason": F.when(duplicate, F.lit("duplicate")).otherwise(F.col("reject_reason")),
        "field": F.when(duplicate, F.lit("event_id")).otherwise(F.col("reject_field")),
        "detail": F.when(duplicate, detail).otherwise(F.col("reject_detail")),
        "rejected": ~accepted,
        HOUR_COLUMN: F.lit(hour_value(partition_key)),
    }
    return checked.select(*[(columns[c] if c in columns else F.col(c)).alias(c) for c in OUTCOME_COLUMNS])


def _release(checkpointed: DataFrame) -> None:
    """Free a local checkpoint's blocks now rather than when the JVM collects it (hundreds of MB for a large hour).

    Classic Spark only, where DataFrame.unpersist() leaves them (Spark logs a warning that the checkpointed RDD cannot
    be recomputed: nothing reads it again); Spark Connect frees them once the client drops the DataFrame.
    """
    try:
        from pyspark.sql.classic.dataframe import DataFrame as ClassicDataFrame
    except ImportError:  # a Spark Connect-only client
        return
    if isinstance(checkpointed, ClassicDataFrame):
        plan = checkpointed._jdf.queryExecution().analyzed()
        if plan.getClass().getSimpleName() == "LogicalRDD":
            plan.rdd().unpersist(False)


def in_memory_records() -> int:
    """The largest hour rebuilt in the run's process (`rebuild_in_memory`) once silver.event_outcomes exists: the
    setting RECO_SILVER_IN_MEMORY_RECORDS (default 1M; -1: none), read by every run. A larger hour, or the table's
    first, is rebuilt by Spark jobs (the rest of materialize_hour)."""
    value = os.environ.get(IN_MEMORY_RECORDS_SETTING, "1000000")
    try:
        return int(value)
    except ValueError:
        raise dg.Failure(f"{IN_MEMORY_RECORDS_SETTING} must be a whole number of records, not {value!r}") from None


def materialize_hour(partition_key: str, lakehouse: LakehouseResource, spark: SparkSession,
                     window_hours: float = RETENTION_HOURS, log=None, append: bool = False) -> dict:
    """Check, deduplicate and commit one hour; return its counts and the commit's version.

    With `append` (the open hour's live runs), only the records silver does not hold yet are checked and appended
    (`append_hour`) when that gives the rows a rebuild gives; otherwise the hour is rebuilt whole.
    """
    if not lakehouse.table("bronze.event_ranges").rows_of_hours([partition_key]):
        raise dg.Failure(f"bronze_events has no hour {partition_key}; materialize it first")
    in_memory_limit = in_memory_records()
    outcomes = lakehouse.table("silver.event_outcomes")
    history_version = outcomes.version()
    # One bronze version for the count and the check, whatever bronze runs commit.
    events = lakehouse.table("bronze.events")
    bronze_version = events.version()
    records = events.hour_counts([partition_key], bronze_version).get(partition_key, 0)
    if append and history_version is not None:
        appended = append_hour(partition_key, lakehouse, spark, window_hours, log, history_version, bronze_version,
                               records)
        if appended is not None:
            return appended
    if history_version is not None and records <= in_memory_limit:
        return rebuild_in_memory(partition_key, lakehouse, outcomes, spark, window_hours, log, history_version,
                                 bronze_version, records)
    window = (window_events(outcomes.read(spark, history_version), partition_key, window_hours)
              if history_version is not None else None)
    # By Spark jobs, the contract check runs once per hour: its result is kept for the duplicate search and the
    # output as a local checkpoint (rows in executor memory, spilling to disk, with the plan cut), which is cheaper
    # to build than a cached table and makes the later plans small. Event ids are compared in lower case (the
    # contract accepts either).
    checked = contract_checked(bronze_hour(spark, lakehouse, partition_key, bronze_version)).localCheckpoint()
    try:
        broadcast = records <= BROADCAST_RECORDS
        rows = outcome_rows(checked, duplicate_rows(checked, window, broadcast), partition_key, broadcast)
        commit = outcomes.replace_hours(rows.coalesce(1) if records < ONE_TASK_RECORDS else rows, [partition_key], log)
    finally:
        _release(checked)
    refuse_overlap(spark, outcomes, partition_key, window_hours, history_version, commit.version)
    return _counts(outcomes, partition_key, commit.version, records, records, bronze_version)


def contract_checked(records: DataFrame) -> DataFrame:
    """validate_events' columns, with event ids in lower case (the contract accepts either) and their hash."""
    event_id = F.lower("event_id")
    return validate_events(records, broker_time="received_at").withColumns(
        {"event_id": event_id, "event_hash": F.xxhash64(event_id)})


def _past_held(held: pa.Table) -> pc.Expression:
    """The bronze rows past the last offset silver holds of each topic-partition, and those of the topic-partitions
    it holds none of."""
    last = held.group_by(["topic", "partition"]).aggregate([("offset", "max")])
    past, known = pc.scalar(False), pc.scalar(False)
    for topic, partition, offset in zip(*(last[c].to_pylist() for c in ("topic", "partition", "offset_max")),
                                        strict=True):
        same = (pc.field("topic") == topic) & (pc.field("partition") == partition)
        past, known = past | (same & (pc.field("offset") > offset)), known | same
    return past | ~known


def append_hour(partition_key: str, lakehouse: LakehouseResource, spark: SparkSession, window_hours: float, log,
                history_version: int, bronze_version: int, records: int) -> dict | None:
    """A live run's way: check only the bronze records past those silver holds of the hour, deduplicate them in
    memory (`split_new`) against the hour's accepted events and the window's, and append them in one commit.

    None when that cannot give the rows a rebuild gives: silver holds not exactly a prefix of each
    topic-partition's records (none, for a new hour), or a new copy of an accepted event came first; or the counts
    disagree after the append (another run wrote the hour meanwhile). The caller then rebuilds the hour.
    """
    outcomes = lakehouse.table("silver.event_outcomes")
    held = sum(outcomes.hour_counts([partition_key], history_version).values())
    if held > records:
        return None
    if held == records:
        return _counts(outcomes, partition_key, history_version, records, 0, bronze_version, True)
    mine = outcomes.arrow([partition_key], history_version, ["rejected", "event_id", "received_at", *COORDINATES])
    new = bronze_records(lakehouse, partition_key, bronze_version, _past_held(mine))
    if held + new.num_rows != records:
        return None
    rows = rows_in_memory(spark, new, mine.filter(~pc.field("rejected")), outcomes, partition_key, window_hours,
                          history_version)
    if rows is None:
        if log:
            log.info(f"hour {partition_key}: a new copy of an accepted event came first; rebuilding the hour")
        return None
    commit = outcomes.append_to_hour(rows, partition_key, log)
    if sum(outcomes.hour_counts([partition_key], commit.version).values()) != records:
        if log:
            log.warning(f"hour {partition_key}: silver does not hold bronze's {records} records after the append "
                        "(another run wrote the hour meanwhile); rebuilding the hour")
        return None
    refuse_overlap(spark, outcomes, partition_key, window_hours, history_version, commit.version)
    compacted = outcomes.compact_hour(partition_key)
    if compacted and log:
        log.info(f"hour {partition_key}: compacted {compacted} files of the live runs' appends")
    return _counts(outcomes, partition_key, commit.version, records, new.num_rows, bronze_version, True)


def rows_in_memory(spark: SparkSession, records: pa.Table, settled: pa.Table | None, outcomes: Table,
                   partition_key: str, window_hours: float, history_version: int) -> pa.Table | None:
    """silver.event_outcomes' rows for bronze records (`bronze_records`), checked and deduplicated in this process.

    The records that the fast patterns prove valid are typed by Arrow (`validate_fast`); one Spark query checks the
    others meanwhile, while delta-rs reads the window's events that share a hash with the valid ones (and with the
    ids the others spell plainly), at `history_version`. The duplicate rules then run in memory (`split_new`)
    against them and the hour's `settled` events (None: the hour is rebuilt). None as `split_new` says.
    """
    fast, taken = validate_fast(records, "received_at")
    others = records.filter(pa.array(~taken))
    with ThreadPoolExecutor(1) as spark_thread:
        checked_others = spark_thread.submit(_checked_by_spark, spark, others) if others.num_rows else None
        checked = _hashed(fast)
        hashes = pc.unique(pa.chunked_array([*checked["event_hash"].chunks, _plain_id_hashes(others)], pa.int64()))
        seen = _window_seen(outcomes, history_version, partition_key, window_hours, hashes)
        if checked_others is not None:
            checked_others = checked_others.result().cast(checked.schema)
            valid = pc.filter(checked_others["event_hash"], pc.is_null(checked_others["reject_reason"]))
            unread = pc.unique(pc.filter(valid, pc.invert(pc.is_in(valid, value_set=hashes))))  # escaped ids
            if len(unread):
                seen = pa.concat_tables([seen, _window_seen(outcomes, history_version, partition_key, window_hours,
                                                            unread)])
            checked = pa.concat_tables([checked, checked_others])
    return split_new(checked, settled, seen, hour_value(partition_key))


def _xxhash64(ids: list[bytes]) -> pa.Array:
    """Spark's xxhash64 of strings (their UTF-8 bytes)."""
    hashes = np.fromiter((xxhash.xxh64_intdigest(i, XXHASH64_SEED) for i in ids), np.uint64, len(ids))
    return pa.array(hashes.view(np.int64))


def _hashed(fast: pa.Table) -> pa.Table:
    """validate_fast's rows as contract_checked's: event ids in lower case (ASCII in the fast form) and their hash."""
    event_id = pc.ascii_lower(fast["event_id"])
    return fast.set_column(fast.schema.get_field_index("event_id"), "event_id", event_id).append_column(
        pa.field("event_hash", pa.int64(), nullable=False), _xxhash64(event_id.cast(pa.binary()).to_pylist()))


def _plain_id_hashes(records: pa.Table) -> pa.Array:
    """The hashes of the event ids that records spell without escapes, read from their raw bytes: most valid ids
    among them (an escaped one is read from the window afterwards)."""
    found = (PLAIN_EVENT_ID.search(value) for value in records["value"].to_pylist() if value)
    return _xxhash64([match.group(1).lower() for match in found if match])


def _checked_by_spark(spark: SparkSession, records: pa.Table) -> pa.Table:
    """contract_checked's rows for records in memory, by one Spark query."""
    df = spark.createDataFrame(records)
    return contract_checked(df.repartition(2) if records.num_rows > LOCAL_RELATION_RECORDS else df).toArrow()


def _window_seen(outcomes: Table, history_version: int, partition_key: str, window_hours: float,
                 hashes: pa.Array) -> pa.Table:
    """`event_id` and `hour` of the accepted events of the window's other hours whose hash is one of `hashes`, read
    at `history_version` without Spark."""
    if not len(hashes):
        return NONE_SEEN
    first, last = dedupe_window(partition_key, window_hours)
    hour = pc.field(HOUR_COLUMN)
    return outcomes.arrow(None, history_version, ["event_id", HOUR_COLUMN], where=(
        (hour >= first) & (hour <= last) & (hour != hour_value(partition_key)) & ~pc.field("rejected")
        & pc.field("event_hash").isin(hashes)))


def rebuild_in_memory(partition_key: str, lakehouse: LakehouseResource, outcomes: Table, spark: SparkSession,
                      window_hours: float, log, history_version: int, bronze_version: int, records: int) -> dict:
    """An hour's rebuild up to `in_memory_records()`: `rows_in_memory` of its bronze records and one commit by
    delta-rs replacing the hour, where the Spark way takes a checkpoint, several jobs and a Spark commit."""
    rows = rows_in_memory(spark, bronze_records(lakehouse, partition_key, bronze_version), None, outcomes,
                          partition_key, window_hours, history_version)
    commit = outcomes.replace_hours(rows, [partition_key], log)
    refuse_overlap(spark, outcomes, partition_key, window_hours, history_version, commit.version)
    return _counts(outcomes, partition_key, commit.version, records, records, bronze_version)


def refuse_overlap(spark: SparkSession, outcomes: Table, partition_key: str, window_hours: float,
                   history_version: int | None, version: int) -> None:
    """Another hour committed after the window was read: its events may duplicate this hour's. Check them now, and
    if they do, raise ConcurrentWriteError: the hour runs again on top of them (its copies then go to the dead
    letter)."""
    if version <= (-1 if history_version is None else history_version) + 1:
        return
    written = outcomes.read_hours(spark, [partition_key], version)
    mine = written.where(~F.col("rejected")).select("event_hash", "event_id")
    overlap = window_events(outcomes.read(spark, version), partition_key, window_hours) \
        .join(mine, ["event_hash", "event_id"], "left_semi").count()
    if overlap:
        raise ConcurrentWriteError(
            f"silver.event_outcomes hour {partition_key}: another hour committed {overlap} of this hour's "
            f"events at the same time (both are in version {version}); the hour must run again on top")


def _counts(outcomes: Table, partition_key: str, version: int, records: int, new: int, bronze_version: int,
            appended: bool = False) -> dict:
    """What materialize_hour returns: the hour's counts at `version` of silver.event_outcomes (three columns of
    the hour, read without Spark)."""
    written = outcomes.arrow([partition_key], version, ["rejected", "reason", "event_hash"])
    accepted = written.filter(~pc.field("rejected"))["event_hash"]
    reasons = written.filter(pc.field("rejected"))["reason"].value_counts().to_pylist()
    reasons = {r["values"]: r["counts"] for r in reasons}
    return {"bronze": records, "new": new, "appended": appended, "silver": len(accepted),
            "rejected": sum(reasons.values()), "reasons": dict(sorted(reasons.items())),
            "duplicate_ids": len(accepted) - pc.count_distinct(accepted).as_py(),  # ids in silver more than once
            "version": version, "bronze_version": bronze_version}


def reconciliation(lakehouse: LakehouseResource, partition_keys: list[str], bronze_version: int,
                   outcomes_version: int) -> dg.AssetCheckResult:
    """`reconciles_with_bronze`: per hour, bronze.events' records = silver rows + dead-letter rows, counted from the
    two tables' Delta logs at the versions the run read and wrote (independently of the run's own counts)."""
    bronze = lakehouse.table("bronze.events").hour_counts(partition_keys, bronze_version)
    outcomes = lakehouse.table("silver.event_outcomes").hour_counts(partition_keys, outcomes_version, by="rejected")
    hours = {k: (bronze.get(k, 0), outcomes.get((k, False), 0), outcomes.get((k, True), 0)) for k in partition_keys}
    unbalanced = [f"{k} (bronze {b}, silver {s}, rejected {r})" for k, (b, s, r) in hours.items() if b != s + r]
    return dg.AssetCheckResult(
        check_name="reconciles_with_bronze", passed=not unbalanced,
        metadata={"bronze": sum(h[0] for h in hours.values()), "silver": sum(h[1] for h in hours.values()),
                  "rejected": sum(h[2] for h in hours.values()), "bronze_version": bronze_version,
                  "silver_version": outcomes_version, "unbalanced_hours": "; ".join(unbalanced) or "none"})


@dg.multi_asset(
    partitions_def=hourly_events,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="silver",
    pool=EVENT_HOURS_POOL,
    specs=[
        dg.AssetSpec("silver_events", deps=[bronze_events], kinds={"spark", "delta"},
                     description="Typed events that meet their contract, unique by event_id (lower case) across "
                                 "the dedupe window (hourly, broker time): the view silver.events."),
        dg.AssetSpec("silver_events_rejected", deps=[bronze_events], kinds={"spark", "delta"},
                     description="Dead letter: every bronze record that is not in silver_events, with raw bytes, "
                                 "its Kafka coordinates, a reason code and detail: the view silver.events_rejected."),
    ],
    check_specs=[
        dg.AssetCheckSpec("event_id_unique", asset="silver_events",
                          description="event_id is unique in the hour and against every other hour of the dedupe "
                                      "window (the topics' retention)"),
        dg.AssetCheckSpec("reconciles_with_bronze", asset="silver_events",
                          description="bronze records = silver rows + rejected rows (duplicates included)"),
    ],
)
def silver_events(context: dg.AssetExecutionContext, lakehouse: LakehouseResource, pyspark: LazyPySparkResource):
    """Parse each bronze hour with Spark's JSON functions, check the contracts, deduplicate, dead-letter the rest."""
    spark = pyspark.spark_session
    started = time.monotonic()
    hours = {}
    append = is_live_run(context)
    for partition_key in context.partition_keys:
        # After a conflict, the hour is rebuilt: an append would find silver holding every record and stop.
        hours[partition_key] = counts = retry_on_conflict(
            lambda key=partition_key: materialize_hour(key, lakehouse, spark, RETENTION_HOURS, context.log, append),
            context.log,
            again=lambda key=partition_key: materialize_hour(key, lakehouse, spark, RETENTION_HOURS, context.log))
        context.log.info(f"hour {partition_key}: {counts}")
    seconds = round(time.monotonic() - started, 2)
    total = {k: sum(h[k] for h in hours.values()) for k in ("bronze", "silver", "rejected", "duplicate_ids")}
    version = max(h["version"] for h in hours.values())
    table = "\n".join(["| hour | bronze | silver | rejected | reasons | version |", "|---|---|---|---|---|---|"]
                      + [f"| {k} | {h['bronze']} | {h['silver']} | {h['rejected']} | {h['reasons']} | {h['version']} |"
                         for k, h in hours.items()])
    outcomes = lakehouse.table("silver.event_outcomes")
    yield dg.MaterializeResult(
        asset_key="silver_events",
        metadata={
            "dagster/row_count": dg.MetadataValue.int(total["silver"]),
            "delta_version": dg.MetadataValue.int(version),
            "table": "silver.event_outcomes (view silver.events)",
            "path": dg.MetadataValue.path(outcomes.uri),
            "bronze_records": dg.MetadataValue.int(total["bronze"]),
            "new_records": dg.MetadataValue.int(sum(h["new"] for h in hours.values())),
            "appended": all(h["appended"] for h in hours.values()),
            "rejected_records": dg.MetadataValue.int(total["rejected"]),
            "dedupe_window_hours": RETENTION_HOURS,
            "hours": dg.MetadataValue.md(table),
            "seconds": seconds,
            "events_per_second": round(sum(h["new"] for h in hours.values()) / seconds, 1) if seconds else 0.0,
        },
        check_results=[
            dg.AssetCheckResult(check_name="event_id_unique", passed=total["duplicate_ids"] == 0,
                                metadata={"duplicate_event_ids": total["duplicate_ids"],
                                          "window_hours": RETENTION_HOURS}),
            reconciliation(lakehouse, context.partition_keys, max(h["bronze_version"] for h in hours.values()),
                           version),
        ],
    )
    yield dg.MaterializeResult(
        asset_key="silver_events_rejected",
        metadata={
            "dagster/row_count": dg.MetadataValue.int(total["rejected"]),
            "delta_version": dg.MetadataValue.int(version),
            "table": "silver.event_outcomes (view silver.events_rejected)",
            "path": dg.MetadataValue.path(outcomes.uri),
            "reasons": dg.MetadataValue.md("\n".join(f"- {k}: {h['reasons']}" for k, h in hours.items())),
        },
    )
