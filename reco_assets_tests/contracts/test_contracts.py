"""The event contracts: the JSON Schemas, the Python checker and the Spark check agree on every case of
events_cases.json."""

import base64
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from jsonschema import Draft202012Validator
from pyspark.sql import functions as F

from reco_assets import contracts
from reco_assets.bronze.movielens import BUNDLED_SAMPLE
from reco_assets.contracts import ALL_FIELDS, EVENT_TYPE_BY_TOPIC, FIELDS, TOPICS, Rejection, check_event, schema
from reco_assets.events.generator import EventGenerator, load_population
from reco_assets.silver.event_contract import _FAST_PATTERNS, OUTPUT_TYPES, validate_events, validate_fast

CASES = json.loads((Path(__file__).parent / "events_cases.json").read_text(encoding="utf-8"))


def case_value(case: dict) -> bytes | None:
    """The record's raw bytes: `value_b64` as is, else `value` (with each `repeat` placeholder expanded) in UTF-8."""
    if "value_b64" in case:
        return base64.b64decode(case["value_b64"])
    if case["value"] is None:
        return None
    value = case["value"]
    for placeholder, (text, times) in case.get("repeat", {}).items():
        value = value.replace(placeholder, text * times)
    # surrogatepass: a case may spell an unpaired surrogate escape, never a raw surrogate.
    return value.encode("utf-8", "surrogatepass")


def broker_time(case: dict) -> datetime | None:
    """The record's broker time, for the cases that bound the event's time."""
    return datetime.fromisoformat(case["broker_time"]) if "broker_time" in case else None


def expected(rejection: Rejection | None) -> dict | None:
    return None if rejection is None else {"reason": rejection.reason, "field": rejection.field}


def test_cases_cover_every_reason_and_topic():
    assert len(CASES) >= 60
    assert len({case["name"] for case in CASES}) == len(CASES)
    reasons = {case["expect"]["reason"] for case in CASES if case["expect"]}
    assert reasons == set(contracts.REASONS)
    assert {case["topic"] for case in CASES if case["expect"] is None} == set(TOPICS.values())


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_check_event(case):
    rejection = check_event(case["topic"], case_value(case), broker_time(case))
    assert expected(rejection) == case["expect"]
    if rejection:
        assert rejection.detail and len(rejection.detail) <= contracts.DETAIL_CHARS


def test_check_event_refuses_an_unknown_topic():
    with pytest.raises(ValueError, match="unknown topic"):
        check_event("events_other", b"{}")


