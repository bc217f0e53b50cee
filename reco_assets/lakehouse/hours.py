"""Hourly partitions of the event tables, by broker time (Kafka's LogAppendTime), and their `hour` column."""

import os
from datetime import datetime, timedelta

import dagster as dg

# The first hour the UI offers; override with RECO_EVENTS_START (format YYYY-MM-DD-HH:MM) for older streams.
EVENTS_START = os.environ.get("RECO_EVENTS_START", "2026-11-01-00:00")

# end_offset=1 includes the open (current) hour, so live events are materialized before the hour closes.
hourly_events = dg.HourlyPartitionsDefinition(start_date=EVENTS_START, end_offset=1, timezone="UTC")

# Hourly tables are Delta tables partitioned by this string column: `2026-11-23-12` for partition `2026-11-23-12:00`.
HOUR_COLUMN = "hour"
HOUR_PATTERN = "yyyy-MM-dd-HH"  # Spark's date_format pattern of the column

# kafka_events_sensor tags each run with the state of its hour: `closed` (its final run), `open` (every asset of
# the open hour), `live` (the open hour's live assets only; bronze and silver then add just the new records) or
# `gold` (a refresh of the open hour's gold_trending and gold_genre_minute_stats).
HOUR_STATE_TAG = "reco/hour_state"


def is_live_run(context: dg.AssetExecutionContext) -> bool:
    """Whether this is a live run of the open hour (one partition, tagged `live` by the sensor)."""
    return len(context.partition_keys) == 1 and context.run.tags.get(HOUR_STATE_TAG) == "live"


def hour_start(partition_key: str) -> datetime:
    return hourly_events.time_window_for_partition_key(partition_key).start


def hour_key(moment: datetime) -> str:
    """The partition key of the hour that contains `moment` (aware datetime)."""
    return moment.strftime("%Y-%m-%d-%H:00")


def hour_value(partition_key: str) -> str:
    """The `hour` column's value of a partition: `2026-11-23-12:00` -> `2026-11-23-12`."""
    return partition_key.removesuffix(":00")


def value_hour(value: str) -> str:
    """The partition key of an `hour` column value: `2026-11-23-12` -> `2026-11-23-12:00`."""
    return value + ":00"


def previous_hour(partition_key: str) -> str:
    return hour_key(hour_start(partition_key) - timedelta(hours=1))


def hours_between(first: str, last: str) -> list[str]:
    """Partition keys from `first` to `last`, both included."""
    keys, moment = [], hour_start(first)
    while moment <= hour_start(last):
        keys.append(hour_key(moment))
        moment += timedelta(hours=1)
    return keys
