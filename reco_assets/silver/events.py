"""Silver events: parsed, contract-checked, deduplicated events per broker hour, and a dead letter for the rest."""

import time
from pathlib import Path

import dagster as dg
import duckdb
from dagster_pyspark import LazyPySparkResource
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from reco_assets.bronze.events import bronze_events, partition_path
from reco_assets.catalog import register_views
from reco_assets.partitions import hourly_events, next_hour, previous_hour
from reco_assets.resources import LakehouseResource
from reco_assets.silver.event_contract import validate_events
from reco_assets.tables import duckdb_scalar

EVENT_COLUMNS = ["event_id", "event_type", "event_ts", "user_id", "movie_id", "session_id", "device_type",
                 "page_url", "watch_seconds", "click_type", "referrer", "rating", "review_text"]


# Hours of up to this many records broadcast their event ids and duplicate marks into the joins, so that neither
# the wide rows nor the previous hour's ids are shuffled; larger hours leave the join strategy to adaptive execution.
BROADCAST_RECORDS = 2_000_000
UNIQUE_STRING_COLUMNS = ("event_id", "session_id")
# An hour of fewer records is written as one Parquet file; a larger one keeps the partitions it was read in, one file
# each, written in parallel (coalescing those into fewer files left them uneven: 935k and 65k records for a 1M hour).
ONE_FILE_RECORDS = 500_000


def _position() -> Column:
    """Where a copy was received. Unique in an hour (topic, partition and offset are); the smallest is kept."""
    return F.struct("received_at", "topic", "partition", "offset")


def _maybe_broadcast(df: DataFrame, broadcast: bool) -> DataFrame:
    return F.broadcast(df) if broadcast else df


def duplicate_marks(checked: DataFrame, previous_ids: DataFrame | None, broadcast: bool = True) -> DataFrame:
    """`event_id, seen, first` for each valid event_id of the hour that has duplicates: `seen` when the previous hour
    already holds it, `first` the position (`_position`) of its first copy in this hour.

    Duplicates are rare, so only 64-bit hashes of the ids move: the hashes with more than one copy and the previous
    hour's hashes that reappear pick the candidate rows, and the exact ids of those few rows decide (a hash collision
    only adds a candidate). `checked` has `received_at` (the broker timestamp) and `validate_events`' columns.
    """
    valid = checked.where(F.col("reject_reason").isNull()).withColumn("_hash", F.xxhash64("event_id"))
    hashes = valid.select("_hash")
    candidates = hashes.groupBy("_hash").count().where(F.col("count") > 1).select("_hash")
    if previous_ids is not None:
        previous = previous_ids.select("event_id", F.xxhash64("event_id").alias("_hash"))
        candidates = candidates.unionByName(previous.join(_maybe_broadcast(hashes, broadcast), "_hash", "left_semi")
                                            .select("_hash"))
    candidates = _maybe_broadcast(candidates.distinct(), broadcast)
    marks = (valid.join(candidates, "_hash", "left_semi").groupBy("event_id")
             .agg(F.count(F.lit(1)).alias("copies"), F.min(_position()).alias("first")))
    if previous_ids is None:
        marks = marks.withColumn("seen", F.lit(False))
    else:
        seen = previous.join(candidates, "_hash", "left_semi").select("event_id", F.lit(True).alias("seen"))
        marks = marks.join(seen.distinct(), "event_id", "left").withColumn("seen", F.coalesce("seen", F.lit(False)))
    return marks.where((F.col("copies") > 1) | F.col("seen")).select("event_id", "seen", "first")


