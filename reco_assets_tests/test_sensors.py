"""The sensor's planning logic, on made-up offsets (pure; the real broker is in test_events_pipeline.py), and its
look-up of the hours that runs in flight cover (a temporary Dagster instance)."""

from bisect import bisect_left
from datetime import UTC, datetime, timedelta

import dagster as dg

from reco_assets.sensors import (
    GOLD_REFRESH_ASSETS,
    LIVE_ASSETS,
    MAX_RETRIES,
    RETRY_BASE_S,
    Cursor,
    FailedHour,
    HourRun,
    plan_tick,
    run_request,
)

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
TP = ("events_views", 0)


def log_of(*minutes: float) -> list[int]:
    """Broker timestamps (ms) of a partition's records, `minutes` after T0."""
    return [int((T0 + timedelta(minutes=m)).timestamp() * 1000) for m in minutes]


def tick(cursor: Cursor, now: datetime, log: list[int], refresh_s: float = 60.0, busy: frozenset = frozenset(),
         gold_refresh_s: float = 0.0):
    """(runs, cursor) of one tick."""
    return tick_notes(cursor, now, log, refresh_s, busy, gold_refresh_s)[:2]


def tick_notes(cursor: Cursor, now: datetime, log: list[int], refresh_s: float = 60.0, busy: frozenset = frozenset(),
               gold_refresh_s: float = 0.0, failed: dict | None = None, log_start: int = 0,
               log_ids: dict | None = None, has_silver=lambda hour: True):
    """(runs, cursor, notes) of one tick over one topic-partition whose records have the broker times `log`, the
    first `log_start` of them deleted."""
    end = {TP: len(log)}

    def offsets_at(moment: datetime) -> dict:
        return {TP: bisect_left(log, int(moment.timestamp() * 1000))}

    def first_hour():
        return (T0 + timedelta(milliseconds=log[0] - int(T0.timestamp() * 1000))).strftime("%Y-%m-%d-%H:00")

    return plan_tick(cursor, now, end, {TP: log_start}, first_hour, offsets_at, open_refresh_s=refresh_s,
                     busy=lambda hour: hour in busy, gold_refresh_s=gold_refresh_s, failed=failed,
                     log_ids=log_ids, has_silver=has_silver)


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


def test_open_hour_waits_while_a_run_of_it_waits_to_start_closed_hours_do_not():
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


def test_open_hour_runs_are_live_and_its_gold_is_refreshed_in_runs_of_its_own():
    now = T0 + timedelta(minutes=30)
    log = log_of(1)
    runs, cursor = tick(Cursor(), now, log, refresh_s=0, gold_refresh_s=120)
    # The hour's first run is a live one too (bronze and silver start it by appending); its gold comes next tick.
    assert [r.state for r in runs] == ["live"] and runs[0].run_key.split(":")[2] == "live"
    for seconds, states in ((5, ["live"]), (10, ["live", "gold"]), (60, ["live"]), (125, ["live"]),
                            (135, ["live", "gold"])):
        log = [*log, int((now + timedelta(seconds=seconds)).timestamp() * 1000)]
        # Not before silver_events holds the hour (the first run may still be going): its gold would fail.
        runs, cursor, _ = tick_notes(cursor, now + timedelta(seconds=seconds), log, refresh_s=0, gold_refresh_s=120,
                                     has_silver=lambda hour, at=seconds: at >= 10)
        assert [r.state for r in runs] == states, seconds
        assert all(r.hour == "2026-11-23-10:00" for r in runs) and len({r.run_key for r in runs}) == len(runs)
    # No new records, no gold refresh either; once closed, one final run of every asset.
    runs, cursor = tick(cursor, now + timedelta(seconds=400), log, refresh_s=0, gold_refresh_s=120)
    assert runs == []
    runs, cursor = tick(cursor, T0 + timedelta(minutes=61), log, refresh_s=0, gold_refresh_s=120)
    assert [r.state for r in runs] == ["closed"] and cursor.full_runs == {} and cursor.open_hours == {}
    # Without live runs (0), every run of the open hour is of every asset, and there is no gold refresh.
    runs, _ = tick(Cursor(), now, log_of(1), refresh_s=0)
    runs, _ = tick(_, now + timedelta(seconds=10), log_of(1, 30.1), refresh_s=0)
    assert [r.state for r in runs] == ["open"]


