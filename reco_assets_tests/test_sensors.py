"""The sensor's planning logic, on made-up offsets (pure; the real broker is in test_events_pipeline.py), and its
look-up of the hours that runs in flight cover (a temporary Dagster instance)."""

from bisect import bisect_left
from datetime import UTC, datetime, timedelta

import dagster as dg

from reco_assets.sensors import Cursor, plan_tick

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
TP = ("events_views", 0)


def log_of(*minutes: float) -> list[int]:
    """Broker timestamps (ms) of a partition's records, `minutes` after T0."""
    return [int((T0 + timedelta(minutes=m)).timestamp() * 1000) for m in minutes]


def tick(cursor: Cursor, now: datetime, log: list[int], refresh_s: float = 60.0, busy: frozenset = frozenset(),
         full_refresh_s: float = 0.0):
    end = {TP: len(log)}

    def offsets_at(moment: datetime) -> dict:
        return {TP: bisect_left(log, int(moment.timestamp() * 1000))}

    def first_hour():
        return (T0 + timedelta(milliseconds=log[0] - int(T0.timestamp() * 1000))).strftime("%Y-%m-%d-%H:00")

    return plan_tick(cursor, now, end, {TP: 0}, first_hour, offsets_at, open_refresh_s=refresh_s,
                     in_flight=lambda hour: hour in busy, full_refresh_s=full_refresh_s)


def test_first_tick_runs_every_hour_with_records_closed_ones_final():
    log = log_of(5, 50, 70, 185)  # hours 10, 11 and 13; 12 is empty
    runs, cursor = tick(Cursor(), T0 + timedelta(hours=3, minutes=10), log)
    assert [(r.hour, r.closed, r.records) for r in runs] == [
        ("2026-11-23-10:00", True, 2), ("2026-11-23-11:00", True, 1), ("2026-11-23-13:00", False, 1)]
    assert cursor.offsets == {"events_views:0": 4}
    assert cursor.open_hours.keys() == {"2026-11-23-13:00"}
    assert len({r.run_key for r in runs}) == 3


def test_same_state_gives_same_run_keys_and_no_new_records_no_runs():
    log = log_of(5, 50)
    now = T0 + timedelta(hours=2)
    first, cursor = tick(Cursor(), now, log)
    again, _ = tick(Cursor(), now, log)
    assert [r.run_key for r in first] == [r.run_key for r in again]
    later, cursor2 = tick(cursor, now + timedelta(minutes=1), log)
    assert later == [] and cursor2.offsets == cursor.offsets


def test_open_hour_is_refreshed_at_a_bounded_rate():
    now = T0 + timedelta(minutes=30)
    runs, cursor = tick(Cursor(), now, log_of(1, 2), refresh_s=60)
    assert [r.closed for r in runs] == [False]
    # New records 20 s later: too soon, nothing requested and the records stay pending.
    runs, held = tick(cursor, now + timedelta(seconds=20), log_of(1, 2, 30.2), refresh_s=60)
    assert runs == [] and held.offsets == {"events_views:0": 2}
    # After the refresh interval they are picked up.
    runs, moved = tick(held, now + timedelta(seconds=61), log_of(1, 2, 30.2), refresh_s=60)
    assert [(r.hour, r.closed, r.records) for r in runs] == [("2026-11-23-10:00", False, 1)]
    assert moved.offsets == {"events_views:0": 3}


def test_open_hour_waits_while_a_run_of_it_is_in_flight_closed_hours_do_not():
    now = T0 + timedelta(minutes=30)
    runs, cursor = tick(Cursor(), now, log_of(1, 2), refresh_s=0)
    busy = frozenset({"2026-11-23-10:00"})
    runs, held = tick(cursor, now + timedelta(seconds=5), log_of(1, 2, 30.1), refresh_s=0, busy=busy)
    assert runs == [] and held.offsets == {"events_views:0": 2}
    runs, moved = tick(held, now + timedelta(seconds=10), log_of(1, 2, 30.1), refresh_s=0)
    assert [(r.hour, r.closed, r.records) for r in runs] == [("2026-11-23-10:00", False, 1)]
    assert moved.offsets == {"events_views:0": 3}
    # Once the hour has closed its final run is requested even while an open-hour run is still going.
    runs, _ = tick(moved, T0 + timedelta(minutes=61), log_of(1, 2, 30.1, 59), refresh_s=0, busy=busy)
    assert [(r.hour, r.closed) for r in runs] == [("2026-11-23-10:00", True)]