def split_hour(checked: DataFrame, marks: DataFrame, bronze: DataFrame,
               broadcast: bool = True) -> tuple[DataFrame, DataFrame]:
    """(silver rows, rejected rows) of one bronze hour, from its contract-checked records (`validate_events`, with
    `received_at`; `key` and `value` may be null for valid records) and their `duplicate_marks`.

    Rejected: every record that breaks its topic's contract, plus duplicates by `event_id` — later copies
    inside the hour (the first by broker time, topic, partition and offset is kept) and events already in the
    previous hour (every copy). A duplicate's raw key and value are read back from `bronze`.
    """
    rows = checked.join(_maybe_broadcast(marks, broadcast), "event_id", "left")
    valid = F.col("reject_reason").isNull()
    first = F.col("first")
    duplicate = valid & F.coalesce(F.col("seen") | (first != _position()), F.lit(False))
    silver = rows.where(valid & ~duplicate).select(*EVENT_COLUMNS, "topic", "partition", "offset", "received_at")
    coordinates = ["topic", "partition", "offset"]
    invalid = rows.where(~valid).select(
        *coordinates, "received_at", "key", "value", F.col("reject_reason").alias("reason"),
        F.col("reject_field").alias("field"), F.col("reject_detail").alias("detail"), "event_id")
    duplicates = rows.where(duplicate).select(
        *coordinates, "received_at", F.lit("duplicate").alias("reason"), F.lit("event_id").alias("field"),
        F.when(F.col("seen"), F.lit("event_id already in the previous hour"))
        .otherwise(F.concat(F.lit("duplicate of "), F.format_string(
            "%s/%d@%d", first["topic"], first["partition"], first["offset"]))).alias("detail"),
        "event_id")
    duplicates = bronze.select(*coordinates, "key", "value").join(
        _maybe_broadcast(duplicates, broadcast), coordinates)
    columns = [*coordinates, "received_at", "key", "value", "reason", "field", "detail",
               "event_id"]  # event_id: null for records that break their contract
    return silver, invalid.select(columns).unionByName(duplicates.select(columns))


def _write_partition(lakehouse: LakehouseResource, df: DataFrame, table: str, partition_key: str,
                     one_file: bool = True) -> Path:
    final = partition_path(lakehouse, table, "silver", partition_key)
    writer = (df.coalesce(1) if one_file else df).write.mode("overwrite")
    for column in UNIQUE_STRING_COLUMNS:  # a dictionary of unique values only costs time
        writer = writer.option(f"parquet.enable.dictionary#{column}", "false")
    with lakehouse.staged_dir(final) as staged:
        writer.parquet(str(staged))
    return final


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


def materialize_hour(partition_key: str, lakehouse: LakehouseResource, spark: SparkSession) -> dict:
    bronze_path = partition_path(lakehouse, "events", "bronze", partition_key)
    if not bronze_path.exists():
        raise dg.Failure(f"bronze_events has no hour {partition_key}; materialize it first")
    previous = partition_path(lakehouse, "events", "silver", previous_hour(partition_key))
    previous_ids = spark.read.parquet(str(previous)).select("event_id") if previous.exists() else None
    records = duckdb_scalar("SELECT count(*) FROM read_parquet(?)", str(bronze_path / "*.parquet"))  # from footers
    broadcast = records <= BROADCAST_RECORDS
    # The contract check runs once per hour: its result is kept for the duplicate marks and both outputs as a local
    # checkpoint (rows in executor memory, spilling to disk, with the plan cut), which is cheaper to build than a
    # cached table and makes the later plans small.
    bronze = spark.read.parquet(str(bronze_path)).withColumnRenamed("timestamp", "received_at")
    # Valid records leave their raw bytes out of the checkpoint (half its size); a duplicate's come from bronze.
    raw_if_rejected = {c: F.when(F.col("reject_reason").isNotNull(), F.col(c)) for c in ("key", "value")}
    checked = validate_events(bronze).withColumns(raw_if_rejected).localCheckpoint()
    try:
        # Small: computed by the first write, kept for the second.
        marks = duplicate_marks(checked, previous_ids, broadcast).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            silver, rejected = split_hour(checked, marks, bronze, broadcast)
            silver_path = _write_partition(lakehouse, silver, "events", partition_key,
                                           one_file=records < ONE_FILE_RECORDS)
            rejected_path = _write_partition(lakehouse, rejected, "events_rejected", partition_key)
        finally:
            marks.unpersist()
    finally:
        _release(checked)
    unique = [str(silver_path / "*.parquet")] + ([str(previous / "*.parquet")] if previous.exists() else [])
    # A next hour materialized before this one was deduplicated against an older copy of it.
    following = partition_path(lakehouse, "events", "silver", next_hour(partition_key))
    in_next_hour = ("(SELECT count(*) FROM read_parquet($silver) WHERE event_id IN "
                    "(SELECT event_id FROM read_parquet($following)))" if following.exists() else "0")
    with duckdb.connect() as con:
        silver_rows, rejected_rows, reasons, duplicate_ids, also_in_next_hour = con.execute(
            "SELECT (SELECT count(*) FROM read_parquet($silver)), (SELECT count(*) FROM read_parquet($rejected)), "
            "(SELECT coalesce(json_group_object(reason, n), '{}')::VARCHAR FROM (SELECT reason, count(*) AS n "
            " FROM read_parquet($rejected) GROUP BY reason ORDER BY reason)), "
            f"(SELECT count(*) - count(DISTINCT event_id) FROM read_parquet($unique)), {in_next_hour}",
            {"silver": str(silver_path / "*.parquet"), "rejected": str(rejected_path / "*.parquet"),
             "unique": unique} | ({"following": str(following / "*.parquet")} if following.exists() else {})
        ).fetchone()
    return {"bronze": records, "silver": silver_rows, "rejected": rejected_rows, "reasons": reasons,
            "duplicate_ids": duplicate_ids, "also_in_next_hour": also_in_next_hour}


