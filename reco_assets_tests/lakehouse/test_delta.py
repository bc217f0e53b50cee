"""Delta tables of the lakehouse, for real (local Spark): one commit per write, versions, conflicts, the catalog."""

import threading
import time

import duckdb
import pyarrow as pa
import pytest
from deltalake import DeltaTable
from pyspark.sql import functions as F

from reco_assets.lakehouse import ConcurrentWriteError, LakehouseResource, delta

HOUR = "2026-11-05-10:00"


def hour_rows(spark, n: int, tag: str):
    return spark.range(n).select(F.col("id").alias("offset"), F.lit(tag).alias("topic"),
                                 F.lit("2026-11-05-10").alias("hour"))


def test_each_write_is_one_version_and_earlier_versions_stay_readable(tmp_path, spark):
    table = LakehouseResource(data_dir=str(tmp_path)).table("gold.trending_now")
    first = table.overwrite(spark.range(3).withColumnRenamed("id", "rank"))
    second = table.overwrite(spark.range(5).withColumnRenamed("id", "rank"))
    assert (first.version, second.version, second.rows) == (0, 1, 5)
    assert table.version() == 1
    assert table.read(spark, version=0).count() == 3 and table.read(spark).count() == 5
    # The catalog view was made by the first write and reads the latest snapshot.
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM gold.trending_now").fetchone()[0] == 5


def test_replacing_an_hour_leaves_the_other_hours_alone(tmp_path, spark):
    table = LakehouseResource(data_dir=str(tmp_path)).table("bronze.event_ranges")
    other = spark.range(2).select(F.col("id").alias("records"), F.lit("2026-11-05-09").alias("hour"))
    table.replace_hours(other, ["2026-11-05-09:00"])
    table.replace_hours(hour_rows(spark, 4, "a").select(F.col("offset").alias("records"), "hour"), [HOUR])
    commit = table.replace_hours(hour_rows(spark, 1, "b").select(F.col("offset").alias("records"), "hour"), [HOUR])
    assert commit.version == 2 and commit.rows == 1
    assert sorted(r["hour"] for r in table.read(spark).collect()) == ["2026-11-05-09"] * 2 + ["2026-11-05-10"]
    with pytest.raises(Exception, match="replaceWhere|DELTA_REPLACE_WHERE"):  # rows outside the hour are refused
        table.replace_hours(other, [HOUR])


def test_two_writers_of_one_hour_one_commits_the_other_gets_a_named_conflict(tmp_path, spark):
    """Both transactions read version 0, write their files, then commit: Delta lets the first one in and refuses
    the second, which changed nothing."""
    table = LakehouseResource(data_dir=str(tmp_path)).table("bronze.events")
    table.replace_hours(hour_rows(spark, 10, "base"), [HOUR])
    barrier = threading.Barrier(2)

    @F.udf("bigint")
    def slow(offset):
        time.sleep(0.5)
        return offset

    outcomes = {}

    def write(tag: str) -> None:
        barrier.wait()
        try:
            outcomes[tag] = table.replace_hours(hour_rows(spark, 20, tag).withColumn("offset", slow("offset")),
                                                [HOUR])
        except ConcurrentWriteError as error:
            outcomes[tag] = error

    threads = [threading.Thread(target=write, args=(tag,)) for tag in ("one", "two")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    errors = [o for o in outcomes.values() if isinstance(o, ConcurrentWriteError)]
    commits = [o for o in outcomes.values() if not isinstance(o, ConcurrentWriteError)]
    assert len(errors) == 1 and len(commits) == 1, outcomes
    assert f"bronze.events hour {HOUR}" in str(errors[0]) and "was not committed" in str(errors[0])
    winner = next(tag for tag, o in outcomes.items() if o is commits[0])
    rows = table.read_hours(spark, [HOUR]).groupBy("topic").count().collect()
    assert [(r["topic"], r["count"]) for r in rows] == [(winner, 20)]
    assert table.version() == commits[0].version == 1


def test_rows_in_memory_replacing_an_hour_another_run_replaced_first_get_the_named_conflict(tmp_path, monkeypatch):
    """delta-rs commits rows held in memory (live runs, silver's in-memory rebuilds): a replace of the hour that
    read the table before another run replaced the same hour is refused with the same named conflict, and changes
    nothing. The interleaving is forced: the other run commits between the read and the commit."""
    table = LakehouseResource(data_dir=str(tmp_path)).table("bronze.events")

    def rows(tag: str, n: int) -> pa.Table:
        return pa.table({"offset": pa.array(range(n), pa.int64()), "topic": [tag] * n, "hour": ["2026-11-05-10"] * n})

    table.replace_hours(rows("base", 10), [HOUR])
    commit_rows = delta.write_deltalake

    def another_run_commits_first(uri, data, **options):
        read = DeltaTable(uri)
        commit_rows(uri, rows("other", 4), mode="overwrite", predicate=options["predicate"])
        return commit_rows(read, data, **options)

    monkeypatch.setattr(delta, "write_deltalake", another_run_commits_first)
    with pytest.raises(ConcurrentWriteError, match=f"bronze.events hour {HOUR}: .* was not committed"):
        table.replace_hours(rows("mine", 20), [HOUR])
    assert table.version() == 1
    assert table.arrow([HOUR], 1, ["topic"])["topic"].unique().to_pylist() == ["other"]
