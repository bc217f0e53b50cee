"""silver_events across hour boundaries, on bronze hours written here in bronze_events' layout."""

import json
from datetime import timedelta

import pyarrow as pa
import pyarrow.parquet as pq

from reco_assets.bronze.events import partition_path
from reco_assets.partitions import hour_start
from reco_assets.resources import LakehouseResource
from reco_assets_tests.conftest import materialize

SILVER = ["silver_events", "silver_events_rejected"]
EARLY, LATE = "2026-11-05-10:00", "2026-11-05-11:00"


def view(event_id: str, minute: int) -> bytes:
    return json.dumps({"event_id": event_id, "event_type": "view", "event_ts": f"2026-11-05T10:{minute:02d}:00Z",
                       "user_id": 1, "movie_id": 1, "device_type": "mobile"}).encode()


def write_bronze(lakehouse: LakehouseResource, hour: str, values: list[bytes]) -> None:
    folder = partition_path(lakehouse, "events", "bronze", hour)
    folder.mkdir(parents=True, exist_ok=True)
    start = hour_start(hour)
    pq.write_table(pa.table({
        "topic": pa.array(["events_views"] * len(values)),
        "partition": pa.array([0] * len(values), pa.int32()),
        "offset": pa.array(range(len(values)), pa.int64()),
        "timestamp": pa.array([start + timedelta(seconds=i) for i in range(len(values))], pa.timestamp("us", "UTC")),
        "key": pa.array([b"1"] * len(values)),
        "value": pa.array(values),
    }), folder / "part-00000.parquet")


def uuid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def check(result) -> tuple[bool, dict]:
    evaluation = next(e for e in result.get_asset_check_evaluations() if e.check_name == "event_id_unique")
    return evaluation.passed, {k: v.value for k, v in evaluation.metadata.items()}


def test_an_hour_materialized_after_the_next_one_flags_it_until_it_is_rerun(tmp_path, dagster_instance, spark):
    """The late hour, landed first, keeps an event retried across the boundary; the early hour's run then fails
    `event_id_unique` naming the late hour, whose new run sends its copy to the dead letter."""
    lakehouse = LakehouseResource(data_dir=str(tmp_path))
    write_bronze(lakehouse, EARLY, [view(uuid(1), 1), view(uuid(2), 59)])
    write_bronze(lakehouse, LATE, [view(uuid(2), 59), view(uuid(3), 5)])

    assert check(materialize(SILVER, tmp_path, dagster_instance, partition_key=LATE))[0]
    passed, metadata = check(materialize(SILVER, tmp_path, dagster_instance, partition_key=EARLY,
                                         raise_on_error=False))
    assert not passed
    assert metadata["event_ids_also_in_next_hour"] == 1 and metadata["rematerialize"] == LATE

    passed, metadata = check(materialize(SILVER, tmp_path, dagster_instance, partition_key=LATE))
    assert passed and metadata["duplicate_event_ids"] == 0
    late = pq.read_table(partition_path(lakehouse, "events", "silver", LATE)).column("event_id").to_pylist()
    rejected = pq.read_table(partition_path(lakehouse, "events_rejected", "silver", LATE)).to_pylist()
    assert late == [uuid(3)]
    assert [(r["event_id"], r["reason"], r["detail"]) for r in rejected] == [
        (uuid(2), "duplicate", "event_id already in the previous hour")]
    assert rejected[0]["value"] == view(uuid(2), 59)  # the raw bytes, read back from bronze

