"""The event contracts checked in Spark: built-in expressions only, agreeing with `reco_assets.contracts.check_event`
on every record (reco_assets_tests/contracts/events_cases.json pins both to the same cases). `validate_fast` types,
with Arrow in the run's process, the records that the fast patterns prove valid, as validate_events would.

Types, const, enum, bounds, multipleOf and maxLength come from the packaged JSON Schemas; the two string formats
(uuid, UTC date-time) are written here, keyed by the schema's format and pattern, so that a schema change without a
matching Spark rule fails at once.
"""

import json
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
from jsonschema import Draft202012Validator
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from reco_assets import contracts

OUTPUT_TYPES = {
    "event_id": "string",
    "event_type": "string",
    "event_ts": "timestamp",
    "user_id": "int",
    "movie_id": "int",
    "session_id": "string",
    "device_type": "string",
    "page_url": "string",
    "watch_seconds": "int",
    "click_type": "string",
    "referrer": "string",
    "rating": "double",
    "review_text": "string",
}

_UUID_PATTERN = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
_UTC_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|\+00:00)$(?!\n)"
# Java regexes: \z, since Java's $ also matches before a final line break. The date-time one adds the ranges
# rfc3339-validator checks (year 0000, month, hour, minute, second); _valid_day checks the day of the month.
_UUID = _UUID_PATTERN[:-1] + r"\z"
_UTC = (r"^(?!0000)[0-9]{4}-(0[1-9]|1[0-2])-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
        r"(\.[0-9]{1,9})?(Z|\+00:00)\z")
# A JSON string literal (possessive, so that a long string cannot overflow the regex engine's stack).
_JSON_STRING = r'"[^"\\]*+(?:\\.[^"\\]*+)*+"'
_LONG_DIGIT_RUN = f"[0-9]{{{contracts.MAX_DIGIT_RUN + 1}}}"
_VALUE_KEYWORDS = ("const", "enum", "minimum", "maximum", "multipleOf", "maxLength")
_OTHER_KEYWORDS = ("description", "$comment", "type", "format", "pattern")
_READ_AS = {"string": "string", "integer": "double", "number": "double"}

# A failure is the number 100 * (priority of the reason) + (position of the field in ALL_FIELDS, 13 for an unknown
# field, 99 for none): the smallest one is the rejection that check_event reports.
_STEP = 100
_UNKNOWN = len(contracts.ALL_FIELDS)
_NO_FIELD = _STEP - 1
_PRIORITY = {reason: priority for priority, reason in enumerate(contracts.REASONS)}
_TMP = "__contract_"


def _col(name: str) -> Column:
    return F.col(f"{_TMP}{name}")


def _is_type(*event_types: str) -> Column:
    """The record's topic is one of these event types' (`etype` is the index in EVENT_TYPES: cheaper than strings)."""
    codes = [contracts.EVENT_TYPES.index(t) for t in event_types]
    return _col("etype") == codes[0] if len(codes) == 1 else _col("etype").isin(codes)


def _code(reason: str, position: int = _NO_FIELD) -> int:
    return _STEP * _PRIORITY[reason] + position


def _chain(pairs) -> Column:
    """CASE WHEN c1 THEN v1 WHEN c2 THEN v2 … END."""
    expr = None
    for condition, value in pairs:
        expr = (F.when if expr is None else expr.when)(condition, value)
    return expr


def _json_type(variant_type: Column) -> Column:
    """JSON type name from `schema_of_variant` (BIGINT, DECIMAL(p,s), DOUBLE, STRING, BOOLEAN, VOID, OBJECT<…>, …)."""
    return _chain([
        (variant_type == "STRING", "string"),
        (variant_type == "BOOLEAN", "boolean"),
        (variant_type == "VOID", "null"),
        (variant_type.startswith("OBJECT"), "object"),
        (variant_type.startswith("ARRAY"), "array"),
    ]).otherwise("number")


