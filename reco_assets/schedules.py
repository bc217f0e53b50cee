"""Jobs and schedules: the daily ALS retrain, and the hourly upkeep of the Delta tables."""

import time

import dagster as dg
from dagster_pyspark import LazyPySparkResource
from pydantic import Field

from reco_assets.kafka.client import RETENTION_HOURS
from reco_assets.lakehouse import LakehouseResource
from reco_assets.lakehouse.delta import is_conflict
from reco_assets.lakehouse.maintenance import compact_closed_hours, stored_files, vacuum
from reco_assets.lakehouse.tables import TABLES

# als_model and gold_reco_evaluation are one multi-asset; downstream: recommendations, similar movies and the
# DuckDB catalog. The hybrid learns its own ranker from silver at each materialization.
als_retrain_job = dg.define_asset_job(
    "als_retrain_job",
    selection=dg.AssetSelection.assets("als_model", "gold_reco_evaluation", "gold_hybrid_recommendations").downstream(),
    description="Retrain ALS and the hybrid's ranker on every rating and streamed event, re-evaluate them, and "
                "refresh what is served from them.",
)

daily_als_retrain = dg.ScheduleDefinition(
    name="daily_als_retrain",
    job=als_retrain_job,
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every day at 03:00 UTC: retrain ALS and the hybrid with the day's events and refresh the "
                "recommendations.",
)


class MaintenanceConfig(dg.Config):
    retain_hours: float = Field(default=max(RETENTION_HOURS, 168.0),
                                description="VACUUM keeps every file a version of the last this many hours reads "
                                            "(time travel reaches that far back; Delta refuses less than 168 "
                                            "unless its retention check is turned off)")


@dg.op(description="OPTIMIZE the closed hours of every hourly table, then VACUUM every table.")
def maintain_lakehouse(context: dg.OpExecutionContext, config: MaintenanceConfig, lakehouse: LakehouseResource,
                       pyspark: LazyPySparkResource) -> None:
    spark = pyspark.spark_session
    for name in TABLES:
        table = lakehouse.table(name)
        if not table.exists():
            continue
        started = time.monotonic()
        before = stored_files(table)
        try:
            compacted = compact_closed_hours(spark, table)
            vacuum(spark, table, config.retain_hours)
        except Exception as error:  # a run committed to the table meanwhile: the next hour's job compacts it
            if not is_conflict(error):
                raise
            context.log.warning(f"{name}: {str(error).splitlines()[0][:300]}; left for the next run")
            continue
        context.log_event(dg.AssetObservation(asset_key=table.spec.writer, metadata={
            "table": name, "delta_version": dg.MetadataValue.int(table.version()),
            "files_compacted": dg.MetadataValue.int(compacted["files_removed"]),
            "files_written_by_optimize": dg.MetadataValue.int(compacted["files_added"]),
            "stored_files_before": dg.MetadataValue.int(before),
            "stored_files_after": dg.MetadataValue.int(stored_files(table)),
            "seconds": round(time.monotonic() - started, 2)}))


@dg.job(description="Compact the closed hours (many small files from the live runs) and vacuum old files.")
def lakehouse_maintenance_job():
    maintain_lakehouse()


hourly_lakehouse_maintenance = dg.ScheduleDefinition(
    name="hourly_lakehouse_maintenance",
    job=lakehouse_maintenance_job,
    cron_schedule="7 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every hour at :07: OPTIMIZE the hours that have closed, VACUUM past the retention window.",
)
