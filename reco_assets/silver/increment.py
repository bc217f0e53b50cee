"""A live run's silver rows for the records that arrived since the hour's last run, computed in memory.

The rules are `duplicate_marks` and `split_hour`'s (reco_assets.silver.events), applied to the few new records that
Spark has contract-checked, against the events the hour already accepted (`settled`) and the copies other hours of
the window hold (`seen`). A test holds the two to the same rows.
"""

import pyarrow as pa
import pyarrow.compute as pc

from reco_assets.lakehouse.hours import HOUR_COLUMN
from reco_assets.lakehouse.tables import EVENT_COLUMNS, OUTCOME_COLUMNS

COORDINATES = ["topic", "partition", "offset"]  # a record's place in Kafka: unique


def positions(rows: pa.Table) -> list[tuple]:
    """Where each row's copy was received, ordered as `_position` orders them: broker time, topic, partition,
    offset."""
    received = pc.cast(rows["received_at"], pa.int64()).to_pylist()
    return list(zip(received, *(rows[c].to_pylist() for c in COORDINATES), strict=True))


def split_new(checked: pa.Table, settled: pa.Table, seen: pa.Table, hour: str) -> pa.Table | None:
    """The rows of silver.event_outcomes for the new records `checked` (validate_events' columns, `event_id` in
    lower case, `event_hash`, `received_at`, the coordinates, `key` and `value`), or None when a new copy of an
    event the hour accepted was received before it: then only a rebuild of the hour gives a rebuild's rows.

    `settled`: the hour's accepted events (`event_id`, `received_at` and the coordinates). `seen`: the accepted
    events of the window's other hours (`event_id`, `hour`) that share an id with the new records.
    """
    valid = pc.is_null(checked["reject_reason"]).to_pylist()
    ids = checked["event_id"].to_pylist()
    where = positions(checked)
    first: dict[str, tuple] = {}
    copies: dict[str, int] = {}
    for ok, event_id, position in zip(valid, ids, where, strict=True):
        if ok:
            first[event_id] = min(first.get(event_id, position), position)
            copies[event_id] = copies.get(event_id, 0) + 1
    kept = {}
    for event_id, position in zip(settled["event_id"].to_pylist(), positions(settled), strict=True):
        if event_id in first:
            first[event_id] = min(first[event_id], position)
            copies[event_id] += 1
            kept[event_id] = position
    seen_in: dict[str, str] = {}
    for event_id, other in zip(seen["event_id"].to_pylist(), seen[HOUR_COLUMN].to_pylist(), strict=True):
        if event_id in first:
            seen_in[event_id] = min(seen_in.get(event_id, other), other)
    if any(first[event_id] != position for event_id, position in kept.items()):
        return None
    duplicate, details = [], []
    for ok, event_id, position in zip(valid, ids, where, strict=True):
        if ok and event_id in seen_in:
            duplicate.append(True)
            details.append(f"event_id already in hour {seen_in[event_id]}:00")
        elif ok and copies[event_id] > 1 and first[event_id] != position:
            topic, partition, offset = first[event_id][1:]
            duplicate.append(True)
            details.append(f"duplicate of {topic}/{partition}@{offset}")
        else:
            duplicate.append(False)
            details.append(None)
    duplicate = pa.array(duplicate, pa.bool_())
    rejected = pc.or_(pc.invert(pa.array(valid, pa.bool_())), duplicate)
    accepted = pc.invert(rejected)

    def when(mask: pa.Array, values) -> pa.Array:
        values = values if isinstance(values, pa.ChunkedArray | pa.Array) else pa.array(values)
        return pc.if_else(mask, values, pa.scalar(None, values.type))

    out = {c: when(accepted, checked[c]) for c in EVENT_COLUMNS}
    n = checked.num_rows
    out |= {
        "event_id": checked["event_id"],
        **{c: checked[c] for c in [*COORDINATES, "received_at"]},
        "event_hash": when(accepted, checked["event_hash"]),
        "key": when(rejected, checked["key"]),
        "value": when(rejected, checked["value"]),
        "reason": pc.if_else(duplicate, "duplicate", checked["reject_reason"]),
        "field": pc.if_else(duplicate, "event_id", checked["reject_field"]),
        "detail": pc.if_else(duplicate, pa.array(details, pa.string()), checked["reject_detail"]),
        "rejected": rejected,
        HOUR_COLUMN: pa.array([hour] * n, pa.string()),
    }
    return pa.table({c: out[c] for c in OUTCOME_COLUMNS})
