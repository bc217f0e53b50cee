"""split_new, the live run's in-memory rules, on hand-made rows (the Spark side is tested in test_events.py)."""

from datetime import UTC, datetime, timedelta

import pyarrow as pa

from reco_assets.lakehouse.tables import EVENT_COLUMNS, OUTCOME_COLUMNS
from reco_assets.silver.increment import split_new

START = datetime(2026, 11, 5, 10, tzinfo=UTC)
HOUR = "2026-11-05-10"


def checked(*records: tuple) -> pa.Table:
    """Contract-checked records: (offset, second received, event_id, reject_reason)."""
    rows = [{**dict.fromkeys(EVENT_COLUMNS), "event_id": event_id, "event_type": None if reason else "view",
             "topic": "events_views", "partition": 0, "offset": offset, "received_at": START + timedelta(seconds=s),
             "event_hash": None if reason else hash(event_id), "key": b"k", "value": b"v%d" % offset,
             "reject_reason": reason, "reject_field": None, "reject_detail": reason and "bad"}
            for offset, s, event_id, reason in records]
    return pa.Table.from_pylist(rows)


def settled(*records: tuple) -> pa.Table:
    """The hour's accepted events: (offset, second received, event_id)."""
    return pa.Table.from_pylist([{"event_id": e, "received_at": START + timedelta(seconds=s), "topic": "events_views",
                                  "partition": 0, "offset": o} for o, s, e in records],
                                pa.schema([("event_id", pa.string()), ("received_at", pa.timestamp("us", "UTC")),
                                           ("topic", pa.string()), ("partition", pa.int32()), ("offset", pa.int64())]))


NO_SEEN = pa.table({"event_id": pa.array([], pa.string()), "hour": pa.array([], pa.string())})


def outcome(rows: pa.Table) -> list[tuple]:
    return sorted((r["offset"], r["rejected"], r["reason"], r["detail"], r["event_hash"] is not None,
                   r["value"] is not None) for r in rows.to_pylist())


def test_invalid_records_and_copies_go_to_the_dead_letter_with_their_raw_bytes():
    seen = pa.table({"event_id": ["c", "c"], "hour": ["2026-11-05-12", "2026-11-05-11"]})
    rows = split_new(checked((2, 5, None, "not_json"), (3, 6, "a", None), (4, 7, "a", None), (5, 8, "b", None),
                             (6, 9, "c", None)), settled((0, 1, "b")), seen, HOUR)
    assert rows.column_names == OUTCOME_COLUMNS
    assert outcome(rows) == [
        (2, True, "not_json", "bad", False, True),
        (3, False, None, None, True, False),
        (4, True, "duplicate", "duplicate of events_views/0@3", False, True),
        (5, True, "duplicate", "duplicate of events_views/0@0", False, True),
        (6, True, "duplicate", "event_id already in hour 2026-11-05-11:00", False, True),
    ]
    assert set(rows["hour"].to_pylist()) == {HOUR}


def test_a_new_copy_received_before_the_accepted_one_asks_for_a_rebuild():
    assert split_new(checked((5, 1, "b", None)), settled((0, 2, "b")), NO_SEEN, HOUR) is None
    assert split_new(checked((5, 3, "b", None)), settled((0, 2, "b")), NO_SEEN, HOUR) is not None