def test_spark_agrees_with_check_event(spark):
    rows = [(position, case["topic"], case_value(case), broker_time(case)) for position, case in enumerate(CASES)]
    records = spark.createDataFrame(rows, "case int, topic string, value binary, received_at timestamp")
    checked = validate_events(records, broker_time="received_at")

    assert checked.columns == [*records.columns, *OUTPUT_TYPES, "reject_reason", "reject_field", "reject_detail"]
    assert {name: checked.schema[name].dataType.simpleString() for name in OUTPUT_TYPES} == OUTPUT_TYPES
    # As microseconds: Python's datetime cannot hold every instant Spark can (year 0001 in a local time zone).
    results = {row.case: row for row in checked.withColumn("event_ts", F.unix_micros("event_ts")).collect()}
    disagreements = []
    for position, case in enumerate(CASES):
        row = results[position]
        spark_result = None if row.reject_reason is None else {"reason": row.reject_reason, "field": row.reject_field}
        python = check_event(case["topic"], case_value(case), broker_time(case))
        if spark_result != expected(python):
            disagreements.append((case["name"], spark_result, case["expect"]))
        if row.reject_reason is None:
            event_type = EVENT_TYPE_BY_TOPIC[case["topic"]]
            assert row.event_id and row.event_type == event_type and row.event_ts is not None, case["name"]
            assert all(row[f] is None for f in ALL_FIELDS if f not in FIELDS[event_type]), case["name"]
        else:
            assert row.reject_detail and all(row[f] is None for f in ALL_FIELDS), case["name"]
        if python is not None and python.reason == "out_of_range":
            assert row.reject_detail == python.detail, case["name"]
    assert disagreements == []

    by_name = {case["name"]: results[position] for position, case in enumerate(CASES)}
    view = by_name["view full"]
    assert (view.event_id, view.event_type, view.user_id, view.movie_id) == (
        "0b6f9b0e-3d1c-4f59-9d7e-2a4c8e1f5a01", "view", 42, 1)
    assert (view.session_id, view.device_type, view.page_url, view.watch_seconds) == (
        "9a7b3c1d-2e4f-4a6b-8c0d-1e2f3a4b5c6d", "smart_tv", "https://movies.example/m/1", 5400)
    assert datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=view.event_ts) == datetime(
        2024, 5, 1, 12, 34, 56, 789000, tzinfo=UTC)
    rating = by_name["rating full"]
    assert (rating.rating, rating.review_text) == (5.0, "Still holds up. Lovely ✨")
    assert by_name["rating 5 as an integer"].rating == 5.0
    assert by_name["integer written as 1.0"].user_id == 1
    assert by_name["integer written with an exponent"].user_id == 100
    assert by_name["largest id"].movie_id == 2147483647
    assert by_name["click full"].click_type == "recommendation"
    # Offsets are UTC only; fractions beyond microseconds are truncated.
    assert by_name["timestamp with +00:00"].event_ts == 1714566896_000000
    assert by_name["timestamp with 9 fractional digits"].event_ts == 1714566896_123456


def test_spark_refuses_an_unknown_topic(spark):
    records = spark.createDataFrame([("events_other", b"{}")], "topic string, value binary")
    with pytest.raises(Exception, match="no event contract for topic events_other"):
        validate_events(records).collect()


@pytest.mark.parametrize("event_type", contracts.EVENT_TYPES)
def test_schemas(event_type):
    event_schema = schema(event_type)
    Draft202012Validator.check_schema(event_schema)
    assert event_schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert event_schema["$id"] == f"https://reco-assets.dev/contracts/{event_type}.v{contracts.CONTRACT_VERSION}.json"
    assert event_schema["additionalProperties"] is False
    assert event_schema["properties"]["event_type"]["const"] == event_type
    assert list(event_schema["properties"])[:6] == ["event_id", "event_type", "event_ts", "user_id", "movie_id",
                                                    "session_id"]
    for example in event_schema["examples"]:
        assert check_event(TOPICS[event_type], json.dumps(example).encode()) is None


def test_public_api():
    assert EVENT_TYPE_BY_TOPIC == {"events_views": "view", "events_clicks": "click", "events_ratings": "rating"}
    assert FIELDS["view"][6:] == ("device_type", "page_url", "watch_seconds")
    assert FIELDS["click"][6:] == ("click_type", "referrer")
    assert FIELDS["rating"][6:] == ("rating", "review_text")
    assert ALL_FIELDS == (*FIELDS["view"], "click_type", "referrer", "rating", "review_text")
    assert tuple(OUTPUT_TYPES) == ALL_FIELDS
    schema("view")["properties"].clear()
    assert schema("view")["properties"], "schema() returns a copy"


