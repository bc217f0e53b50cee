"""silver_events is unique by event_id across the dedupe window, whatever order its hours are materialized in."""

import json
from datetime import timedelta

import dagster as dg
import pytest

from reco_assets.bronze.events import BRONZE_EVENT_SCHEMA, range_rows
from reco_assets.lakehouse import LakehouseResource
from reco_assets.lakehouse.hours import hour_start, hour_value
from reco_assets.silver.events import in_memory_records
from reco_assets.silver.events import materialize_hour as silver_hour
from reco_assets_tests.conftest import materialize

SILVER = ["silver_events", "silver_events_rejected"]
EARLY, LATE = "2026-11-05-10:00", "2026-11-05-11:00"
THREE_DAYS_LATER, EIGHT_DAYS_LATER = "2026-11-08-11:00", "2026-11-13-12:00"


def view(event_id: str, minute: int, at: str = "2026-11-05T10", reordered: bool = False,
         escaped: bool = False) -> bytes:
    """A view event. Valid records that only Spark's check reads: `reordered` writes its fields in reverse,
    `escaped` spells the id's first character as a JSON escape."""
    event = {"event_id": event_id, "event_type": "view", "event_ts": f"{at}:{minute:02d}:00Z", "user_id": 1,
             "movie_id": 1, "device_type": "mobile"}
    value = json.dumps(dict(reversed(event.items())) if reordered else event)
    return (value.replace(f'"{event_id}"', f'"\\u{ord(event_id[0]):04x}{event_id[1:]}"') if escaped else value).encode()


def write_bronze(spark, lakehouse: LakehouseResource, hour: str, values: list[bytes]) -> None:
    """A bronze hour as bronze_events lands it: its records and its offset range, in the two Delta tables."""
    start = hour_start(hour)
    # Received in the hour's last minute: after every event the tests stamp within the hour.
    rows = [("events_views", 0, i, start + timedelta(minutes=59, seconds=i), b"1", v) for i, v in enumerate(values)]
    records = spark.createDataFrame(rows, BRONZE_EVENT_SCHEMA)
    lakehouse.table("bronze.events").replace_hours(records.selectExpr("*", f"'{hour_value(hour)}' AS hour"), [hour])
    ranges = [("events_views", 0, 0, len(values), len(values), True, True, start, "test", hour_value(hour))]
    lakehouse.table("bronze.event_ranges").replace_hours(range_rows(ranges), [hour])


def uuid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def check(result) -> tuple[bool, dict]:
    evaluation = next(e for e in result.get_asset_check_evaluations() if e.check_name == "event_id_unique")
    return evaluation.passed, {k: v.value for k, v in evaluation.metadata.items()}


def outcomes(spark, lakehouse: LakehouseResource, hour: str) -> tuple[list[str], list[tuple]]:
    table = lakehouse.table("silver.event_outcomes")
    accepted = [r["event_id"] for r in table.read_hours(spark, [hour], view="silver.events").collect()]
    rejected = [(r["event_id"], r["reason"], r["detail"], bytes(r["value"]))
                for r in table.read_hours(spark, [hour], view="silver.events_rejected").collect()]
    return sorted(accepted), sorted(rejected)


