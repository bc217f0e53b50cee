"""`kafka_events_sensor`: turns new Kafka records into runs of the hour partitions that received them."""

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import dagster as dg

from reco_assets.bronze.events import CLOSE_GRACE, bronze_events, kafka_event_topics
from reco_assets.gold.stream import stream_gold_assets
from reco_assets.kafka.client import (
    KafkaResource,
    KafkaSetupError,
    KafkaUnavailable,
    TopicPartitionKey,
    lag_by_topic,
)
from reco_assets.lakehouse import LakehouseResource
from reco_assets.lakehouse.hours import HOUR_STATE_TAG, hour_key, hour_start, hourly_events, hours_between
from reco_assets.silver.events import silver_events

# The open hour is re-materialized when new records came and no run of it waits to start (one may be running: the
# new run queues behind it and starts as soon as it ends), and its last run was requested at least this long ago;
# closed hours get one final run.
OPEN_HOUR_REFRESH_S = float(os.environ.get("RECO_OPEN_HOUR_REFRESH_S", "0"))
# The daemon evaluates sensors every 5 s at most (its loop); a minimum interval of 5 s as well aliases with that loop
# and skips every other evaluation about a third of the time, so the default asks for less and gets every loop.
SENSOR_INTERVAL_S = int(os.environ.get("RECO_SENSOR_INTERVAL_S", "1"))
# The open hour's runs are live ones: bronze and silver add the new records, gold_trending_now is recomputed. The
# hour's gold_trending and gold_genre_minute_stats are refreshed this often, by a run of their own that does not hold
# the hour (the live runs go on meanwhile); closed hours get every asset in their final run. 0: no live runs, every
# run of the open hour materializes every asset.
OPEN_HOUR_GOLD_REFRESH_S = float(os.environ.get("RECO_OPEN_HOUR_GOLD_REFRESH_S", "600"))
# A run in these states has not read Kafka's offsets yet: it will land every record that exists when it starts.
WAITING = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING]
IN_FLIGHT = [*WAITING, dg.DagsterRunStatus.STARTED]
FAILED = [dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
# Dagster's run tags: a single-run backfill's range of partitions, and the run queue's priority (higher first).
ASSET_PARTITION_RANGE_START_TAG = "dagster/asset_partition_range_start"
ASSET_PARTITION_RANGE_END_TAG = "dagster/asset_partition_range_end"
PRIORITY_TAG = "dagster/priority"
# An hour whose latest run failed or was cancelled is requested again after 30 s, 60 s, 120 s, ... (doubling), at
# most this many times in a row; then the tick reports it until someone materializes it (failures of the last day).
RETRY_BASE_S = float(os.environ.get("RECO_RETRY_BASE_S", "30"))
MAX_RETRIES = int(os.environ.get("RECO_MAX_RETRIES", "5"))
FAILURE_LOOKBACK = timedelta(hours=24)
# How often a tick records the topics' offsets and bronze's lag as an observation of kafka_event_topics.
OBSERVE_EVERY_S = float(os.environ.get("RECO_LAG_OBSERVE_S", "30"))

events_job = dg.define_asset_job(
    "events_hourly_job",
    selection=dg.AssetSelection.assets(bronze_events, silver_events, *stream_gold_assets),
    partitions_def=hourly_events,
    description="One broker hour of events: Kafka → bronze_events → silver_events (+ dead letter) → trending "
                "(hourly, per genre and minute, now).",
)
SILVER_EVENTS = dg.AssetKey("silver_events")
# What a live run of the open hour materializes, and what its gold refresh does.
LIVE_ASSETS = [dg.AssetKey(name) for name in ("bronze_events", "silver_events", "silver_events_rejected",
                                               "gold_trending_now")]
GOLD_REFRESH_ASSETS = [dg.AssetKey("gold_trending"), dg.AssetKey("gold_genre_minute_stats")]


@dataclass
class Cursor:
    """Per-partition offsets already covered by requested runs, where to scan from, open hours run so far
    (when last run, when their gold was last refreshed), when the topics were last observed."""

    offsets: dict[str, int] = field(default_factory=dict)
    scan_from: str | None = None
    open_hours: dict[str, float] = field(default_factory=dict)
    full_runs: dict[str, float] = field(default_factory=dict)
    observed_at: float = 0.0
    log_ids: dict[str, str] = field(default_factory=dict)  # the cluster's id and each topic's: which logs these are

    @classmethod
    def parse(cls, raw: str | None) -> "Cursor":
        return cls(**json.loads(raw)) if raw else cls()

    def dump(self) -> str:
        return json.dumps({"offsets": self.offsets, "scan_from": self.scan_from, "open_hours": self.open_hours,
                           "full_runs": self.full_runs, "observed_at": self.observed_at,
                           "log_ids": self.log_ids}, sort_keys=True)


@dataclass(frozen=True)
class FailedHour:
    """An hour whose latest runs failed or were cancelled: how many in a row, and when the last one ended."""

    failures: int
    failed_at: float


@dataclass(frozen=True)
class HourRun:
    """One run to request. `state` (its HOUR_STATE_TAG): `closed`, the hour's final run of every asset; `open`,
    every asset of the open hour; `live`, the open hour's LIVE_ASSETS; `gold`, the open hour's GOLD_REFRESH_ASSETS,
    in a run that does not hold the hour."""

    hour: str
    state: str
    run_key: str
    records: int
    retry: int = 0  # the run that follows this many failed runs of the hour in a row

    @property
    def closed(self) -> bool:
        return self.state == "closed"

    @property
    def live(self) -> bool:
        return self.state == "live"


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
    busy: Callable[[str], bool] = lambda hour: False,
    gold_refresh_s: float = 0.0,
    failed: dict[str, FailedHour] | None = None,
    log_ids: dict[str, str] | None = None,
    has_silver: Callable[[str], bool] = lambda hour: True,
) -> tuple[list[HourRun], Cursor, list[str]]:
    """Which hours to run, the cursor after this tick, and what the tick has to say. Pure apart from the look-ups
    passed in.

    `offsets_at(t)` gives the first offset at or after broker time t (the end offset when none yet);
    `busy(hour)` says whether the hour's next run must wait (`busy_hours`): then the open hour's new records are
    left to the run that waits, instead of piling up runs. A running run does not make an hour busy: the next run
    is requested at once and queues behind it (dagster.yaml allows one run per hour at a time). `failed` holds the
    hours whose latest run failed: each is run again after a doubling backoff, at most MAX_RETRIES times in a row;
    until then (and past that) its new records wait like a rate-limited hour's. With `gold_refresh_s`, the open
    hour's runs are live ones, and once silver_events holds the hour (`has_silver`) and a run of it was requested
    before, a gold refresh of it is requested at most that often.

    A topic-partition whose log is not the one the cursor was built on is read again from its log's start, from
    the first hour that has records: its cluster or topic id changed (`log_ids`, the cluster's id and each
    topic's), or its end offset fell below the cursor's (a broker that lost its data keeps its ids).
    """
    notes = []
    reset = {}
    before = cursor.log_ids
    for tp in end:
        name = _tp_name(tp)
        if before and log_ids and before.get("cluster") != log_ids.get("cluster"):
            reset[tp] = f"the cluster changed (id {before.get('cluster')} -> {log_ids.get('cluster')})"
        elif before and log_ids and before.get(tp[0]) and before.get(tp[0]) != log_ids.get(tp[0]):
            reset[tp] = f"topic {tp[0]} was recreated (id {before[tp[0]]} -> {log_ids.get(tp[0])})"
        elif cursor.offsets.get(name, 0) > end[tp]:
            reset[tp] = (f"the log ends at offset {end[tp]}, below the {cursor.offsets[name]} already covered (the "
                         "broker lost its data, or this is another cluster)")
    for tp, why in sorted(reset.items()):
        notes.append(f"{_tp_name(tp)}: {why}: reading it again from its start, offset {log_start[tp]}")
    covered = {tp: log_start[tp] if tp in reset else max(cursor.offsets.get(_tp_name(tp), log_start[tp]),
                                                         log_start[tp]) for tp in end}
    pending = any(end[tp] > covered[tp] for tp in end)
    current = hour_key(now)
    runs: list[HourRun] = []
    new_cursor = Cursor(dict(cursor.offsets), None if reset else cursor.scan_from, dict(cursor.open_hours),
                        dict(cursor.full_runs), cursor.observed_at, dict(log_ids or cursor.log_ids))

    def is_closed(hour: str) -> bool:
        return now >= hour_start(hour) + timedelta(hours=1) + CLOSE_GRACE

    def retry_wait(hour: str) -> float | None:
        """None when the hour's last run did not fail; else how long until it may run again (inf: never)."""
        failure = (failed or {}).get(hour)
        if failure is None:
            return None
        if failure.failures > MAX_RETRIES:
            return float("inf")
        return RETRY_BASE_S * 2 ** (failure.failures - 1) - (now.timestamp() - failure.failed_at)

    scanned = set()
    if pending:
        scan_from = new_cursor.scan_from or first_hour() or current
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
            wait = retry_wait(hour)
            if (wait is not None and wait > 0) or (not closed and (
                    now.timestamp() - cursor.open_hours.get(hour, 0.0) < open_refresh_s or busy(hour))):
                # Rate-limited, or backing off after a failure: leave this hour's new records for a later tick.
                advance = {tp: min(advance[tp], max(lo[tp], covered[tp])) for tp in end}
                continue
            state = "closed" if closed else "live" if gold_refresh_s > 0 else "open"
            retry = failed[hour].failures if wait is not None else 0
            runs.append(HourRun(hour, state, f"{hour}:{state}:{signature[:12]}", new, retry))
            if closed:
                new_cursor.open_hours.pop(hour, None)
                new_cursor.full_runs.pop(hour, None)
                continue
            if state == "live" and hour in cursor.open_hours and \
                    now.timestamp() - cursor.full_runs.get(hour, 0.0) >= gold_refresh_s and has_silver(hour):
                runs.append(HourRun(hour, "gold", f"{hour}:gold:{signature[:12]}", 0))
                new_cursor.full_runs[hour] = now.timestamp()
            new_cursor.open_hours[hour] = now.timestamp()
        new_cursor.offsets = {_tp_name(tp): advance[tp] for tp in end}
        new_cursor.scan_from = min([current, *[h for h in hours if h in new_cursor.open_hours]])
    # Hours that were last run while open and have closed since, without new records: one final run.
    for hour in sorted(cursor.open_hours):
        if hour not in scanned and is_closed(hour):
            runs.append(HourRun(hour, "closed", f"{hour}:closed:final", 0))
            new_cursor.open_hours.pop(hour, None)
            new_cursor.full_runs.pop(hour, None)
    planned = {run.hour for run in runs}
    for hour, failure in sorted((failed or {}).items()):
        wait = retry_wait(hour)
        if wait == float("inf"):
            notes.append(f"hour {hour}: {failure.failures} runs in a row failed; not retried again: materialize it "
                         "once the cause is fixed")
        elif hour in planned or busy(hour):
            continue
        elif wait > 0:
            notes.append(f"hour {hour}: its last run failed ({failure.failures} in a row); retrying in {wait:.0f} s")
        else:
            runs.append(HourRun(hour, "closed" if is_closed(hour) else "open",
                                f"{hour}:retry:{failure.failures}:{failure.failed_at:.0f}", 0, failure.failures))
            notes.append(f"hour {hour}: its last run failed ({failure.failures} in a row); retrying now")
    return runs, new_cursor, notes


