"""The hourly upkeep job, for real: closed hours compacted, superseded files vacuumed, the rows unchanged."""

import dagster as dg
from pyspark.sql import functions as F

from reco_assets.definitions import defs
from reco_assets.lakehouse import LakehouseResource, delta
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


def test_a_live_hour_is_compacted_once_its_appends_reach_the_threshold(tmp_path):
    """Live runs append a file each to the open hour; past the threshold the hour's small files become one, in a
    commit that changes no rows and leaves the other hours' files alone."""
    import pyarrow as pa

    table = LakehouseResource(data_dir=str(tmp_path)).table("bronze.events")
    schema = pa.schema([("topic", pa.string()), ("partition", pa.int32()), ("offset", pa.int64()),
                        ("timestamp", pa.timestamp("us", "UTC")), ("key", pa.binary()), ("value", pa.binary()),
                        ("hour", pa.string())])

    def rows(hour: str, first: int) -> pa.Table:
        return pa.Table.from_pylist([{"topic": "events_views", "partition": 0, "offset": first + i,
                                      "timestamp": None, "key": b"k", "value": b"v", "hour": hour}
                                     for i in range(10)], schema)

    table.append_to_hour(rows(CLOSED, 0), f"{CLOSED}:00")
    table.append_to_hour(rows(CLOSED, 10), f"{CLOSED}:00")
    for run in range(4):
        table.append_to_hour(rows(OPEN, run * 10), f"{OPEN}:00")
    version = table.version()
    assert table.compact_hour(f"{OPEN}:00", min_files=5) == 0 and table.version() == version  # below: no commit
    table.append_to_hour(rows(OPEN, 40), f"{OPEN}:00")
    before = table.arrow(None, table.version()).sort_by([("hour", "ascending"), ("offset", "ascending")])
    assert table.compact_hour(f"{OPEN}:00", min_files=5) == 5
    after = table.arrow(None, table.version())
    assert after.sort_by([("hour", "ascending"), ("offset", "ascending")]) == before
    files = pa.table(delta.table(table.uri).get_add_actions(flatten=True)).to_pylist()
    assert sorted(f["partition.hour"] for f in files) == [CLOSED, CLOSED, OPEN]
