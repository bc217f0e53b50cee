"""The event contracts: one JSON Schema (draft 2020-12) per event type, and the reference checker.

`check_event` is the truth that the Spark check (`reco_assets.silver.event_contract.validate_events`) mirrors. It
reads a record the way Spark's JSON parser does (strict UTF-8; no duplicate keys, NaN, Infinity or trailing data;
integers of more than 38 digits read as doubles; the limits below), then validates it with jsonschema. Given the
record's broker time, it also bounds the event's time (`out_of_range`).
"""

import functools
import importlib.resources
import json
import math
import os
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from jsonschema import Draft202012Validator

EVENT_TYPES = ("view", "click", "rating")
TOPICS = {"view": "events_views", "click": "events_clicks", "rating": "events_ratings"}
EVENT_TYPE_BY_TOPIC = {topic: event_type for event_type, topic in TOPICS.items()}
CONTRACT_VERSION = 1

# Rejection reasons, highest priority first.
REASONS = ("not_utf8", "not_json", "not_object", "missing_field", "unknown_field", "wrong_type", "invalid_value",
           "out_of_range")

# How far an event's time may lie from its record's broker time: a week before (the topics' retention; an older
# event is a replay), and a little after (clock skew). Anything further is `out_of_range`.
EVENT_TIME_MAX_AGE = timedelta(hours=float(os.environ.get("RECO_EVENT_TIME_MAX_AGE_HOURS",
                                                         os.environ.get("RECO_RETENTION_HOURS", "168"))))
EVENT_TIME_MAX_AHEAD = timedelta(seconds=float(os.environ.get("RECO_EVENT_TIME_MAX_AHEAD_SECONDS", "300")))

# Limits of the JSON reader. Spark's parser (Jackson) checks nesting (1000 levels, less the one the Spark check wraps
# around the value) and key length (50,000 UTF-16 units) the same way on every record, but skips its number-length
# check (1000 digits) when a number crosses a buffer boundary, so the contract sets a stricter limit that the Spark
# side checks itself. Values of at most 10 MB keep every string below Jackson's 20M-character limit.
MAX_DEPTH = 999
MAX_KEY_UTF16_UNITS = 50_000
MAX_DIGIT_RUN = 300
MAX_BYTES = 10_000_000
# Spark's VARIANT keeps integers of up to 38 digits exactly and reads longer ones as doubles.
EXACT_INTEGER_DIGITS = 38
DETAIL_CHARS = 300


@dataclass(frozen=True)
class Rejection:
    """Why a record breaks its contract: a reason code, the field concerned (if any) and a short message."""

    reason: str
    field: str | None
    detail: str


@functools.cache
def _load_schema(event_type: str) -> dict:
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}, expected one of {EVENT_TYPES}")
    name = f"{event_type}.v{CONTRACT_VERSION}.json"
    return json.loads(importlib.resources.files(__package__).joinpath(name).read_text(encoding="utf-8"))


def schema(event_type: str) -> dict:
    """The JSON Schema of an event type (a fresh copy of the packaged file)."""
    return json.loads(json.dumps(_load_schema(event_type)))


FIELDS: dict[str, tuple[str, ...]] = {t: tuple(_load_schema(t)["properties"]) for t in EVENT_TYPES}
ALL_FIELDS: tuple[str, ...] = tuple(dict.fromkeys(f for t in EVENT_TYPES for f in FIELDS[t]))
_FIELD_ORDER = {field: position for position, field in enumerate(ALL_FIELDS)}
_PRIORITY = {reason: priority for priority, reason in enumerate(REASONS)}


@functools.cache
def _validator(event_type: str) -> Draft202012Validator:
    return Draft202012Validator(_load_schema(event_type), format_checker=Draft202012Validator.FORMAT_CHECKER)


class _NotJson(ValueError):
    pass


_NUMBER_PARTS = re.compile(r"[-+.eE]")


def _object(pairs: list[tuple[str, object]]) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _NotJson("duplicate key in an object")
    for key in obj:
        if len(key) > MAX_KEY_UTF16_UNITS // 2 and len(key.encode("utf-16-le")) // 2 > MAX_KEY_UTF16_UNITS:
            raise _NotJson(f"object key longer than {MAX_KEY_UTF16_UNITS} characters")
    return obj


def _int(text: str) -> int | float:
    digits = len(text) - text.startswith("-")
    if digits > MAX_DIGIT_RUN:
        raise _NotJson(f"number with more than {MAX_DIGIT_RUN} digits in a row")
    return int(text) if digits <= EXACT_INTEGER_DIGITS else float(text)


def _float(text: str) -> float:
    if max(map(len, _NUMBER_PARTS.split(text))) > MAX_DIGIT_RUN:
        raise _NotJson(f"number with more than {MAX_DIGIT_RUN} digits in a row")
    return float(text)


def _constant(name: str) -> float:
    raise _NotJson(f"{name} is not JSON")