def failed_hours(instance: dg.DagsterInstance, now: datetime) -> dict[str, FailedHour]:
    """The hours whose latest runs failed or were cancelled in the last day, with how many did in a row: runs of
    any job (the sensor's, or one started from the UI) tagged with the hour. An hour that silver_events
    materialized since (a backfill of a range of hours, say) is whole again and not listed."""
    recent = instance.get_run_records(dg.RunsFilter(statuses=FAILED, updated_after=now - FAILURE_LOOKBACK),
                                      limit=500)
    found = {}
    for hour in sorted({record.dagster_run.tags.get("dagster/partition") for record in recent} - {None}):
        try:
            hour_start(hour)
        except ValueError:  # a partition of another kind
            continue
        latest = instance.get_run_records(dg.RunsFilter(tags={"dagster/partition": hour}), limit=MAX_RETRIES + 2)
        failures = next((i for i, record in enumerate(latest) if record.dagster_run.status not in FAILED),
                        len(latest))
        if not failures:
            continue
        failed_at = latest[0].end_time or latest[0].update_timestamp.timestamp()
        healed = instance.fetch_materializations(dg.AssetRecordsFilter(
            asset_key=SILVER_EVENTS, asset_partitions=[hour], after_timestamp=failed_at), limit=1).records
        if not healed:
            found[hour] = FailedHour(failures, failed_at)
    return found


