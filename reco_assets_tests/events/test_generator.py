"""The event generator: contract-valid events in the configured mix, malformed ones of every kind on demand."""

import json
from collections import Counter
from datetime import UTC, datetime

import pytest

from reco_assets.bronze.movielens import BUNDLED_SAMPLE
from reco_assets.contracts import TOPICS, check_event
from reco_assets.events.generator import INVALID_KINDS, EventGenerator, Population, load_population
from reco_assets.events.producer import paced


@pytest.fixture(scope="module")
def population() -> Population:
    return load_population("/nonexistent", BUNDLED_SAMPLE)


def test_population_comes_from_movielens_activity(population):
    assert len(population.user_ids) == 610 and len(population.movie_ids) == 9724
    assert population.user_weights.sum() == pytest.approx(1.0)
    # Forrest Gump (356) is the most rated movie of the sample, so the most likely to be drawn.
    assert population.movie_ids[population.movie_weights.argmax()] == 356


def test_events_follow_the_contracts_and_the_default_mix(population):
    batch = EventGenerator(population, seed=1).batch(20_000)
    now = datetime.now(UTC)
    assert all(check_event(t, v, now) is None for t, v in zip(batch.topics, batch.values, strict=True))
    types = Counter(json.loads(v)["event_type"] for v in batch.values)
    assert types["view"] / 20_000 == pytest.approx(0.6, abs=0.02)
    assert types["click"] / 20_000 == pytest.approx(0.3, abs=0.02)
    assert types["rating"] / 20_000 == pytest.approx(0.1, abs=0.02)
    assert dict(types) == batch.kinds
    assert all(TOPICS[json.loads(v)["event_type"]] == t for t, v in zip(batch.topics, batch.values, strict=True))
    assert len({json.loads(v)["event_id"] for v in batch.values}) == 20_000
    # Keyed by user, so one user's events stay in order within a partition.
    assert all(k == str(json.loads(v)["user_id"]).encode() for k, v in zip(batch.keys, batch.values, strict=True))


def test_sessions_group_a_users_consecutive_events(population):
    batch = EventGenerator(population, seed=2).batch(5_000)
    per_user = Counter((e["user_id"], e["session_id"]) for e in map(json.loads, batch.values))
    assert max(per_user.values()) > 1
    assert len({session for _, session in per_user}) < 5_000


def test_a_configured_mix_and_time_spread(population):
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    batch = EventGenerator(population, mix={"view": 0, "click": 1, "rating": 1}, seed=3).batch(2_000, now, 60)
    events = [json.loads(v) for v in batch.values]
    assert {e["event_type"] for e in events} == {"click", "rating"}
    stamps = sorted(e["event_ts"] for e in events)
    assert "2026-11-23T11:59:00" <= stamps[0] and stamps[-1] <= "2026-11-23T12:00:00.000Z"
    with pytest.raises(ValueError, match="mix needs"):
        EventGenerator(population, mix={"view": 1})


def test_invalid_events_of_every_kind_are_rejected_by_the_contract(population):
    generator = EventGenerator(population, invalid_rate=0.3, seed=4)
    generator.batch(1_000)
    batch = generator.batch(5_000)
    assert {k.removeprefix("invalid:") for k in batch.kinds if k.startswith("invalid:")} == set(INVALID_KINDS)
    invalid = [(t, v) for t, v, label in zip(batch.topics, batch.values, batch.labels, strict=True)
               if label == "invalid"]
    assert len(invalid) == sum(n for k, n in batch.kinds.items() if k.startswith("invalid:"))
    now = datetime.now(UTC)
    reasons = Counter(problem.reason for problem in (check_event(t, v, now) for t, v in invalid) if problem)
    # Every malformed event is rejected, except duplicates, which are valid copies caught later by event_id.
    assert sum(reasons.values()) == len(invalid) - batch.kinds["invalid:duplicate"]
    assert set(reasons) >= {"not_utf8", "not_json", "not_object", "missing_field", "unknown_field", "wrong_type",
                            "invalid_value", "out_of_range"}


def test_pacing_holds_the_rate_without_drift():
    counts = list(paced(rate=1234, duration_s=1.0, tick_s=0.1))
    assert len(counts) == 10 and sum(counts) == 1234
