"""Synthetic user events that follow the contracts: who watches what, drawn from MovieLens activity.

Values are built with plain string formatting over columns drawn in bulk with numpy (no `uuid4()` or
`json.dumps` per event), so generation runs at several hundred thousand events per second.
"""

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from reco_assets.contracts import TOPICS
from reco_assets.lakehouse import LakehouseResource, duck
from reco_assets.lakehouse.duck import connect

DEFAULT_MIX = {"view": 0.6, "click": 0.3, "rating": 0.1}
DEVICES = ["mobile", "desktop", "tablet", "smart_tv"]
DEVICE_WEIGHTS = [0.45, 0.3, 0.1, 0.15]
CLICK_TYPES = ["trailer", "poster", "title", "recommendation"]
CLICK_WEIGHTS = [0.25, 0.3, 0.25, 0.2]
REFERRERS = ["home", "search", "trending", "recommendations", "genre"]
# MovieLens' own rating histogram (ml-latest-small), 0.5 .. 5.0.
RATING_VALUES = np.arange(1, 11) / 2
RATING_WEIGHTS = np.array([1370, 2811, 1791, 7551, 5550, 20047, 13136, 26818, 8551, 13211], dtype=float)
SESSION_EVENTS = 20  # a user's session rotates after about this many events
INVALID_KINDS = ("not_json", "not_utf8", "not_object", "missing_field", "unknown_field", "wrong_type",
                 "invalid_value", "bad_timestamp", "wrong_topic", "out_of_range", "duplicate")
# Well-formed event times far from any broker time: a forged old event, and one from the far future.
OUT_OF_RANGE_TIMES = ("0001-01-01T00:00:00.000Z", "9999-12-31T23:59:59.999Z")


@dataclass(frozen=True)
class Population:
    """Users and movies with their activity in MovieLens, as sampling weights."""

    user_ids: np.ndarray
    user_weights: np.ndarray
    movie_ids: np.ndarray
    movie_weights: np.ndarray
    source: str

    @classmethod
    def from_ratings(cls, source: str) -> "Population":
        """From a DuckDB source of ratings: silver ratings (`user_id`, `movie_id`) or a ratings.csv reader."""
        user_col, movie_col = ("userId", "movieId") if "read_csv" in source else ("user_id", "movie_id")
        with connect() as con:
            counts = "SELECT {} AS id, count(*) AS n FROM {} GROUP BY 1 ORDER BY 1"
            users = con.execute(counts.format(user_col, source)).fetchnumpy()
            movies = con.execute(counts.format(movie_col, source)).fetchnumpy()
        path = source
        if len(users["id"]) == 0:
            raise ValueError(f"{path} holds no ratings to draw users and movies from")
        weights = lambda counts: (counts / counts.sum()).astype(float)  # noqa: E731
        return cls(users["id"].astype(np.int64), weights(users["n"].astype(float)),
                   movies["id"].astype(np.int64), weights(movies["n"].astype(float)), path)


def ratings_source(data_dir: str | Path, bundled: Path) -> str:
    """Silver ratings when they are materialized, else the bundled MovieLens sample's ratings.csv, as a DuckDB
    source (`delta_scan(...)` or `read_csv(...)`)."""
    silver = LakehouseResource(data_dir=str(data_dir)).table("silver.ratings")
    if silver.exists():
        return silver.duckdb()
    return f"read_csv({duck.sql_string(str(bundled / 'ratings.csv'))}, header = true)"


def load_population(data_dir: str | Path, bundled: Path) -> Population:
    return Population.from_ratings(ratings_source(data_dir, bundled))


@dataclass
class Batch:
    """Events ready to send: parallel lists of topic, key, value bytes and label (event type or `invalid`),
    and how many of each kind (invalid ones by what is wrong with them)."""

    topics: list[str] = field(default_factory=list)
    keys: list[bytes] = field(default_factory=list)
    values: list[bytes] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    kinds: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.values)