def silver_holds(instance: dg.DagsterInstance, hour: str) -> bool:
    """Whether silver_events was materialized for the hour: its gold can be refreshed."""
    return bool(instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=SILVER_EVENTS,
                                                                      asset_partitions=[hour]), limit=1).records)


def topics_observation(end: dict[TopicPartitionKey, int], start: dict[TopicPartitionKey, int],
                       landed: dict[TopicPartitionKey, int], where: str) -> dg.AssetObservation:
    """kafka_event_topics as observed now: per topic, the records its logs retain and the lag (not in bronze yet)."""
    lag = lag_by_topic(end, start, landed)
    metadata = {"bootstrap_servers": where, "lag": dg.MetadataValue.int(sum(n for *_, n in lag.values())),
                "records": dg.MetadataValue.int(sum(n for n, *_ in lag.values()))}
    for topic, (records, _, behind) in lag.items():
        metadata[f"{topic}_records"] = dg.MetadataValue.int(records)
        metadata[f"{topic}_lag"] = dg.MetadataValue.int(behind)
    return dg.AssetObservation(asset_key=kafka_event_topics.key, metadata=metadata)


def busy_hours(instance: dg.DagsterInstance) -> set[str]:
    """The hours whose next run must wait: a run of the hour (its `dagster/partition`) has not started yet, and will
    land the new records itself when it does; or a single-run backfill of a range of hours (tagged with the range's
    first and last hour, not `dagster/partition`, so dagster.yaml's per-hour limit cannot queue a run behind it)
    covers the hour and is queued or running. An open hour's gold refresh (also tagged with a range, so as not to
    hold the hour) does not make it busy."""
    hours = set()
    for run in instance.get_runs(dg.RunsFilter(statuses=IN_FLIGHT)):
        tags = run.tags
        if "dagster/partition" in tags:
            if run.status in WAITING:
                hours.add(tags["dagster/partition"])
        elif tags.get(HOUR_STATE_TAG) == "gold":
            continue
        elif ASSET_PARTITION_RANGE_START_TAG in tags and ASSET_PARTITION_RANGE_END_TAG in tags:
            try:
                hours.update(hours_between(tags[ASSET_PARTITION_RANGE_START_TAG], tags[ASSET_PARTITION_RANGE_END_TAG]))
            except (ValueError, dg.DagsterInvariantViolationError):  # a range of another partitions definition
                continue
    return hours