def _mutations(seed: int, count: int) -> list[tuple[str, bytes]]:
    """Records near the contracts' edges: the valid cases and generated events, compact or spaced, with fields
    reordered, duplicated or set to boundary values, and with single characters deleted, inserted or replaced."""
    rng = random.Random(seed)
    population = load_population("/nonexistent", BUNDLED_SAMPLE)
    batch = EventGenerator(population, seed=seed).batch(300, now=datetime(2027, 1, 31, 12, tzinfo=UTC),
                                                        spread_s=3 * 86400)
    bases = [(t, json.loads(v)) for t, v in zip(batch.topics, batch.values, strict=True)]
    bases += [(c["topic"], json.loads(case_value(c))) for c in CASES if c["expect"] is None and "repeat" not in c]
    boundaries = [0, 1, -1, 9, 10, 999999999, 2147483647, 2147483648, 86399, 86400, 86401, 0.5, 4.5, 4.50, 5.0, 5,
                  5.5, 1e0, "1", None, True, "2024-02-29T00:00:00Z", "2023-02-29T00:00:00Z", "2024-04-30T23:59:59Z",
                  "2024-04-31T00:00:00Z", "2024-01-28T00:00:00.123456789+00:00", "smart_tv", "poster", "", "é"]
    pool = ['"', "\\", ",", ":", " ", "\n", "\t", "\x0b", "0", "9", "-", ".", "e", "}", "{", "]", "x", "é", "\x01",
            "\u2028"]
    records = []
    for _ in range(count):
        topic, event = rng.choice(bases)
        event = dict(event)
        kind = rng.randrange(6)
        if kind == 1:
            event[rng.choice(list(event))] = rng.choice(boundaries)
        elif kind == 2:
            event = dict(rng.sample(list(event.items()), len(event)))
        separators = rng.choice([(",", ":"), (", ", ": "), (" ,\n", " : "), (",", ":\t")])
        text = json.dumps(event, separators=separators, ensure_ascii=rng.random() < 0.5)
        if kind == 3:
            field = rng.choice(list(event))
            text = text[:-1] + f', "{field}": {json.dumps(event[field])}}}'
        elif kind in (4, 5):
            at = rng.randrange(len(text) + 1)
            tail = text[at + 1:] if rng.random() < 0.5 else text[at:]
            text = text[:at] + (rng.choice(pool) if kind == 5 or rng.random() < 0.5 else "") + tail
        records.append((topic, text.encode()))
    return records


def test_spark_agrees_with_check_event_near_the_edges(spark):
    """2,000 records around the contracts' edges: Spark's reason and field equal check_event's for every one, the
    values of valid ones equal the JSON's, and the fast path (`_FAST_PATTERNS`) only ever accepts valid records
    while accepting every generated one."""
    records = _mutations(seed=11, count=2_000)
    rows = [(i, topic, value) for i, (topic, value) in enumerate(records)]
    df = spark.createDataFrame(rows, "i int, topic string, value binary")
    fast = F.coalesce(*[F.when(F.col("topic") == TOPICS[t], F.col("value").cast("string").rlike(pattern))
                        for t, pattern in _FAST_PATTERNS.items()])
    checked = validate_events(df.withColumn("fast", fast)).drop("event_ts").collect()
    disagreements, valid, fast_valid = [], 0, 0
    for row in checked:
        expect = expected(check_event(row.topic, row.value))
        got = None if row.reject_reason is None else {"reason": row.reject_reason, "field": row.reject_field}
        if got != expect or (row.fast and expect is not None):
            disagreements.append((row.value, got, expect, row.fast))
        if expect is None:
            valid += 1
            fast_valid += bool(row.fast)
            event = json.loads(row.value)
            assert (row.event_id, row.user_id, row.movie_id) == (event["event_id"], event["user_id"], event["movie_id"])
    assert disagreements == []
    assert 600 < valid < 1_800 and fast_valid > 300  # both paths well exercised

    # Every generated event takes the fast path, whatever its day, but for February 29 (a leap day needs the full check)
    generator = EventGenerator(load_population("/nonexistent", BUNDLED_SAMPLE), seed=5)
    rows = []
    for day in [datetime(2027, 1, 1, tzinfo=UTC) + timedelta(days=d) for d in range(731)]:  # 2027 and leap 2028
        generated = generator.batch(4, now=day + timedelta(hours=23, minutes=59), spread_s=86_399)
        rows += [(topic, value, day.strftime("%m-%d")) for topic, value in zip(generated.topics, generated.values,
                                                                                 strict=True)]
    df = spark.createDataFrame(rows, "topic string, value binary, day string")
    slow_days = {row.day for row in df.where(~fast).select("day").distinct().collect()}
    assert slow_days == {"02-29"}
    assert all(check_event(topic, value) is None for topic, value, day in rows if day == "02-29")