def test_gold_refresh_runs_name_their_hour_as_a_range_and_leave_it_free():
    gold = run_request(HourRun("2026-11-23-10:00", "gold", "k", 0))
    assert gold.partition_key is None and gold.asset_selection == GOLD_REFRESH_ASSETS
    assert gold.tags["dagster/asset_partition_range_start"] == gold.tags["dagster/asset_partition_range_end"] \
        == "2026-11-23-10:00"
    live = run_request(HourRun("2026-11-23-10:00", "live", "k", 3))
    assert live.partition_key == "2026-11-23-10:00" and live.asset_selection == LIVE_ASSETS
    assert int(live.tags["dagster/priority"]) > int(gold.tags["dagster/priority"])
    assert run_request(HourRun("2026-11-23-10:00", "closed", "k", 3)).asset_selection is None


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


def test_a_failed_hour_is_retried_with_a_doubling_backoff_then_reported():
    log = log_of(5, 50)
    hour = "2026-11-23-10:00"
    now = T0 + timedelta(hours=2)
    _, cursor = tick(Cursor(), now, log)  # the hour ran once, and that run failed

    def retry(failures: int, ago_s: float, busy=frozenset()):
        failed = {hour: FailedHour(failures, now.timestamp() - ago_s)}
        return tick_notes(cursor, now, log, failed=failed, busy=busy)

    runs, _, notes = retry(1, RETRY_BASE_S - 1)
    assert runs == [] and notes == [f"hour {hour}: its last run failed (1 in a row); retrying in 1 s"]
    runs, _, notes = retry(1, RETRY_BASE_S)
    assert [(r.hour, r.closed, r.retry) for r in runs] == [(hour, True, 1)] and ":retry:1:" in runs[0].run_key
    assert notes == [f"hour {hour}: its last run failed (1 in a row); retrying now"]
    runs, _, _ = retry(3, 4 * RETRY_BASE_S - 1)  # the third failure waits four times the base
    assert runs == []
    runs, _, _ = retry(3, 4 * RETRY_BASE_S)
    assert [r.hour for r in runs] == [hour]
    runs, _, notes = retry(MAX_RETRIES + 1, 10**6)
    assert runs == [] and "runs in a row failed; not retried again" in notes[0]
    runs, _, notes = retry(1, 10**6, busy=frozenset({hour}))  # a run of it is in flight: nothing to do
    assert runs == [] and notes == []
    # The same failure streak never gets the same run key twice (Dagster drops a repeated key).
    first, _, _ = retry(1, RETRY_BASE_S)
    later = tick_notes(cursor, now, log, failed={hour: FailedHour(1, now.timestamp() - RETRY_BASE_S - 600)})[0]
    assert first[0].run_key != later[0].run_key


def test_a_failing_hour_with_new_records_waits_for_its_backoff_too():
    """While records keep coming, a failing open hour is not re-run every refresh: it backs off like a retry."""
    now = T0 + timedelta(minutes=30)
    hour = "2026-11-23-10:00"
    _, cursor = tick(Cursor(), now, log_of(1), refresh_s=0)
    failed = {hour: FailedHour(2, now.timestamp())}  # two failures: the next run waits 2 × the base
    runs, held, _ = tick_notes(cursor, now + timedelta(seconds=1), log_of(1, 29), refresh_s=0, failed=failed)
    assert runs == [] and held.offsets == cursor.offsets  # its new record stays pending
    later = now + timedelta(seconds=2 * RETRY_BASE_S)
    runs, moved, _ = tick_notes(held, later, log_of(1, 29), refresh_s=0, failed=failed)
    assert [(r.hour, r.records, r.retry) for r in runs] == [(hour, 1, 2)] and moved.offsets == {"events_views:0": 2}
    abandoned = {hour: FailedHour(MAX_RETRIES + 1, now.timestamp())}
    runs, _, notes = tick_notes(held, later + timedelta(days=1), log_of(1, 29), refresh_s=0, failed=abandoned)
    assert runs == [] and "not retried again" in notes[0]