def run_request(run: HourRun) -> dg.RunRequest:
    """The request for one planned run. Live runs go first in the queue. A gold refresh names its hour as a range of
    one (as a single-run backfill does), not as `dagster/partition`, so dagster.yaml's one-run-per-hour limit does
    not queue the hour's live runs behind it."""
    tags = {HOUR_STATE_TAG: run.state, "reco/new_records": str(run.records),
            **({"reco/retry": str(run.retry)} if run.retry else {})}
    if run.state == "gold":
        return dg.RunRequest(run_key=run.run_key, asset_selection=GOLD_REFRESH_ASSETS,
                             tags={**tags, ASSET_PARTITION_RANGE_START_TAG: run.hour,
                                   ASSET_PARTITION_RANGE_END_TAG: run.hour, PRIORITY_TAG: "-1"})
    return dg.RunRequest(run_key=run.run_key, partition_key=run.hour,
                         asset_selection=LIVE_ASSETS if run.live else None,
                         tags={**tags, **({PRIORITY_TAG: "1"} if run.live else {})})


@dg.sensor(
    job=events_job,
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches the event topics' offsets and requests runs for the broker hours with new records.",
)
def kafka_events_sensor(context: dg.SensorEvaluationContext, kafka: KafkaResource, lakehouse: LakehouseResource):
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

        busy = busy_hours(context.instance)

        def waits(hour: str) -> bool:
            return hour in busy

        runs, new_cursor, notes = plan_tick(cursor, now, end, log_start, first_hour, offsets_at,
                                            OPEN_HOUR_REFRESH_S, waits, OPEN_HOUR_GOLD_REFRESH_S,
                                            failed_hours(context.instance, now), offsets.log_ids(),
                                            lambda hour: silver_holds(context.instance, hour))
    except (KafkaUnavailable, KafkaSetupError) as error:
        return dg.SkipReason(f"{error} — the next tick resumes from the saved offsets")
    for note in notes:
        context.log.warning(note)
    observations = []
    if now.timestamp() - cursor.observed_at >= OBSERVE_EVERY_S:
        try:
            observations.append(topics_observation(end, log_start, lakehouse.bronze_offsets(),
                                                   kafka.bootstrap_servers))
            new_cursor.observed_at = now.timestamp()
        except Exception as error:  # the lag is a report: never let it stop the runs
            context.log.warning(f"could not observe bronze's lag: {error}")
    if not runs:
        return dg.SensorResult(skip_reason="; ".join([*notes, f"no new records in the event topics at "
                                                              f"{kafka.bootstrap_servers}"]),
                               cursor=new_cursor.dump(), asset_events=observations)
    context.log.info(f"{len(runs)} run(s) requested in {time.monotonic() - started:.2f} s; "
                     f"cursor {new_cursor.dump()}")
    return dg.SensorResult(run_requests=[run_request(run) for run in runs], cursor=new_cursor.dump(),
        asset_events=observations,
    )
