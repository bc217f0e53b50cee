"""The hourly upkeep job, for real: closed hours compacted, superseded files vacuumed, the rows unchanged."""

import dagster as dg
from pyspark.sql import functions as F

from reco_assets.definitions import defs
from reco_assets.lakehouse import LakehouseResource
from reco_assets.lakehouse.maintenance import live_files_per_hour, stored_files

CLOSED, OPEN = "2026-11-05-10", "2099-01-01-00"


def test_maintenance_compacts_closed_hours_and_vacuums(tmp_path, spark, dagster_instance):
    lakehouse = LakehouseResource(data_dir=str(tmp_path))
    table = lakehouse.table("gold.trending")
    for hour in (CLOSED, OPEN):
        for run in range(3):  # what live runs leave: the hour rewritten, each time in several small files
            rows = spark.range(1000).select(F.col("id").alias("movie_id"), F.lit(run).alias("run"),
                                            F.lit(hour).alias("hour")).repartition(4)
            table.replace_hours(rows, [f"{hour}:00"])
    assert live_files_per_hour(spark, table) == {CLOSED: 4, OPEN: 4}
    assert stored_files(table) == 24
    expected = sorted(table.read(spark).collect())

    spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")  # VACUUM RETAIN 0 HOURS
    try:
        job = dg.Definitions(jobs=defs.jobs, resources={**defs.resources, "lakehouse": lakehouse}) \
            .resolve_job_def("lakehouse_maintenance_job")
        result = job.execute_in_process(instance=dagster_instance, run_config={
            "ops": {"maintain_lakehouse": {"config": {"retain_hours": 0.0}}}})
    finally:
        spark.conf.unset("spark.databricks.delta.retentionDurationCheck.enabled")
    assert result.success
    assert live_files_per_hour(spark, table) == {CLOSED: 1, OPEN: 4}  # the open hour is left to its live runs
    assert stored_files(table) == 5
    assert sorted(table.read(spark).collect()) == expected
    observed = {e.event_specific_data.asset_observation.metadata["table"].value:
                e.event_specific_data.asset_observation.metadata
                for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"}
    assert observed["gold.trending"]["files_compacted"].value == 4
    assert observed["gold.trending"]["stored_files_before"].value == 24
    assert observed["gold.trending"]["stored_files_after"].value == 5