def _uuids(rng: np.random.Generator, n: int) -> list[str]:
    """n random version-4 UUID strings."""
    raw = np.frombuffer(rng.bytes(16 * n), dtype=np.uint8).reshape(n, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    hexes = raw.tobytes().hex()
    return [f"{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}" for h in
            (hexes[i:i + 32] for i in range(0, 32 * n, 32))]


class EventGenerator:
    """Draws events in bulk; keeps per-user sessions and a few recent events (for injected duplicates)."""

    def __init__(self, population: Population, mix: dict[str, float] | None = None, invalid_rate: float = 0.0,
                 seed: int | None = None):
        mix = mix or DEFAULT_MIX
        if set(mix) != set(DEFAULT_MIX) or any(v < 0 for v in mix.values()) or sum(mix.values()) <= 0:
            raise ValueError(f"mix needs non-negative weights for {sorted(DEFAULT_MIX)}, got {mix}")
        if not 0 <= invalid_rate <= 1:
            raise ValueError(f"invalid rate must be within [0, 1], got {invalid_rate}")
        self.population = population
        self.types = list(DEFAULT_MIX)
        total = sum(mix.values())
        self.type_weights = [mix[t] / total for t in self.types]
        self.invalid_rate = invalid_rate
        self.rng = np.random.default_rng(seed)
        self.sessions: dict[int, tuple[str, int]] = {}
        self.recent: list[tuple[str, bytes]] = []

    def _session(self, user: int, fresh: str) -> str:
        session, left = self.sessions.get(user, (fresh, SESSION_EVENTS))
        self.sessions[user] = (session, left - 1) if left > 1 else (fresh, SESSION_EVENTS)
        return session

    def batch(self, n: int, now: datetime | None = None, spread_s: float = 0.0) -> Batch:
        """n events stamped between `now - spread_s` and `now` (UTC)."""
        rng = self.rng
        now = now or datetime.now(UTC)
        types = rng.choice(len(self.types), size=n, p=self.type_weights)
        users = rng.choice(self.population.user_ids, size=n, p=self.population.user_weights).tolist()
        movies = rng.choice(self.population.movie_ids, size=n, p=self.population.movie_weights).tolist()
        offsets_ms = np.sort(rng.uniform(-spread_s * 1000, 0, size=n)).astype("timedelta64[ms]")
        stamps = np.datetime64(now.replace(tzinfo=None), "ms") + offsets_ms
        event_ts = [s + "Z" for s in np.datetime_as_string(stamps, unit="ms").tolist()]
        ids = _uuids(rng, 2 * n)
        devices = rng.choice(DEVICES, size=n, p=DEVICE_WEIGHTS).tolist()
        watch = np.minimum(rng.lognormal(6.5, 1.0, size=n), 86400).astype(int).tolist()
        clicks = rng.choice(CLICK_TYPES, size=n, p=CLICK_WEIGHTS).tolist()
        referrers = rng.choice(REFERRERS, size=n).tolist()
        ratings = rng.choice(RATING_VALUES, size=n, p=RATING_WEIGHTS / RATING_WEIGHTS.sum()).tolist()
        batch = Batch()
        counts = [0, 0, 0]
        for i, t in enumerate(types.tolist()):
            user, movie = users[i], movies[i]
            common = (f'{{"event_id":"{ids[i]}","event_type":"{self.types[t]}","event_ts":"{event_ts[i]}",'
                      f'"user_id":{user},"movie_id":{movie},"session_id":"{self._session(user, ids[n + i])}",')
            if t == 0:
                value = (f'{common}"device_type":"{devices[i]}","page_url":"/movies/{movie}",'
                         f'"watch_seconds":{watch[i]}}}')
            elif t == 1:
                value = f'{common}"click_type":"{clicks[i]}","referrer":"{referrers[i]}"}}'
            else:
                value = f'{common}"rating":{ratings[i]}}}'
            counts[t] += 1
            batch.topics.append(TOPICS[self.types[t]])
            batch.keys.append(str(user).encode())
            batch.values.append(value.encode())
            batch.labels.append(self.types[t])
        batch.kinds = {self.types[t]: counts[t] for t in range(3) if counts[t]}
        if self.invalid_rate > 0:
            self.recent = self._inject_invalid(batch)[-100:]
        else:
            self.recent = list(zip(batch.topics[-100:], batch.values[-100:], strict=True))
        return batch

    def _inject_invalid(self, batch: Batch) -> list[tuple[str, bytes]]:
        """Replace a share of the events with malformed ones; return the (topic, value) pairs left valid."""
        n = len(batch)
        chosen = np.flatnonzero(self.rng.random(n) < self.invalid_rate)
        kinds = self.rng.choice(len(INVALID_KINDS), size=len(chosen))
        untouched = np.ones(n, dtype=bool)
        untouched[chosen] = False
        # Duplicates copy an earlier event that stays valid: from this batch, or else from the previous one.
        originals = [(t, v) for t, v, keep in zip(batch.topics, batch.values, untouched, strict=True) if keep]
        earlier = np.cumsum(untouched)
        for i, k in zip(chosen.tolist(), kinds.tolist(), strict=True):
            kind = INVALID_KINDS[k]
            if kind == "duplicate":
                pool = originals[: earlier[i]] or self.recent
                if not pool:
                    continue
                copy = pool[self.rng.integers(len(pool))]
            event = json.loads(batch.values[i])
            batch.kinds[event["event_type"]] -= 1
            batch.labels[i] = "invalid"
            if kind == "duplicate":
                batch.topics[i], batch.values[i] = copy
            else:
                batch.topics[i], batch.values[i] = self._broken(kind, batch.topics[i], event)
            batch.kinds[f"invalid:{kind}"] = batch.kinds.get(f"invalid:{kind}", 0) + 1
        return originals

    def _broken(self, kind: str, topic: str, event: dict) -> tuple[str, bytes]:
        """One malformed version of an event, of the given kind."""
        value = json.dumps(event, separators=(",", ":")).encode()
        if kind == "not_json":
            return topic, value[: len(value) // 2]
        if kind == "not_utf8":
            return topic, b"\xff\xfe" + value[2:]
        if kind == "not_object":
            return topic, json.dumps([event]).encode()
        if kind == "missing_field":
            event.pop(["user_id", "movie_id", "event_id", "event_ts"][self.rng.integers(4)])
        elif kind == "unknown_field":
            event["debug"] = True
        elif kind == "wrong_type":
            event["user_id"] = str(event["user_id"])
        elif kind == "invalid_value":
            field_name, bad = {"view": ("device_type", "toaster"), "click": ("click_type", "double"),
                               "rating": ("rating", 7.5)}[event["event_type"]]
            event[field_name] = bad
        elif kind == "out_of_range":
            event["event_ts"] = OUT_OF_RANGE_TIMES[self.rng.integers(len(OUT_OF_RANGE_TIMES))]
        elif kind == "bad_timestamp":
            event["event_ts"] = event["event_ts"].replace("Z", "+02:00")
        elif kind == "wrong_topic":
            topic = next(t for t in TOPICS.values() if t != topic)
        return topic, json.dumps(event, separators=(",", ":")).encode()