def test_a_recreated_topic_is_read_again_even_when_its_new_log_is_longer():
    """The topic ids tell a new log from the old one whatever its length."""
    ids = {"cluster": "c1", "events_views": "t1"}
    _, cursor, _ = tick_notes(Cursor(), T0 + timedelta(hours=2), log_of(*range(0, 40)), log_ids=ids)
    assert cursor.offsets == {"events_views:0": 40} and cursor.log_ids == ids
    longer = log_of(*[60 + m / 10 for m in range(50)])  # 50 records, all in hour 11
    runs, after, notes = tick_notes(cursor, T0 + timedelta(hours=2, minutes=1), longer,
                                    log_ids={"cluster": "c1", "events_views": "t2"})
    assert notes == ["events_views:0: topic events_views was recreated (id t1 -> t2): reading it again from its "
                     "start, offset 0"]
    assert [(r.hour, r.records) for r in runs] == [("2026-11-23-11:00", 50)] and after.log_ids["events_views"] == "t2"
    runs, _, notes = tick_notes(cursor, T0 + timedelta(hours=2, minutes=1), longer,
                                log_ids={"cluster": "c2", "events_views": "t1"})
    assert notes[0].startswith("events_views:0: the cluster changed (id c1 -> c2)") and runs


def test_a_log_that_ends_below_the_cursor_is_read_again_from_its_start():
    """Topics recreated (or another cluster): the end offset falls below what the cursor covers."""
    _, cursor = tick(Cursor(), T0 + timedelta(hours=2), log_of(*range(0, 60, 2), 61, 62))  # 32 records
    assert cursor.offsets == {"events_views:0": 32}
    new_log = log_of(63, 64, 95)  # three records in the new log, all in hour 11
    runs, after, notes = tick_notes(cursor, T0 + timedelta(hours=2, minutes=1), new_log)
    assert notes == ["events_views:0: the log ends at offset 3, below the 32 already covered (the broker lost its "
                     "data, or this is another cluster): reading it again from its start, offset 0"]
    assert [(r.hour, r.records) for r in runs] == [("2026-11-23-11:00", 3)]
    assert after.offsets == {"events_views:0": 3}
    runs, _, notes = tick_notes(after, T0 + timedelta(hours=2, minutes=3), new_log)
    assert runs == [] and notes == []


def test_cursor_round_trips_as_json():
    cursor = Cursor({"events_views:0": 3}, "2026-11-23-10:00", {"2026-11-23-10:00": 1.5})
    assert Cursor.parse(cursor.dump()) == cursor
    assert Cursor.parse(None) == Cursor()


def test_busy_hours_are_those_with_a_run_waiting_to_start_or_a_range_backfill_in_flight():
    """A run that waits to start will land the new records itself; a running run of one hour does not hold the next
    one back (it queues behind it). A range backfill carries the range's first and last hour as tags, not
    dagster/partition: every hour of it is busy while it is queued or running; an open hour's gold refresh, tagged
    the same way, is not. Finished runs are forgotten."""
    from dagster._core.storage.dagster_run import DagsterRun

    from reco_assets.sensors import busy_hours

    with dg.instance_for_test() as instance:
        for status, tags in (
            (dg.DagsterRunStatus.STARTED, {"dagster/asset_partition_range_start": "2026-11-05-22:00",
                                           "dagster/asset_partition_range_end": "2026-11-06-01:00"}),
            (dg.DagsterRunStatus.STARTING, {"dagster/partition": "2026-11-07-03:00"}),
            (dg.DagsterRunStatus.NOT_STARTED, {"dagster/partition": "2026-11-07-04:00"}),
            (dg.DagsterRunStatus.STARTED, {"dagster/partition": "2026-11-07-05:00"}),
            (dg.DagsterRunStatus.SUCCESS, {"dagster/partition": "2026-11-08-03:00"}),
            (dg.DagsterRunStatus.STARTED, {"dagster/asset_partition_range_start": "2026-11-09-03:00",
                                           "dagster/asset_partition_range_end": "2026-11-09-03:00",
                                           "reco/hour_state": "gold"}),  # an open hour's gold refresh
        ):
            instance.add_run(DagsterRun(job_name="events_hourly_job", status=status, tags=tags))
        assert busy_hours(instance) == {"2026-11-05-22:00", "2026-11-05-23:00", "2026-11-06-00:00",
                                        "2026-11-06-01:00", "2026-11-07-03:00", "2026-11-07-04:00"}