def _valid_day(timestamp: Column) -> Column:
    """The day exists in its month (proleptic Gregorian, as Python's calendar); days 01 to 28 always do."""
    year, month, day = (F.substring(timestamp, at, size).try_cast("int") for at, size in ((1, 4), (6, 2), (9, 2)))
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    days = _chain([(month == 2, F.when(leap, 29).otherwise(28)), (month.isin(4, 6, 9, 11), 30)]).otherwise(31)
    two_digits = F.substring(timestamp, 9, 2)
    return ((two_digits >= "01") & (two_digits <= "28")) | ((day >= 1) & (day <= days))


_FORMATS = {
    ("uuid", _UUID_PATTERN): (lambda s: s.rlike(_UUID), "a UUID (8-4-4-4-12 hex digits)"),
    ("date-time", _UTC_PATTERN): (lambda s: s.rlike(_UTC) & _valid_day(s), "an RFC 3339 date-time in UTC"),
}


# The fast path (`_fast_pattern`): a string without quotes, backslashes or control characters (so without escapes); a
# Java character class counts code points, as Python's len() does. The forms are written for both Java's regexes and
# RE2, Arrow's (no lookaround), but for RE2's limit of 1,000 repetitions (`_RE2_REPEATS`).
_PLAIN_CHARACTER = r'[^"\\\x00-\x1f]'
_JSON_SPACE = r"[ \t\n\r]*"
_FAST_INTEGER_MAX = 2**31 - 1  # read exactly as a double, and fits the int column
_RE2_REPEATS = 1_000
_FAST_FORMATS = {
    ("uuid", _UUID_PATTERN): _UUID_PATTERN[1:-1],
    # Every day but February 29 exists in its month whatever the year; that one (leap years) takes the full check.
    ("date-time", _UTC_PATTERN): (r"(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])"
                                  r"-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
                                  r"|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)T(?:[01][0-9]|2[0-3])"
                                  r":[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,9})?(?:Z|\+00:00)"),
}


def _literal(text: str) -> str | None:
    """A string constant as a regex, when it needs no JSON escape."""
    return re.escape(text) if re.fullmatch(r"[A-Za-z0-9_ .:/-]+", text) else None


def _integers(low: int, high: int) -> str:
    """JSON integers from `low` (0 or 1) to `high`, without leading zeros."""
    digits = str(high)
    shorter = f"[1-9][0-9]{{0,{len(digits) - 2}}}" if len(digits) > 1 else None
    same_length = []  # numbers of len(digits) digits up to `high`: a prefix of it, then a smaller digit, then any
    for at, digit in enumerate(digits):
        smallest = 1 if at == 0 else 0
        if int(digit) > smallest:
            rest = len(digits) - at - 1
            same_length.append(f"{digits[:at]}[{smallest}-{int(digit) - 1}]" + (f"[0-9]{{{rest}}}" if rest else ""))
    same_length.append(digits)
    if len(digits) == 1:
        same_length = [f"[1-{digits}]"]
    alternatives = (["0"] if low == 0 else []) + ([shorter] if shorter else []) + same_length
    return f"(?:{'|'.join(alternatives)})"


