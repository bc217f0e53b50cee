"""The duplicate rules of silver_events, in memory, and the rows of records checked in memory: a live run's new
records, or a whole hour rebuilt in the run's process.

Duplicates are found by `event_id` (lower case) among an hour's valid records: the first copy by position
(`positions`) is kept, later copies and every copy of an event that another hour of the window holds go to the dead
letter. Arrow (or, for hours rebuilt by Spark jobs, `silver.events.duplicate_rows`) finds the few records
concerned; `duplicate_details` decides.
"""

import pyarrow as pa
import pyarrow.compute as pc

from reco_assets.lakehouse.hours import HOUR_COLUMN
from reco_assets.lakehouse.tables import EVENT_COLUMNS, OUTCOME_COLUMNS

COORDINATES = ["topic", "partition", "offset"]  # a record's place in Kafka: unique


def positions(rows: pa.Table) -> list[tuple]:
    """Where each row's copy was received, in the order that decides which copy is first: broker time, topic,
    partition, offset."""
    received = pc.cast(rows["received_at"], pa.int64()).to_pylist()
    return list(zip(received, *(rows[c].to_pylist() for c in COORDINATES), strict=True))


def duplicate_details(copies: pa.Table, seen: pa.Table, settled: pa.Table | None = None) -> pa.Array | None:
    """For each of the hour's valid records `copies` (`event_id`, `received_at`, the coordinates; every copy of
    each of their ids): the dead letter's detail when it is a duplicate, null when it is kept.

    `seen`: the accepted events of the window's other hours (`event_id`, `hour`) that share an id with them.
    `settled`: the hour's events accepted by an earlier run (same columns as `copies`), when only the new records
    are decided; None overall when a new copy was received before a settled one (only a rebuild decides then).

    Only the copies whose id is repeated, seen or settled are decided one by one; Arrow finds them.
    """
    ids = copies["event_id"]
    counts = pc.value_counts(ids)
    held = [seen["event_id"], *([settled["event_id"]] if settled is not None else [])]
    involved = pc.unique(pa.chunked_array(
        [pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1)).cast(pa.string()),
         *(chunk for column in held for chunk in column.cast(pa.string()).chunks)], pa.string()))
    concerned = pc.is_in(ids, value_set=involved).combine_chunks()
    mine = copies.filter(concerned)
    if settled is not None:  # only the settled copies of ids decided here matter
        settled = settled.filter(pc.is_in(settled["event_id"], value_set=pc.unique(mine["event_id"])))
    decided = _decide(mine, seen, settled)
    if decided is None:
        return None
    return pc.replace_with_mask(pa.nulls(len(copies), pa.string()), concerned, pa.array(decided, pa.string()))


def _decide(copies: pa.Table, seen: pa.Table, settled: pa.Table | None) -> list[str | None] | None:
    """`duplicate_details` for copies that all share an id with another copy, `seen` or `settled`."""
    ids, where = copies["event_id"].to_pylist(), positions(copies)
    first: dict[str, tuple] = {}
    count: dict[str, int] = {}
    for event_id, position in zip(ids, where, strict=True):
        first[event_id] = min(first.get(event_id, position), position)
        count[event_id] = count.get(event_id, 0) + 1
    if settled is not None:
        kept = {}
        for event_id, position in zip(settled["event_id"].to_pylist(), positions(settled), strict=True):
            if event_id in first:
                first[event_id] = min(first[event_id], position)
                count[event_id] += 1
                kept[event_id] = position
        if any(first[event_id] != position for event_id, position in kept.items()):
            return None
    seen_in: dict[str, str] = {}
    for event_id, other in zip(seen["event_id"].to_pylist(), seen[HOUR_COLUMN].to_pylist(), strict=True):
        if event_id in first:
            seen_in[event_id] = min(seen_in.get(event_id, other), other)
    details = []
    for event_id, position in zip(ids, where, strict=True):
        if event_id in seen_in:
            details.append(f"event_id already in hour {seen_in[event_id]}:00")
        elif count[event_id] > 1 and first[event_id] != position:
            topic, partition, offset = first[event_id][1:]
            details.append(f"duplicate of {topic}/{partition}@{offset}")
        else:
            details.append(None)
    return details


def split_new(checked: pa.Table, settled: pa.Table | None, seen: pa.Table, hour: str) -> pa.Table | None:
    """The rows of silver.event_outcomes for the new records `checked` (validate_events' columns, `event_id` in
    lower case, `event_hash`, `received_at`, the coordinates, `key` and `value`), or None when a new copy of an
    event the hour accepted was received before it: then only a rebuild of the hour gives a rebuild's rows.

    `settled`: the hour's accepted events (`event_id`, `received_at` and the coordinates); None when the whole
    hour is in `checked`. `seen`: the accepted events of the window's other hours (`event_id`, `hour`) that share
    an id with the new records.
    """
    valid = pc.is_null(checked["reject_reason"]).combine_chunks()
    decided = duplicate_details(checked.select(["event_id", "received_at", *COORDINATES]).filter(valid), seen, settled)
    if decided is None:
        return None
    details = pc.replace_with_mask(pa.nulls(checked.num_rows, pa.string()), valid, decided)
    duplicate = pc.is_valid(details)
    rejected = pc.or_(pc.invert(valid), duplicate)
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
        "detail": pc.if_else(duplicate, details, checked["reject_detail"]),
        "rejected": rejected,
        HOUR_COLUMN: pa.array([hour] * n, pa.string()),
    }
    return pa.table({c: out[c] for c in OUTCOME_COLUMNS})