@dg.multi_asset(
    partitions_def=hourly_events,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="silver",
    specs=[
        dg.AssetSpec("silver_events", deps=[bronze_events], kinds={"spark", "parquet"},
                     description="Typed events that meet their contract, unique by event_id (hourly, broker time)."),
        dg.AssetSpec("silver_events_rejected", deps=[bronze_events], kinds={"spark", "parquet"},
                     description="Dead letter: every bronze record that is not in silver_events, with raw bytes, "
                                 "its Kafka coordinates, a reason code and detail."),
    ],
    check_specs=[
        dg.AssetCheckSpec("event_id_unique", asset="silver_events",
                          description="event_id is unique in the hour, against the previous hour and against a "
                                      "next hour materialized before this one (re-materialize that hour)"),
        dg.AssetCheckSpec("reconciles_with_bronze", asset="silver_events",
                          description="bronze records = silver rows + rejected rows (duplicates included)"),
    ],
)
def silver_events(context: dg.AssetExecutionContext, lakehouse: LakehouseResource, pyspark: LazyPySparkResource):
    """Parse each bronze hour with Spark's JSON functions, check the contracts, deduplicate, dead-letter the rest."""
    spark = pyspark.spark_session
    started = time.monotonic()
    hours = {}
    for partition_key in context.partition_keys:
        hours[partition_key] = counts = materialize_hour(partition_key, lakehouse, spark)
        context.log.info(f"hour {partition_key}: {counts}")
    register_views(lakehouse, ["silver.events", "silver.events_rejected"], context.log)
    seconds = round(time.monotonic() - started, 2)
    total = {k: sum(h[k] for h in hours.values()) for k in ("bronze", "silver", "rejected", "duplicate_ids")}
    # Next hours that hold events of the hour before them (the run re-did neither): they need a new run.
    stale = {next_hour(k): h["also_in_next_hour"] for k, h in hours.items()
             if h["also_in_next_hour"] and next_hour(k) not in hours}
    unbalanced = [k for k, h in hours.items() if h["bronze"] != h["silver"] + h["rejected"]]
    table = "\n".join(["| hour | bronze | silver | rejected | reasons |", "|---|---|---|---|---|"]
                      + [f"| {k} | {h['bronze']} | {h['silver']} | {h['rejected']} | {h['reasons']} |"
                         for k, h in hours.items()])
    yield dg.MaterializeResult(
        asset_key="silver_events",
        metadata={
            "dagster/row_count": dg.MetadataValue.int(total["silver"]),
            "path": dg.MetadataValue.path(str(lakehouse.table_path("silver", "events"))),
            "bronze_records": dg.MetadataValue.int(total["bronze"]),
            "rejected_records": dg.MetadataValue.int(total["rejected"]),
            "hours": dg.MetadataValue.md(table),
            "seconds": seconds,
            "events_per_second": round(total["bronze"] / seconds, 1) if seconds else 0.0,
        },
        check_results=[
            dg.AssetCheckResult(check_name="event_id_unique",
                                passed=total["duplicate_ids"] == 0 and not stale,
                                metadata={"duplicate_event_ids": total["duplicate_ids"],
                                          "event_ids_also_in_next_hour": sum(stale.values()),
                                          "rematerialize": ", ".join(stale) or "none"}),
            dg.AssetCheckResult(check_name="reconciles_with_bronze", passed=not unbalanced,
                                metadata={"bronze": total["bronze"], "silver": total["silver"],
                                          "rejected": total["rejected"],
                                          "unbalanced_hours": ", ".join(unbalanced) or "none"}),
        ],
    )
    yield dg.MaterializeResult(
        asset_key="silver_events_rejected",
        metadata={
            "dagster/row_count": dg.MetadataValue.int(total["rejected"]),
            "path": dg.MetadataValue.path(str(lakehouse.table_path("silver", "events_rejected"))),
            "reasons": dg.MetadataValue.md("\n".join(f"- {k}: {h['reasons']}" for k, h in hours.items())),
        },
    )
