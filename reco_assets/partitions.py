"""Hourly partitions of the event tables, by broker time (Kafka's LogAppendTime)."""

import os
from datetime import datetime, timedelta

import dagster as dg

# The first hour the UI offers; override with RECO_EVENTS_START (format YYYY-MM-DD-HH:MM) for older streams.
EVENTS_START = os.environ.get("RECO_EVENTS_START", "2026-11-01-00:00")

# end_offset=1 includes the open (current) hour, so live events are materialized before the hour closes.
hourly_events = dg.HourlyPartitionsDefinition(start_date=EVENTS_START, end_offset=1, timezone="UTC")


def hour_start(partition_key: str) -> datetime:
    return hourly_events.time_window_for_partition_key(partition_key).start


def hour_key(moment: datetime) -> str:
    """The partition key of the hour that contains `moment` (aware datetime)."""
    return moment.strftime("%Y-%m-%d-%H:00")


def hour_folder(partition_key: str) -> str:
    """Hive-style folder of one hour: `hour=2026-11-23-12`."""
    return f"hour={partition_key.removesuffix(':00')}"


def previous_hour(partition_key: str) -> str:
    return hour_key(hour_start(partition_key) - timedelta(hours=1))


def next_hour(partition_key: str) -> str:
    return hour_key(hour_start(partition_key) + timedelta(hours=1))


def folder_hour(folder_name: str) -> str:
    """The partition key of a Hive-style hour folder: `hour=2026-11-23-12` -> `2026-11-23-12:00`."""
    return folder_name.removeprefix("hour=") + ":00"
