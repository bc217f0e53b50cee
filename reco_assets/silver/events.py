"""Silver events: parsed, contract-checked, deduplicated events per broker hour, and a dead letter for the rest."""

import time
from pathlib import Path

import dagster as dg
from dagster_pyspark import LazyPySparkResource
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from reco_assets.bronze.events import bronze_events, partition_path
from reco_assets.catalog import register_views
from reco_assets.partitions import hourly_events, previous_hour
from reco_assets.resources import LakehouseResource
from reco_assets.silver.event_contract import validate_events
from reco_assets.tables import duckdb_scalar

EVENT_COLUMNS = ["event_id", "event_type", "event_ts", "user_id", "movie_id", "session_id", "device_type",
                 "page_url", "watch_seconds", "click_type", "referrer", "rating", "review_text"]


def split_hour(checked: DataFrame, previous_ids: DataFrame | None) -> tuple[DataFrame, DataFrame]:
    """(silver rows, rejected rows) of one bronze hour, from its contract-checked records (`validate_events`).

    Rejected: every record that breaks its topic's contract, plus duplicates by `event_id` — later copies
    inside the hour (the first by broker time and offset is kept) and events already in the previous hour.
    """
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
    silver = valid.where(~duplicate).select(*EVENT_COLUMNS, "topic", "partition", "offset", "received_at")
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


def _write_partition(lakehouse: LakehouseResource, df: DataFrame, table: str, partition_key: str) -> Path:
    final = partition_path(lakehouse, table, "silver", partition_key)
    with lakehouse.staged_dir(final) as staged:
        df.coalesce(1).write.mode("overwrite").parquet(str(staged))
    return final


def materialize_hour(partition_key: str, lakehouse: LakehouseResource, spark: SparkSession) -> dict:
    bronze_path = partition_path(lakehouse, "events", "bronze", partition_key)
    if not bronze_path.exists():
        raise dg.Failure(f"bronze_events has no hour {partition_key}; materialize it first")
    previous = partition_path(lakehouse, "events", "silver", previous_hour(partition_key))
    previous_ids = spark.read.parquet(str(previous)).select("event_id") if previous.exists() else None
    # Both outputs come from one contract check: keep it instead of computing it once per output.
    checked = validate_events(spark.read.parquet(str(bronze_path))).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        silver, rejected = split_hour(checked, previous_ids)
        silver_path = _write_partition(lakehouse, silver, "events", partition_key)
        rejected_path = _write_partition(lakehouse, rejected, "events_rejected", partition_key)
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
                          description="event_id is unique in the hour and against the previous hour"),
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
            dg.AssetCheckResult(check_name="event_id_unique", passed=total["duplicate_ids"] == 0,
                                metadata={"duplicate_event_ids": total["duplicate_ids"]}),
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