@pytest.mark.parametrize("rebuild", ["in memory", "by Spark jobs"])
def test_a_copy_in_any_other_hour_of_the_window_goes_to_the_dead_letter(rebuild, tmp_path, dagster_instance, spark,
                                                                        monkeypatch):
    """The late hour, landed first, keeps an event retried across the boundary; the early hour, materialized after
    it, sends its copy to the dead letter naming the late hour. A replay three days later (one id in upper case,
    one with its fields in another order, one with an escape in its id: in memory, Spark checks those two, not
    Arrow) is all duplicates. Eight days later, past the 7-day window, the same event sent again is out of range
    (its time is more than 7 days before its broker time), and the same event id with a new time counts again.

    The same for either way of rebuilding an hour: small hours in memory, large ones by Spark jobs."""
    if rebuild == "by Spark jobs":
        monkeypatch.setenv("RECO_SILVER_IN_MEMORY_RECORDS", "-1")
    lakehouse = LakehouseResource(data_dir=str(tmp_path))
    write_bronze(spark, lakehouse, EARLY, [view(uuid(1), 1), view(uuid(2), 59)])
    write_bronze(spark, lakehouse, LATE, [view(uuid(2), 59), view(uuid(3), 5)])
    write_bronze(spark, lakehouse, THREE_DAYS_LATER, [view(uuid(1).upper(), 1), view(uuid(3), 5, reordered=True),
                                                      view(uuid(2), 59, escaped=True)])
    restamped = view(uuid(3), 59, at="2026-11-13T11")
    write_bronze(spark, lakehouse, EIGHT_DAYS_LATER, [view(uuid(3), 5), restamped])

    for hour in (LATE, EARLY, THREE_DAYS_LATER, EIGHT_DAYS_LATER):
        passed, metadata = check(materialize(SILVER, tmp_path, dagster_instance, partition_key=hour))
        assert passed and metadata["duplicate_event_ids"] == 0

    assert outcomes(spark, lakehouse, LATE) == ([uuid(2), uuid(3)], [])
    assert outcomes(spark, lakehouse, EARLY) == (
        [uuid(1)], [(uuid(2), "duplicate", f"event_id already in hour {LATE}", view(uuid(2), 59))])
    assert outcomes(spark, lakehouse, THREE_DAYS_LATER) == ([], [
        (uuid(1), "duplicate", f"event_id already in hour {EARLY}", view(uuid(1).upper(), 1)),
        (uuid(2), "duplicate", f"event_id already in hour {LATE}", view(uuid(2), 59, escaped=True)),
        (uuid(3), "duplicate", f"event_id already in hour {LATE}", view(uuid(3), 5, reordered=True))])
    assert outcomes(spark, lakehouse, EIGHT_DAYS_LATER) == ([uuid(3)], [
        (None, "out_of_range", "event_ts 2026-11-05T10:05:00.000000Z is more than 7 days before its broker time "
                               "2026-11-13T12:59:00.000000Z", view(uuid(3), 5))])

    # Re-materializing an hour reaches the same outcome: its own earlier rows do not count as copies.
    assert check(materialize(SILVER, tmp_path, dagster_instance, partition_key=LATE))[0]
    assert outcomes(spark, lakehouse, LATE) == ([uuid(2), uuid(3)], [])


def land(spark, lakehouse: LakehouseResource, hour: str, records: list[tuple]) -> None:
    """A bronze hour from (partition, offset, second of the hour received, value) of events_views, both tables."""
    start = hour_start(hour)
    rows = [("events_views", p, o, start + timedelta(seconds=s), b"1", v) for p, o, s, v in records]
    lakehouse.table("bronze.events").replace_hours(
        spark.createDataFrame(rows, BRONZE_EVENT_SCHEMA).selectExpr("*", f"'{hour_value(hour)}' AS hour"), [hour])
    ends = {}
    for p, o, *_ in records:
        ends[p] = max(ends.get(p, 0), o + 1)
    ranges = [("events_views", p, 0, end, end, False, True, start, "test", hour_value(hour)) for p, end in ends.items()]
    lakehouse.table("bronze.event_ranges").replace_hours(range_rows(ranges), [hour])


def hour_rows(spark, lakehouse: LakehouseResource, hour: str) -> list[str]:
    return sorted(map(repr, lakehouse.table("silver.event_outcomes").read_hours(spark, [hour]).collect()))