_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_int=_int, parse_float=_float, parse_constant=_constant)
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_BRACKET = re.compile(r"[\[\]{}]")
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _nesting_depth(text: str) -> int:
    depth = deepest = 0
    for bracket in _BRACKET.findall(_STRING.sub('""', text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _has_surrogate(obj: object) -> bool:
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _loads(text: str) -> object:
    if text.count("[") + text.count("{") <= 100:
        obj = _DECODER.decode(text)
    else:
        depth = _nesting_depth(text)
        if depth > MAX_DEPTH:
            raise _NotJson(f"nested deeper than {MAX_DEPTH} levels")
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(limit + depth + 50)
        try:
            obj = _DECODER.decode(text)
        finally:
            sys.setrecursionlimit(limit)
    if _ESCAPED_SURROGATE.search(text) and _has_surrogate(obj):
        raise _NotJson("string with an unpaired UTF-16 surrogate")
    return obj


_JSON_TYPE_NAMES = {type(None): "null", bool: "boolean", int: "number", float: "number", str: "string", list: "array"}


def _candidate(error, instance: dict) -> tuple[str, str | None]:
    """(reason, field) of one jsonschema error."""
    if error.validator == "required":
        missing = [p for p in error.validator_value if p not in instance]
        field = next((p for p in missing if error.message == f"{p!r} is a required property"), missing[0])
        return "missing_field", field
    if error.validator == "additionalProperties":
        known = error.schema.get("properties", {})
        return "unknown_field", min(key for key in instance if key not in known)
    field = error.path[0] if error.path else None
    return ("wrong_type" if error.validator == "type" else "invalid_value"), field


def _finite_multiples(instance: dict, event_schema: dict) -> dict:
    """±inf (a number beyond the double range) makes jsonschema's multipleOf raise OverflowError. ±max double breaks
    minimum/maximum the same way and, being a whole number, passes multipleOf 0.5: the errors stay the same."""
    for field, rules in event_schema["properties"].items():
        value = instance.get(field)
        if "multipleOf" in rules and isinstance(value, float) and math.isinf(value):
            instance = {**instance, field: math.copysign(sys.float_info.max, value)}
    return instance


def _order(reason: str, field: str | None) -> tuple[int, int]:
    return _PRIORITY[reason], _FIELD_ORDER.get(field, len(ALL_FIELDS))


def span(delta: timedelta) -> str:
    """A bound as people write it: "7 days", "5 minutes", "90 seconds"."""
    seconds = delta.total_seconds()
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds:g} seconds"


def iso_utc(moment: datetime) -> str:
    """`0001-01-01T00:00:00.000000Z`: microseconds and a four-digit year (as Spark's date_format writes them)."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_event_ts(text: str) -> datetime:
    """A contract-valid `event_ts` as an instant, truncated to microseconds like Spark's timestamps."""
    stamp, _, fraction = text.removesuffix("Z").removesuffix("+00:00").partition(".")
    moment = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    return moment + timedelta(microseconds=int((fraction + "000000")[:6]))


def event_time_problem(event_ts: datetime, broker_time: datetime) -> Rejection | None:
    """`out_of_range` when the event's time lies further from its broker time than the bounds allow."""
    if broker_time.tzinfo is None:
        raise ValueError("broker_time must carry its time zone (Kafka's timestamps are UTC instants)")
    earliest, latest = (_shifted(broker_time, -EVENT_TIME_MAX_AGE), _shifted(broker_time, EVENT_TIME_MAX_AHEAD))
    if event_ts < earliest:
        side, bound = "before", EVENT_TIME_MAX_AGE
    elif event_ts > latest:
        side, bound = "after", EVENT_TIME_MAX_AHEAD
    else:
        return None
    return Rejection("out_of_range", "event_ts", f"event_ts {iso_utc(event_ts)} is more than {span(bound)} {side} "
                                                 f"its broker time {iso_utc(broker_time)}")


def _shifted(moment: datetime, delta: timedelta) -> datetime:
    """`moment + delta`, clamped to the years Python can hold (a bound wider than them bounds nothing)."""
    try:
        return moment + delta
    except OverflowError:
        return (datetime.min if delta < timedelta(0) else datetime.max).replace(tzinfo=UTC)


def check_event(topic: str, value: bytes | None, broker_time: datetime | None = None) -> Rejection | None:
    """Check a record's value against its topic's contract: None when valid, else the highest-priority Rejection.
    With the record's `broker_time`, an otherwise valid event whose time lies out of bounds is `out_of_range`."""
    if topic not in EVENT_TYPE_BY_TOPIC:
        raise ValueError(f"unknown topic {topic!r}, expected one of {sorted(EVENT_TYPE_BY_TOPIC)}")
    if value is None:
        return Rejection("not_json", None, "the record has no value")
    try:
        text = str(value, "utf-8")
    except UnicodeDecodeError as error:
        return Rejection("not_utf8", None, str(error)[:DETAIL_CHARS])
    if len(value) > MAX_BYTES:
        return Rejection("not_json", None, f"longer than {MAX_BYTES} bytes")
    try:
        instance = _loads(text)
    except (ValueError, RecursionError) as error:
        return Rejection("not_json", None, str(error)[:DETAIL_CHARS])
    if not isinstance(instance, dict):
        return Rejection("not_object", None, f"a JSON {_JSON_TYPE_NAMES[type(instance)]}, not an object")
    validator = _validator(EVENT_TYPE_BY_TOPIC[topic])
    best = None
    for error in validator.iter_errors(_finite_multiples(instance, validator.schema)):
        reason, field = _candidate(error, instance)
        if best is None or _order(reason, field) < _order(best.reason, best.field):
            best = Rejection(reason, field, error.message[:DETAIL_CHARS])
    if best is None and broker_time is not None:
        return event_time_problem(parse_event_ts(instance["event_ts"]), broker_time)
    return best