def _multiples(prop: dict) -> str | None:
    """The JSON numbers a small `minimum`/`maximum`/`multipleOf` range allows, each checked by the property's own
    JSON Schema (float multiples are not always exact), with optional trailing zeros up to the longest digit run the
    reader accepts."""
    low, high, step = (Decimal(str(prop[k])) for k in ("minimum", "maximum", "multipleOf"))
    if step <= 0 or (high - low) / step > 1000:
        return None
    validator = Draft202012Validator(prop)
    first = -(-low // step) * step
    texts = []
    value = first
    while value <= high:
        text = format(value.normalize(), "f")
        if validator.is_valid(float(text)):
            # Trailing zeros, as long as the digits after the point stay one run of at most MAX_DIGIT_RUN.
            fraction = len(text.partition(".")[2])
            texts.append(re.escape(text) + (rf"(?:\.0{{1,{contracts.MAX_DIGIT_RUN}}})?" if not fraction
                                            else f"0{{0,{contracts.MAX_DIGIT_RUN - fraction}}}"))
        value += step
    return f"(?:{'|'.join(texts)})" if texts else None


class _Rule:
    """One property of one schema, as Spark checks over the field's JSON type and value."""

    def __init__(self, field: str, prop: dict):
        self.field, self.prop, self.json_type = field, prop, prop["type"]
        self.checks = [(keyword, prop[keyword]) for keyword in _VALUE_KEYWORDS if keyword in prop]
        if "format" in prop or "pattern" in prop:
            key = (prop.get("format"), prop.get("pattern"))
            if key not in _FORMATS:
                raise NotImplementedError(f"{field}: no Spark check for format/pattern {key}")
            self.checks.append(("format", key))
        unknown = set(prop) - set(_VALUE_KEYWORDS) - set(_OTHER_KEYWORDS)
        if unknown or self.json_type not in _READ_AS:
            raise NotImplementedError(f"{field}: no Spark check for {sorted(unknown) or self.json_type}")

    def type_ok(self) -> Column:
        variant_type, value = _col(f"t_{self.field}"), _col("json")[self.field]
        if self.json_type == "string":
            return variant_type == "STRING"
        is_number = (variant_type == "BIGINT") | (variant_type == "DOUBLE") | variant_type.startswith("DECIMAL")
        if self.json_type == "number":
            return is_number
        # JSON Schema's integer: a finite number without a fractional part (5.0 too), as Python reads it: a double.
        return is_number & (value == F.rint(value)) & (F.abs(value) < F.lit(float("inf")))

    def value_ok(self) -> Column:
        value = _col("json")[self.field]
        ok = F.lit(True)
        for keyword, limit in self.checks:
            if keyword == "const":
                ok &= value == limit
            elif keyword == "enum":
                ok &= value.isin(limit)
            elif keyword == "minimum":
                ok &= value >= limit
            elif keyword == "maximum":
                ok &= value <= limit
            elif keyword == "multipleOf":
                ok &= F.rint(value / limit) == value / limit
            elif keyword == "maxLength":
                ok &= F.char_length(value) <= limit
            else:
                ok &= _FORMATS[limit][0](value)
        return F.coalesce(ok, F.lit(False))

    def fast_value(self, re2: bool = False) -> str | None:
        """A Java regex (with `re2`, an RE2 one) for JSON texts of this property that the contract surely accepts,
        spelled the common way (no escapes, no exponents, no fraction on integers); None when the rule has no such
        form here. In RE2, a `maxLength` above `_RE2_REPEATS` is left to `validate_fast` to check."""
        checks = dict(self.checks)
        if self.json_type == "string":
            if "const" in checks and set(checks) == {"const"}:
                body = _literal(checks["const"])
            elif "enum" in checks and set(checks) == {"enum"}:
                body = "|".join(map(_literal, checks["enum"])) if all(map(_literal, checks["enum"])) else None
            elif "format" in checks and set(checks) == {"format"}:
                body = _FAST_FORMATS[checks["format"]]
            elif set(checks) <= {"maxLength"}:
                unbounded = not checks or (re2 and checks["maxLength"] > _RE2_REPEATS)
                body = _PLAIN_CHARACTER + ("*" if unbounded else f"{{0,{checks['maxLength']}}}")
            else:
                body = None
            return None if body is None else f'"(?:{body})"'
        low, high = checks.get("minimum"), checks.get("maximum")
        if (self.json_type == "integer" and set(checks) <= {"minimum", "maximum"} and low in (0, 1)
                and (high is None or high >= 1)):
            return _integers(low, min(high if high is not None else _FAST_INTEGER_MAX, _FAST_INTEGER_MAX))
        if self.json_type == "number" and set(checks) == {"minimum", "maximum", "multipleOf"}:
            return _multiples(self.prop)
        return None

    def describe(self) -> str:
        words = {"enum": "one of {}", "minimum": "at least {}", "maximum": "at most {}",
                 "multipleOf": "a multiple of {}", "maxLength": "at most {} characters long"}
        parts = []
        for keyword, limit in self.checks:
            if keyword == "format":
                parts.append(_FORMATS[limit][1])
            elif keyword == "const":
                parts.append(json.dumps(limit))
            else:
                parts.append(words[keyword].format(", ".join(limit) if keyword == "enum" else limit))
        return "must be " + ", ".join(parts)


def _rules(field: str) -> dict[str, _Rule]:
    """The field's rule for each event type that declares it."""
    return {
        t: _Rule(field, contracts.schema(t)["properties"][field])
        for t in contracts.EVENT_TYPES
        if field in contracts.FIELDS[t]
    }


_RULES = {field: _rules(field) for field in contracts.ALL_FIELDS}
# A field has one JSON type in every schema that declares it.
_JSON_TYPES = {field: {r.json_type for r in rules.values()}.pop() for field, rules in _RULES.items()}


def _by_type(rules: dict[str, _Rule], build) -> Column:
    """`build(rule)` for the record's event type; one expression when every type has the same rule."""
    if len(rules) == len(contracts.EVENT_TYPES) and len({json.dumps(r.prop) for r in rules.values()}) == 1:
        return build(next(iter(rules.values())))
    return _chain([(_is_type(t), build(rule)) for t, rule in rules.items()])


def _declared(field: str) -> Column:
    return _is_type(*_RULES[field])


def _failure(reason: str, position: int, field: Column, detail: Column) -> Column:
    """A rejection; the smallest `code` wins (codes are unique per record)."""
    return F.struct(F.lit(_code(reason, position)).alias("code"), field.alias("field"), detail.alias("detail"))


def _field_failure(position: int, field: str) -> Column:
    """The field's failure, or null."""
    rules, json_type = _RULES[field], _JSON_TYPES[field]
    required = [t for t in rules if field in contracts.schema(t)["required"]]
    name, variant_type, value = F.lit(field), _col(f"t_{field}"), _col("json")[field]
    shown = F.concat(F.lit('"'), F.substring(value, 1, 100), F.lit('"')) if json_type == "string" else value.cast(
        "string")
    return _chain([
        (~_declared(field), F.lit(None)),
        (variant_type.isNull(), F.when(_is_type(*required), _failure(
            "missing_field", position, name, F.lit(f"'{field}' is a required property")))),
        (~_by_type(rules, _Rule.type_ok), _failure("wrong_type", position, name, F.concat(
            F.lit(f"{field}: expected {json_type}, got "), _json_type(variant_type)))),
        (~_by_type(rules, _Rule.value_ok), _failure("invalid_value", position, name, F.concat(
            F.lit(f"{field}: "), shown, F.lit(" "), _by_type(rules, lambda rule: F.lit(rule.describe()))))),
    ])


def _fast_pattern(event_type: str, re2: bool = False) -> str | None:
    """A Java regex (with `re2`, the RE2 one that `validate_fast` runs in Arrow) for whole records that surely meet
    the contract: the fields in the schema's order (so none is duplicated, none unknown and every required one
    present), each value in its `fast_value` form, JSON whitespace anywhere but before a colon. Producers that write
    the fields in another order get the full check. None when the schema's first field is optional or a required
    field has no fast form."""
    properties, required = contracts.schema(event_type)["properties"], contracts.schema(event_type)["required"]
    parts = []
    for field in properties:
        value = _RULES[field][event_type].fast_value(re2)
        if value is None:
            if field in required:
                return None
            continue  # a record with this field takes the full check
        separator = "" if not parts else f"{_JSON_SPACE},{_JSON_SPACE}"
        pair = f'{separator}"{field}":{_JSON_SPACE}{value}'
        if field not in required:
            if not parts:
                return None
            pair = f"(?:{pair})?"
        parts.append(pair)
    return rf"\A{_JSON_SPACE}\{{{_JSON_SPACE}{''.join(parts)}{_JSON_SPACE}\}}{_JSON_SPACE}\z"


_FAST_PATTERNS = {event_type: _fast_pattern(event_type) for event_type in contracts.EVENT_TYPES}
_RE2_FAST_PATTERNS = {event_type: _fast_pattern(event_type, re2=True) for event_type in contracts.EVENT_TYPES}


def _parse_stages() -> list[dict[str, Column]]:
    """Decode, parse, and find the keys and JSON types of the fields: small expressions, which whole-stage codegen
    compiles into one method."""
    text, parsed, elements, fields = _col("text"), _col("parsed"), _col("elements"), _col("object")
    topic_type = _chain([(F.col("topic") == contracts.TOPICS[t], i) for i, t in enumerate(contracts.EVENT_TYPES)])
    # A topic without a contract fails the query, as check_event raises ValueError.
    no_contract = F.raise_error(F.concat(F.lit("no event contract for topic "), F.coalesce("topic", F.lit("NULL"))))
    # Spark's parser reads the first JSON value and ignores what follows, so parse `[<text>,<sentinel>]` instead.
    # Without a `]` in the text, the array can only close at the last character: two elements prove that the text
    # is one value. Otherwise the sentinel is a string of one x per character of the text, which cannot fit inside
    # the text: finding it as the second element proves the same.
    short = ~text.contains("]")
    sentinel = F.repeat(F.lit("x"), F.char_length(text))
    wrapped = F.concat(F.lit("["), text, F.when(short, ",0]").otherwise(F.concat(F.lit(',"'), sentinel, F.lit('"]'))))
    one_value = F.when(short, F.size(elements) == 2).otherwise(F.try_variant_get(parsed, "$[1]", "string") == sentinel)
    # Jackson skips its number-length check when a number crosses a buffer boundary: check digit runs here.
    long_number = ((F.octet_length("value") > contracts.MAX_DIGIT_RUN) & text.rlike(_LONG_DIGIT_RUN)
                   & F.regexp_replace(text, _JSON_STRING, '""').rlike(_LONG_DIGIT_RUN))
    small = F.octet_length("value") <= contracts.MAX_BYTES
    fast = _chain([(_is_type(t), text.rlike(pattern)) for t, pattern in _FAST_PATTERNS.items() if pattern])
    return [
        {"etype": F.coalesce(topic_type, no_contract), "text": F.col("value").cast("string")},
        {"utf8": F.is_valid_utf8(text)},
        # Most records are in the contract's common form: one regex proves them valid, and the rest of the check
        # (a VARIANT parse and the JSON type of every field) runs only for the others.
        {"fast": F.coalesce(_col("utf8") & small & fast, F.lit(False)) if fast is not None else F.lit(False)},
        {"parsed": F.when(~_col("fast") & _col("utf8") & small, F.try_parse_json(wrapped))},
        # One cast gives the number of elements and the first one as a map (null when it is not an object).
        {"elements": F.try_variant_get(parsed, "$", "array<map<string,variant>>")},
        {"json_ok": _col("fast") | F.coalesce(one_value & ~long_number, F.lit(False))},
        {"object": F.when(_col("json_ok"), elements[0])},
        {"root_type": F.when(~_col("fast") & _col("json_ok") & fields.isNull(),
                             F.schema_of_variant(F.variant_get(parsed, "$[0]", "variant"))),
         "keys": F.map_keys(fields),
         "is_object": _col("fast") | fields.isNotNull(),
         **{f"t_{f}": F.schema_of_variant(F.element_at(fields, F.lit(f))) for f in contracts.ALL_FIELDS}},
    ]


def _value_stage() -> dict[str, Column]:
    """The field values, from Spark's JSON reader (casting the VARIANT's values costs far more)."""
    read_as = ", ".join(f"`{f}` {_READ_AS[_JSON_TYPES[f]]}" for f in contracts.ALL_FIELDS)
    return {"json": F.when(_col("is_object"), F.from_json(_col("text"), f"struct<{read_as}>"))}


def _check_stage() -> dict[str, Column]:
    """The rejection of each record (null when valid).

    The higher-order function also keeps this projection out of whole-stage codegen, whose single method HotSpot
    would not compile (it skips methods over 8 KB of bytecode); Spark splits this projection into small methods.
    """
    known = _chain([(_is_type(t), F.array(*map(F.lit, contracts.FIELDS[t]))) for t in contracts.EVENT_TYPES])
    present = sum(F.when(_declared(f) & _col(f"t_{f}").isNotNull(), 1).otherwise(0) for f in contracts.ALL_FIELDS)
    first_unknown = F.when(F.size(_col("keys")) > present, F.array_min(
        F.filter(_col("keys"), lambda key: ~F.array_contains(known, key))))
    unknown = F.when(first_unknown.isNotNull(), _failure("unknown_field", _UNKNOWN, first_unknown, F.concat(
        F.lit("unexpected field "), F.to_json(F.array(first_unknown)))))
    no_field = F.lit(None).cast("string")
    reject = _chain([
        (_col("fast"), F.lit(None)),
        (F.col("value").isNull(), _failure("not_json", _NO_FIELD, no_field, F.lit("the record has no value"))),
        (~_col("utf8"), _failure("not_utf8", _NO_FIELD, no_field, F.lit("the value is not valid UTF-8"))),
        (~_col("json_ok"), _failure("not_json", _NO_FIELD, no_field,
                                    F.lit("the value is not one JSON document within the reader's limits"))),
        (~_col("is_object"), _failure("not_object", _NO_FIELD, no_field, F.concat(
            F.lit("a JSON "), _json_type(_col("root_type")), F.lit(", not an object")))),
    ]).otherwise(F.least(unknown, *[_field_failure(p, f) for p, f in enumerate(contracts.ALL_FIELDS)]))
    return {"reject": reject}


def _outputs() -> dict[str, Column]:
    reject = _col("reject")
    valid, reason = reject.isNull(), (reject["code"] / _STEP).cast("int")
    outputs = {}
    for field in contracts.ALL_FIELDS:
        value = _col("json")[field]
        if OUTPUT_TYPES[field] == "timestamp":
            value = value.try_cast("timestamp")
        outputs[field] = F.when(valid & _declared(field), value).cast(OUTPUT_TYPES[field])
    outputs["reject_reason"] = _chain([(reason == p, F.lit(r)) for r, p in _PRIORITY.items()])
    outputs["reject_field"] = reject["field"]
    outputs["reject_detail"] = F.substring(reject["detail"], 1, contracts.DETAIL_CHARS)
    return outputs


_PROJECTIONS: dict[tuple, tuple[list[dict[str, Column]], dict[str, Column]]] = {}


def _projections() -> tuple[list[dict[str, Column]], dict[str, Column]]:
    """The stages and the outputs, built once per process and kind of Column (classic or Spark Connect).

    Building them takes thousands of calls into the JVM (about 1.3 s, as long as a small hour's whole check); a
    Column is an unresolved expression, bound to no session or DataFrame, so the same ones serve every hour.
    """
    probe = F.lit(0)
    # Classic Columns live in the JVM behind py4j: key them by its gateway too, in case the JVM was relaunched.
    key = (type(probe), getattr(getattr(probe, "_jc", None), "_gateway_client", None))
    if key not in _PROJECTIONS:
        _PROJECTIONS[key] = ([*_parse_stages(), _value_stage(), _check_stage()], _outputs())
    return _PROJECTIONS[key]


# The contract's event-time bounds in microseconds, clamped so that the arithmetic stays in a 64-bit integer (a wider
# bound bounds nothing anyway).
_MAX_AGE_US = min(contracts.EVENT_TIME_MAX_AGE // timedelta(microseconds=1), 2**62)
_MAX_AHEAD_US = min(contracts.EVENT_TIME_MAX_AHEAD // timedelta(microseconds=1), 2**62)


def _event_time_bounds(broker_time: Column) -> dict[str, Column]:
    """`out_of_range` for a valid event whose time lies further from `broker_time` than the contract's bounds (as
    `contracts.event_time_problem` decides); the typed columns are then null, as for any rejected record."""
    event_us, broker_us = F.unix_micros("event_ts"), F.unix_micros(broker_time)
    early, late = event_us < broker_us - _MAX_AGE_US, event_us > broker_us + _MAX_AHEAD_US
    out = F.col("reject_reason").isNull() & F.coalesce(early | late, F.lit(False))
    iso = lambda c: F.date_format(c, "yyyy-MM-dd'T'HH:mm:ss.SSSSSS'Z'")  # noqa: E731
    detail = F.concat(F.lit("event_ts "), iso(F.col("event_ts")), F.lit(" is more than "), F.when(
        early, F.lit(f"{contracts.span(contracts.EVENT_TIME_MAX_AGE)} before")).otherwise(
        F.lit(f"{contracts.span(contracts.EVENT_TIME_MAX_AHEAD)} after")), F.lit(" its broker time "), iso(broker_time))
    return {
        **{field: F.when(~out, F.col(field)) for field in contracts.ALL_FIELDS},
        "reject_reason": F.when(out, F.lit("out_of_range")).otherwise(F.col("reject_reason")),
        "reject_field": F.when(out, F.lit("event_ts")).otherwise(F.col("reject_field")),
        "reject_detail": F.when(out, detail).otherwise(F.col("reject_detail")),
    }


def validate_events(df: DataFrame, broker_time: str | None = None) -> DataFrame:
    """Check Kafka records (`topic` string, `value` binary) against their topic's contract; with `broker_time`, the
    name of the records' broker timestamp column, also bound each valid event's time by it (`out_of_range`).

    Adds the typed event columns (null for rejected records) and reject_reason / reject_field / reject_detail (null
    for valid records). A topic without a contract fails the query, as `check_event` raises.
    """
    stages, outputs = _projections()
    out = df
    for columns in stages:
        out = out.withColumns({f"{_TMP}{name}": column for name, column in columns.items()})
    out = out.withColumns(outputs)
    if broker_time is not None:
        out = out.withColumns(_event_time_bounds(F.col(broker_time)))
    # Named, not read from `out.columns`: over Spark Connect that would cost a round trip to analyze the plan.
    return out.drop(*[f"{_TMP}{name}" for columns in stages for name in columns])


_ARROW_TYPES = {"string": pa.string(), "timestamp": pa.timestamp("us", tz="UTC"), "int": pa.int32(),
                "double": pa.float64()}
# The typed columns of validate_events, as Arrow types; then the rejection's three string columns.
ARROW_OUTPUT_TYPES = {field: _ARROW_TYPES[kind] for field, kind in OUTPUT_TYPES.items()}
_NO_OUTPUTS = pa.schema(ARROW_OUTPUT_TYPES).empty_table()
_REJECTION_COLUMNS = ("reject_reason", "reject_field", "reject_detail")
# A longer record takes validate_events' path: each object stays far below a block of Arrow's JSON reader (1 MiB),
# and the regex's work per record is bounded. Valid records of the fast form are under 8 KB without padding spaces.
_FAST_BYTES = 65_536
_ARROW_READ_AS = {"string": pa.string(), "integer": pa.int64(), "number": pa.float64()}  # JSON type → as read


def _micros(timestamp: pa.Array) -> pa.Array:
    """RFC 3339 date-times of the fast form (YYYY-MM-DDTHH:MM:SS[.fraction], then Z or +00:00) in microseconds since
    the epoch, a fraction beyond microseconds truncated as Spark's cast does (Arrow's refuses it)."""
    if pc.any(pc.greater(pc.utf8_length(timestamp), 27)).as_py():  # 7 or more fractional digits, or +00:00
        timestamp = pc.replace_substring_regex(timestamp, r"(\.[0-9]{6})[0-9]+", r"\1")
    return pc.cast(pc.cast(timestamp, pa.timestamp("us", tz="UTC")), pa.int64())


def _typed(event_type: str, text: pa.ChunkedArray) -> tuple[dict[str, pa.Array], pa.Array]:
    """The typed columns of records matched by the event type's fast pattern, read by Arrow's JSON reader from the
    records' bytes back to back, and where each string is within its `maxLength` (the RE2 pattern leaves those above
    `_RE2_REPEATS` to this)."""
    fields = contracts.FIELDS[event_type]
    schema = pa.schema([(f, _ARROW_READ_AS[_JSON_TYPES[f]]) for f in fields])
    text = text.cast(pa.large_string()).combine_chunks()  # 64-bit offsets: an hour's texts may pass 2 GiB
    offsets = np.frombuffer(text.buffers()[1], np.int64, len(text) + 1, text.offset * 8)
    values = pj.read_json(pa.BufferReader(text.buffers()[2].slice(int(offsets[0]), int(offsets[-1] - offsets[0]))),
                          parse_options=pj.ParseOptions(explicit_schema=schema, newlines_in_values=True,
                                                        unexpected_field_behavior="error"))
    if values.num_rows != len(text):
        raise ValueError(f"read {values.num_rows} JSON objects from {len(text)} records")
    columns, within = {}, pa.array(np.ones(len(text), bool))
    for field, arrow_type in ARROW_OUTPUT_TYPES.items():
        if field not in fields:
            columns[field] = pa.nulls(len(text), arrow_type)
            continue
        value = values[field]
        limit = dict(_RULES[field][event_type].checks).get("maxLength")
        if limit is not None:
            within = pc.and_(within, pc.fill_null(pc.less_equal(pc.utf8_length(value), limit), True))
        columns[field] = pc.cast(_micros(value) if OUTPUT_TYPES[field] == "timestamp" else value, arrow_type)
    return columns, within


def _fast_of_type(event_type: str, records: pa.Table, texts: pa.ChunkedArray, candidate: pa.ChunkedArray,
                  broker_time: str) -> tuple[pa.Array, pa.Table]:
    """validate_fast for the `candidate` records of one event type: the positions of those it takes, and their typed
    columns."""
    text, at = texts.filter(candidate), pa.array(np.flatnonzero(pc.fill_null(candidate, False).to_numpy()))
    matched = pc.match_substring_regex(text, _RE2_FAST_PATTERNS[event_type])
    text, at = text.filter(matched), at.filter(matched)
    if not len(text):
        return at, _NO_OUTPUTS
    columns, within = _typed(event_type, text)
    event_us = pc.cast(columns["event_ts"], pa.int64())
    broker_us = pc.cast(pc.take(records[broker_time], at), pa.int64())
    bounded = pc.and_(pc.greater_equal(event_us, pc.subtract(broker_us, _MAX_AGE_US)),
                      pc.less_equal(event_us, pc.add(broker_us, _MAX_AHEAD_US)))
    in_time = pc.if_else(pc.is_null(broker_us), True, pc.fill_null(bounded, False))  # as validate_events
    keep = pc.and_(pc.and_(within, in_time), pc.is_valid(event_us))
    return at.filter(keep), pa.table(columns).filter(keep)


def validate_fast(records: pa.Table, broker_time: str) -> tuple[pa.Table, np.ndarray]:
    """validate_events' rows, with Arrow in this process, for the records that surely meet their contract: ASCII, at
    most `_FAST_BYTES`, matched by their type's fast pattern (as RE2 runs it), and within the event-time bounds of
    their broker time. Returns those rows (records' columns, the typed ones, null rejection columns) and a mask of
    the records they come from; validate_events checks the others.

    No record is rejected here, so the reasons and details stay validate_events' own. The event types run in
    parallel threads (Arrow's kernels release the GIL).
    """
    texts = records["value"].cast(pa.string(), safe=False)  # only ASCII values are read as text below
    short_ascii = pc.and_(pc.string_is_ascii(texts), pc.less_equal(pc.binary_length(records["value"]), _FAST_BYTES))
    types = [t for t, pattern in _RE2_FAST_PATTERNS.items() if pattern is not None]
    with ThreadPoolExecutor(max(1, len(types))) as threads:
        parts = list(threads.map(lambda t: _fast_of_type(
            t, records, texts, pc.and_(pc.equal(records["topic"], contracts.TOPICS[t]), short_ascii), broker_time),
            types))
    at = pa.chunked_array([p[0] for p in parts], pa.int64())
    values = pa.concat_tables([_NO_OUTPUTS, *(p[1] for p in parts)])
    rows = records.take(at)
    for name, arrow_type in ARROW_OUTPUT_TYPES.items():
        rows = rows.append_column(pa.field(name, arrow_type), values[name])
    for name in _REJECTION_COLUMNS:
        rows = rows.append_column(pa.field(name, pa.string()), pa.nulls(rows.num_rows, pa.string()))
    mask = np.zeros(records.num_rows, bool)
    mask[at.to_numpy()] = True
    return rows, mask