def test_a_live_run_appends_the_rows_a_rebuild_gives_and_rebuilds_when_a_new_copy_came_first(tmp_path, spark,
                                                                                            monkeypatch):
    """A live run checks only the records silver does not hold yet (in memory, against the hour's accepted events
    and the window's): it appends the rows a rebuild gives, invalid records and copies included. When a new copy
    was received before the accepted one (another partition, landed later), appending cannot give a rebuild's
    rows: the hour is rebuilt instead."""
    lakehouse = LakehouseResource(data_dir=str(tmp_path))
    write_bronze(spark, lakehouse, LATE, [view(uuid(9), 0)])
    silver_hour(LATE, lakehouse, spark)
    held = [(1, 0, 50, view(uuid(1), 1)), (1, 1, 51, view(uuid(2), 2))]
    land(spark, lakehouse, EARLY, held)
    counts = silver_hour(EARLY, lakehouse, spark, append=True)  # a new hour starts by appending too
    assert counts["appended"] and counts["new"] == 2 and counts["silver"] == 2
    later = [*held, (1, 2, 55, view(uuid(1), 1)), (1, 3, 56, view(uuid(3), 3)), (1, 4, 57, b"not json"),
             (2, 0, 58, view(uuid(9).upper(), 0)), (2, 1, 58, view(uuid(4), 4)), (2, 2, 59, view(uuid(4), 4))]
    land(spark, lakehouse, EARLY, later)
    counts = silver_hour(EARLY, lakehouse, spark, append=True)
    assert counts["appended"] and counts["new"] == 6 and counts["rejected"] == 4 and counts["silver"] == 4
    assert counts["reasons"] == {"duplicate": 3, "not_json": 1} and counts["duplicate_ids"] == 0
    appended = hour_rows(spark, lakehouse, EARLY)
    assert silver_hour(EARLY, lakehouse, spark, append=True)["new"] == 0  # nothing new: no commit
    silver_hour(EARLY, lakehouse, spark)  # rebuilt in memory, by the appends' rules
    assert hour_rows(spark, lakehouse, EARLY) == appended
    with monkeypatch.context() as by_spark_jobs:  # and by Spark jobs, the other rebuild
        by_spark_jobs.setenv("RECO_SILVER_IN_MEMORY_RECORDS", "-1")
        silver_hour(EARLY, lakehouse, spark)
    assert hour_rows(spark, lakehouse, EARLY) == appended
    for detail in ("duplicate of events_views/1@0", f"event_id already in hour {LATE}",
                   "duplicate of events_views/2@1"):
        assert any(detail in row for row in appended), detail

    earlier_copy = [*later, (0, 0, 10, view(uuid(2), 2))]  # received before the accepted copy at offset 1@1
    land(spark, lakehouse, EARLY, earlier_copy)
    counts = silver_hour(EARLY, lakehouse, spark, append=True)
    assert not counts["appended"] and counts["silver"] == 4 and counts["rejected"] == 5
    assert any("duplicate of events_views/0@0" in row for row in hour_rows(spark, lakehouse, EARLY))


def test_ids_that_share_a_hash_are_told_apart_by_their_exact_ids(spark):
    """Every valid record and window event here has the same 64-bit hash: only exact ids make duplicates."""
    from pyspark.sql import functions as F

    from reco_assets.silver.events import contract_checked, duplicate_rows, outcome_rows

    start = hour_start(EARLY)
    values = [view(uuid(1), 1), view(uuid(2), 2), view(uuid(1).upper(), 3), b"not json"]
    records = spark.createDataFrame([("events_views", 0, i, start + timedelta(minutes=59, seconds=i), b"1", v)
                                     for i, v in enumerate(values)], BRONZE_EVENT_SCHEMA)
    checked = contract_checked(records.withColumnRenamed("timestamp", "received_at")).withColumn(
        "event_hash", F.when(F.col("reject_reason").isNull(), F.lit(7)))
    window = spark.createDataFrame([(7, uuid(3), "2026-11-05-08"), (7, uuid(2), "2026-11-05-12"),
                                    (7, uuid(2), "2026-11-05-09")], "event_hash bigint, event_id string, hour string")

    duplicates = duplicate_rows(checked, window)
    assert sorted(zip(duplicates["offset"].to_pylist(), duplicates["detail"].to_pylist(), strict=True)) == [
        (1, "event_id already in hour 2026-11-05-09:00"), (2, "duplicate of events_views/0@0")]
    rows = {r["offset"]: r for r in outcome_rows(checked, duplicates, EARLY).collect()}
    assert [(o, r["rejected"], r["reason"], r["event_id"], r["event_hash"], r["value"] is not None)
            for o, r in sorted(rows.items())] == [
        (0, False, None, uuid(1), 7, False),
        (1, True, "duplicate", uuid(2), None, True),
        (2, True, "duplicate", uuid(1), None, True),
        (3, True, "not_json", None, None, True)]
    assert bytes(rows[2]["value"]) == values[2] and rows[1]["user_id"] is None and rows[0]["user_id"] == 1
    assert {r["hour"] for r in rows.values()} == {hour_value(EARLY)}


def test_the_in_memory_threshold_is_read_at_each_run_and_refused_when_not_a_number(monkeypatch):
    monkeypatch.delenv("RECO_SILVER_IN_MEMORY_RECORDS", raising=False)
    assert in_memory_records() == 1_000_000
    monkeypatch.setenv("RECO_SILVER_IN_MEMORY_RECORDS", "300000")
    assert in_memory_records() == 300_000
    monkeypatch.setenv("RECO_SILVER_IN_MEMORY_RECORDS", "1e6")
    with pytest.raises(dg.Failure, match="RECO_SILVER_IN_MEMORY_RECORDS must be a whole number of records, not '1e6'"):
        in_memory_records()
