"""`kafka_events_sensor`: turns new Kafka records into runs of the hour partitions that received them."""

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import dagster as dg

from reco_assets.bronze.events import CLOSE_GRACE, bronze_events
from reco_assets.gold.stream import stream_gold_assets
from reco_assets.kafka.client import KafkaResource, KafkaSetupError, KafkaUnavailable, TopicPartitionKey
from reco_assets.lakehouse.hours import hour_key, hour_start, hourly_events, hours_between
from reco_assets.silver.events import silver_events

# The open hour is re-materialized when new records came, no run of it is queued or running, and its last
# run was requested at least this long ago; closed hours get one final run.
OPEN_HOUR_REFRESH_S = float(os.environ.get("RECO_OPEN_HOUR_REFRESH_S", "10"))
SENSOR_INTERVAL_S = int(os.environ.get("RECO_SENSOR_INTERVAL_S", "5"))
# Runs of the open hour keep gold_trending_now current and refresh the hour's gold_trending and
# gold_genre_minute_stats only this often (they are off the live path); closed hours get all of them.
OPEN_HOUR_FULL_REFRESH_S = float(os.environ.get("RECO_OPEN_HOUR_FULL_REFRESH_S", "120"))
IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
             dg.DagsterRunStatus.STARTED]

events_job = dg.define_asset_job(
    "events_hourly_job",
    selection=dg.AssetSelection.assets(bronze_events, silver_events, *stream_gold_assets),
    partitions_def=hourly_events,
    description="One broker hour of events: Kafka → bronze_events → silver_events (+ dead letter) → trending "
                "(hourly, per genre and minute, now).",
)
# What a live refresh of the open hour materializes.
LIVE_ASSETS = [dg.AssetKey(name) for name in ("bronze_events", "silver_events", "silver_events_rejected",
                                               "gold_trending_now")]


@dataclass
class Cursor:
    """Per-partition offsets already covered by requested runs, where to scan from, open hours run so far
    (when last run, when last run with every asset)."""

    offsets: dict[str, int] = field(default_factory=dict)
    scan_from: str | None = None
    open_hours: dict[str, float] = field(default_factory=dict)
    full_runs: dict[str, float] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: str | None) -> "Cursor":
        return cls(**json.loads(raw)) if raw else cls()

    def dump(self) -> str:
        return json.dumps({"offsets": self.offsets, "scan_from": self.scan_from, "open_hours": self.open_hours,
                           "full_runs": self.full_runs}, sort_keys=True)


@dataclass(frozen=True)
class HourRun:
    hour: str
    closed: bool
    run_key: str
    records: int
    live: bool = False  # only the live assets (LIVE_ASSETS), not the hour's whole gold


def _tp_name(tp: TopicPartitionKey) -> str:
    return f"{tp[0]}:{tp[1]}"