def test_arrow_types_exactly_what_spark_types_and_only_valid_records(spark):
    """validate_fast (Arrow, in the run's process) takes only records that check_event accepts, and gives each the
    row validate_events gives: the cases, 2,000 records near the edges, strings at and past a maxLength above RE2's
    repetition limit, events outside the time bounds of their broker time, and generated events, which it takes
    all of: more than a block of Arrow's JSON reader (1 MiB) of views, so that objects straddle blocks."""
    day = datetime(2027, 1, 31, 12, tzinfo=UTC)
    generated = EventGenerator(load_population("/nonexistent", BUNDLED_SAMPLE), seed=3).batch(10_000, now=day)
    rating = {"event_id": "0B6F9B0E-3D1C-4F59-9D7E-2A4C8E1F5A01", "event_type": "rating",
              "event_ts": "2027-01-31T11:59:00.123456789+00:00", "user_id": 1, "movie_id": 2, "rating": 4.5}
    records = [(c["topic"], case_value(c), broker_time(c)) for c in CASES]
    records += [(topic, value, day) for topic, value in _mutations(seed=13, count=2_000)]
    records += [(TOPICS["rating"], json.dumps({**rating, "review_text": "a" * n}).encode(), day)
                for n in (5_000, 5_001)]
    event_time, tick = datetime(2027, 1, 31, 11, 59, 0, 123456, tzinfo=UTC), timedelta(microseconds=1)
    records += [(TOPICS["rating"], json.dumps(rating).encode(), at) for at in (
        event_time + contracts.EVENT_TIME_MAX_AGE, event_time + contracts.EVENT_TIME_MAX_AGE + tick,
        event_time - contracts.EVENT_TIME_MAX_AHEAD, event_time - contracts.EVENT_TIME_MAX_AHEAD - tick, None)]
    generated_from = len(records)
    records += [(topic, value, day) for topic, value in zip(generated.topics, generated.values, strict=True)]
    table = pa.table({"topic": [r[0] for r in records], "offset": pa.array(range(len(records)), pa.int64()),
                      "value": pa.array([r[1] for r in records], pa.binary()),
                      "received_at": pa.array([r[2] for r in records], pa.timestamp("us", tz="UTC"))})

    fast, taken = validate_fast(table, "received_at")
    spark_rows = validate_events(spark.createDataFrame(table), broker_time="received_at").toArrow()

    offsets = fast["offset"].to_pylist()
    assert sorted(offsets) == list(np.flatnonzero(taken)) and len(set(offsets)) == len(offsets)
    assert all(check_event(*records[o]) is None for o in offsets)
    expected_rows = spark_rows.filter(pa.array(np.isin(spark_rows["offset"].to_numpy(), offsets)))
    assert fast.sort_by("offset").equals(expected_rows.cast(fast.schema).sort_by("offset"))
    assert taken[generated_from:].all()
    assert sum(len(v) for t, v in zip(generated.topics, generated.values, strict=True) if t == TOPICS["view"]) > 2**20
    long_text, too_long, *bounds = range(len(CASES) + 2_000, generated_from)
    assert taken[long_text] and not taken[too_long]
    assert taken[bounds].tolist() == [True, False, True, False, True]
    assert 300 < taken[:generated_from].sum() < generated_from - 1_000  # the edges are exercised both ways
    nine_digits = fast.filter(pc.equal(fast["offset"], bounds[0]))["event_ts"][0].value
    assert nine_digits % 1_000_000 == 123456  # the fraction truncated to microseconds, as Spark does