def test_open_hour_runs_are_live_between_full_refreshes():
    now = T0 + timedelta(minutes=30)
    log = log_of(1)
    runs, cursor = tick(Cursor(), now, log, refresh_s=0, full_refresh_s=120)
    assert [(r.live, r.run_key.split(":")[2]) for r in runs] == [(False, "open")]
    for seconds, live in ((10, True), (60, True), (125, False), (130, True)):
        log = [*log, int((now + timedelta(seconds=seconds)).timestamp() * 1000)]
        runs, cursor = tick(cursor, now + timedelta(seconds=seconds), log, refresh_s=0, full_refresh_s=120)
        assert [r.live for r in runs] == [live], seconds
    runs, cursor = tick(cursor, T0 + timedelta(minutes=61), log, refresh_s=0, full_refresh_s=120)
    assert [(r.closed, r.live) for r in runs] == [(True, False)] and cursor.full_runs == {}


def test_hour_that_closed_without_new_records_gets_one_final_run():
    runs, cursor = tick(Cursor(), T0 + timedelta(minutes=30), log_of(1))
    assert runs[0].closed is False
    runs, cursor = tick(cursor, T0 + timedelta(minutes=61), log_of(1))
    assert [(r.hour, r.closed, r.run_key) for r in runs] == [
        ("2026-11-23-10:00", True, "2026-11-23-10:00:closed:final")]
    assert cursor.open_hours == {}
    runs, _ = tick(cursor, T0 + timedelta(minutes=62), log_of(1))
    assert runs == []


def test_records_arriving_in_a_new_hour_close_the_previous_one():
    runs, cursor = tick(Cursor(), T0 + timedelta(minutes=59), log_of(1))
    runs, cursor = tick(cursor, T0 + timedelta(minutes=75), log_of(1, 58, 70))
    assert [(r.hour, r.closed, r.records) for r in runs] == [
        ("2026-11-23-10:00", True, 1), ("2026-11-23-11:00", False, 1)]
    assert cursor.scan_from == "2026-11-23-11:00"


def test_cursor_round_trips_as_json():
    cursor = Cursor({"events_views:0": 3}, "2026-11-23-10:00", {"2026-11-23-10:00": 1.5})
    assert Cursor.parse(cursor.dump()) == cursor
    assert Cursor.parse(None) == Cursor()


def test_in_flight_hours_include_single_run_backfills_of_a_range():
    """A range backfill carries the range's first and last hour as tags, not dagster/partition: the sensor must
    still see every hour of it as taken, and forget runs that have finished."""
    from dagster._core.storage.dagster_run import DagsterRun

    from reco_assets.sensors import in_flight_hours

    with dg.instance_for_test() as instance:
        for status, tags in (
            (dg.DagsterRunStatus.STARTED, {"dagster/asset_partition_range_start": "2026-11-05-22:00",
                                           "dagster/asset_partition_range_end": "2026-11-06-01:00"}),
            (dg.DagsterRunStatus.STARTING, {"dagster/partition": "2026-11-07-03:00"}),
            (dg.DagsterRunStatus.SUCCESS, {"dagster/partition": "2026-11-08-03:00"}),
        ):
            instance.add_run(DagsterRun(job_name="events_hourly_job", status=status, tags=tags))
        assert in_flight_hours(instance) == {"2026-11-05-22:00", "2026-11-05-23:00", "2026-11-06-00:00",
                                             "2026-11-06-01:00", "2026-11-07-03:00"}