def plan_tick(
    cursor: Cursor,
    now: datetime,
    end: dict[TopicPartitionKey, int],
    log_start: dict[TopicPartitionKey, int],
    first_hour: Callable[[], str | None],
    offsets_at: Callable[[datetime], dict[TopicPartitionKey, int]],
    open_refresh_s: float,
    in_flight: Callable[[str], bool] = lambda hour: False,
    full_refresh_s: float = 0.0,
) -> tuple[list[HourRun], Cursor]:
    """Which hours to run, and the cursor after this tick. Pure apart from the look-ups passed in.

    `offsets_at(t)` gives the first offset at or after broker time t (the end offset when none yet);
    `in_flight(hour)` says whether a run of that hour is queued or running (then the open hour waits for it,
    so new records are picked up by the next run instead of piling up runs).
    """
    covered = {tp: max(cursor.offsets.get(_tp_name(tp), log_start[tp]), log_start[tp]) for tp in end}
    pending = any(end[tp] > covered[tp] for tp in end)
    current = hour_key(now)
    runs: list[HourRun] = []
    new_cursor = Cursor(dict(cursor.offsets), cursor.scan_from, dict(cursor.open_hours), dict(cursor.full_runs))

    def is_closed(hour: str) -> bool:
        return now >= hour_start(hour) + timedelta(hours=1) + CLOSE_GRACE

    scanned = set()
    if pending:
        scan_from = cursor.scan_from or first_hour() or current
        hours = []
        moment = hour_start(scan_from)
        while moment <= hour_start(current):
            hours.append(hour_key(moment))
            moment += timedelta(hours=1)
        boundaries = [offsets_at(hour_start(h)) for h in hours] + [end]
        advance = dict(end)
        for i, hour in enumerate(hours):
            lo, hi = boundaries[i], boundaries[i + 1]
            new = sum(max(0, hi[tp] - max(lo[tp], covered[tp])) for tp in end)
            if new == 0:
                continue
            scanned.add(hour)
            closed = is_closed(hour)
            signature = hashlib.sha1(json.dumps(sorted((_tp_name(tp), hi[tp]) for tp in end)).encode()).hexdigest()
            if not closed and (now.timestamp() - cursor.open_hours.get(hour, 0.0) < open_refresh_s
                               or in_flight(hour)):
                # Rate-limited: leave this hour's new records pending for a later tick.
                advance = {tp: min(advance[tp], max(lo[tp], covered[tp])) for tp in end}
                continue
            live = not closed and now.timestamp() - cursor.full_runs.get(hour, 0.0) < full_refresh_s
            state = "closed" if closed else "live" if live else "open"
            runs.append(HourRun(hour, closed, f"{hour}:{state}:{signature[:12]}", new, live))
            if closed:
                new_cursor.open_hours.pop(hour, None)
                new_cursor.full_runs.pop(hour, None)
            else:
                new_cursor.open_hours[hour] = now.timestamp()
                if not live:
                    new_cursor.full_runs[hour] = now.timestamp()
        new_cursor.offsets = {_tp_name(tp): advance[tp] for tp in end}
        new_cursor.scan_from = min([current, *[h for h in hours if h in new_cursor.open_hours]])
    # Hours that were last run while open and have closed since, without new records: one final run.
    for hour in sorted(cursor.open_hours):
        if hour not in scanned and is_closed(hour):
            runs.append(HourRun(hour, True, f"{hour}:closed:final", 0))
            new_cursor.open_hours.pop(hour, None)
            new_cursor.full_runs.pop(hour, None)
    return runs, new_cursor


def in_flight_hours(instance: dg.DagsterInstance) -> set[str]:
    """The hours that a queued or running run of the event assets covers: one partition (the sensor's runs) or a
    range (a single-run backfill, tagged with the range's first and last hour)."""
    hours = set()
    for run in instance.get_runs(dg.RunsFilter(statuses=IN_FLIGHT)):
        tags = run.tags
        if "dagster/partition" in tags:
            hours.add(tags["dagster/partition"])
        elif "dagster/asset_partition_range_start" in tags and "dagster/asset_partition_range_end" in tags:
            try:
                hours.update(hours_between(tags["dagster/asset_partition_range_start"],
                                           tags["dagster/asset_partition_range_end"]))
            except (ValueError, dg.DagsterInvariantViolationError):  # a range of another partitions definition
                continue
    return hours


@dg.sensor(
    job=events_job,
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches the event topics' offsets and requests runs for the broker hours with new records.",
)
def kafka_events_sensor(context: dg.SensorEvaluationContext, kafka: KafkaResource):
    cursor = Cursor.parse(context.cursor)
    now = datetime.now(UTC)
    started = time.monotonic()
    try:
        offsets = kafka.offsets()
        tps = offsets.partitions()
        end = offsets.end(tps)
        log_start = offsets.start(tps)

        def first_hour() -> str | None:
            firsts = offsets.first_timestamps(tps)
            return hour_key(datetime.fromtimestamp(min(firsts) / 1000, UTC)) if firsts else None

        def offsets_at(moment: datetime) -> dict[TopicPartitionKey, int]:
            return offsets.at_time(tps, int(moment.timestamp() * 1000), end)

        busy = in_flight_hours(context.instance)

        def in_flight(hour: str) -> bool:
            return hour in busy

        runs, new_cursor = plan_tick(cursor, now, end, log_start, first_hour, offsets_at, OPEN_HOUR_REFRESH_S,
                                     in_flight, OPEN_HOUR_FULL_REFRESH_S)
    except (KafkaUnavailable, KafkaSetupError) as error:
        return dg.SkipReason(f"{error} — the next tick resumes from the saved offsets")
    if not runs:
        return dg.SensorResult(skip_reason=f"no new records in the event topics at {kafka.bootstrap_servers}",
                               cursor=new_cursor.dump())
    context.log.info(f"{len(runs)} run(s) requested in {time.monotonic() - started:.2f} s; "
                     f"cursor {new_cursor.dump()}")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(run_key=run.run_key, partition_key=run.hour,
                          asset_selection=LIVE_ASSETS if run.live else None,
                          tags={"reco/hour_state": "closed" if run.closed else "live" if run.live else "open",
                                "reco/new_records": str(run.records)})
            for run in runs
        ],
        cursor=new_cursor.dump(),
    )
