"""The questions asked of the gold tables, written once: a user's recommendations (with the cold-start fallback),
similar movies, what is trending (with the popular fallback), event totals. Two sources answer the lookups they
make: `CatalogSource`, SQL over the DuckDB catalog's views (the CLI), and the API's in-memory serving copy
(reco_assets.serving.copy.ServingCopy). Both return the same columns, named in `LOOKUPS`."""

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import duckdb

MODELS = {"als": "gold.recommendations", "hybrid": "gold.hybrid_recommendations"}
# Tables looked up by key: (key column, the columns returned in rank order).
LOOKUPS = {
    "gold.recommendations": ("user_id", ["rank", "movie_id", "title", "year", "score", "model_version"]),
    "gold.hybrid_recommendations": ("user_id", ["rank", "movie_id", "title", "source", "score", "model_version"]),
    "gold.similar_movies": ("movie_id", ["rank", "similar_movie_id", "similar_title", "score"]),
    "gold.trending_now": ("genre", ["rank", "movie_id", "title", "trend_score", "events", "views", "clicks",
                                    "ratings", "unique_users", "last_event_at", "as_of", "updated_at"]),
}
POPULAR_COLUMNS = ["rank", "movie_id", "title", "year", "num_ratings"]
# Which asset to materialize for a missing relation.
WRITERS = {"gold.recommendations": "gold_recommendations (the MovieLens batch graph)",
           "gold.hybrid_recommendations": "gold_hybrid_recommendations",
           "gold.similar_movies": "gold_similar_movies (the MovieLens batch graph)",
           "gold.popular_movies": "gold_popular_movies (the MovieLens batch graph)",
           "gold.trending_now": "gold_trending_now (stream some events)",
           "silver.movies": "silver_movies (the MovieLens batch graph)",
           "silver.events": "silver_events (stream some events and let the sensor's runs land them)"}


class Unavailable(Exception):
    """A table the answer needs is not materialized yet; the message says which asset to materialize."""


class NotFound(Exception):
    """The movie or genre asked about does not exist."""


def unavailable(relation: str) -> Unavailable:
    return Unavailable(f"{relation} is not materialized yet: materialize {WRITERS[relation]}")


@dataclass
class Rows:
    """Rows of one table, read at one version (None where the source does not know it)."""

    table: str
    version: int | None
    records: list[dict]


@dataclass
class Listing:
    """Ranked rows, where they came from (`source`: als, hybrid, similar, trending or popular; `table` at
    `version`), and why a fallback answered, if one did."""

    columns: list[str]
    rows: list[tuple]
    source: str
    table: str
    version: int | None
    note: str | None = None
    about: dict = field(default_factory=dict)

    def records(self) -> list[dict]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


class Source(Protocol):
    """What the questions look up. Each method raises Unavailable when a table it needs is missing."""

    def has(self, table: str) -> bool: ...

    def ranked(self, table: str, key, limit: int) -> Rows:
        """The rows of `key` in a table of `LOOKUPS`, by rank (trending_now: key None is the overall list)."""

    def rated(self, user_id: int) -> set[int]:
        """The movies the user has rated (none when silver.ratings is not there)."""

    def popular(self, limit: int, exclude: set[int], genre: str | None) -> Rows:
        """The most-rated movies, not in `exclude`, of `genre` if given, ranked 1.. (`POPULAR_COLUMNS`)."""

    def title(self, movie_id: int) -> str | None: ...

    def genres(self) -> list[str]: ...


def listing(rows: Rows, columns: list[str], source: str, note: str | None = None, about: dict | None = None,
            rename: dict | None = None) -> Listing:
    """A listing of `columns` of `rows` (named after `rename`)."""
    return Listing([(rename or {}).get(c, c) for c in columns], [tuple(r[c] for c in columns) for r in rows.records],
                   source, rows.table, rows.version, note, about or {})


def recommendations(source: Source, user_id: int, k: int, model: str = "als") -> Listing:
    """A user's top `k` of one model (als or hybrid); a user it has no list for gets the popular movies they have
    not rated (the cold-start fallback)."""
    found = source.ranked(MODELS[model], user_id, k)
    if found.records:
        columns = [c for c in LOOKUPS[MODELS[model]][1] if c != "model_version"]
        return listing(found, columns, model, about={"model_version": found.records[0]["model_version"]},
                       rename={"source": "reason"})
    rated = source.rated(user_id)
    reason = f"no {model} recommendations yet" if rated else "no history"
    return listing(source.popular(k, rated, None), POPULAR_COLUMNS, "popular",
                   f"user {user_id} has {reason}: popular movies (cold-start fallback)")


def similar(source: Source, movie_id: int, k: int) -> Listing:
    """The `k` movies nearest to a movie in the ALS item factors; NotFound for an unknown movie."""
    title = source.title(movie_id)
    if title is None:
        raise NotFound(f"movie {movie_id} is not in silver.movies")
    found = source.ranked("gold.similar_movies", movie_id, k)
    note = None if found.records else f"movie {movie_id} ({title}) has no ALS factors (no ratings yet)"
    return listing(found, ["rank", "similar_movie_id", "similar_title", "score"], "similar", note,
                   about={"title": title}, rename={"similar_movie_id": "movie_id", "similar_title": "title",
                                                   "score": "cosine"})


def trending(source: Source, genre: str | None, limit: int) -> Listing:
    """What is trending now, overall (`genre` None) or in one genre; popular movies while nothing is."""
    if source.has("gold.trending_now"):
        found = source.ranked("gold.trending_now", genre, limit)
        if found.records:
            updated_at = found.records[0]["updated_at"]
            return listing(found, LOOKUPS["gold.trending_now"][1][:-2], "trending",
                           about={"as_of": found.records[0]["as_of"], "updated_at": updated_at,
                                  "age_seconds": seconds_since(updated_at)})
    if genre is not None:
        if not source.has("silver.movies"):
            raise Unavailable(f"nothing trending in {genre!r}, and no genres to check it against: materialize "
                              f"{WRITERS['silver.movies']}")
        if genre not in (genres := source.genres()):
            raise NotFound(f"no genre {genre!r}; genres: {', '.join(genres)}")
    if not source.has("gold.popular_movies"):
        raise Unavailable("nothing is trending (no events streamed yet) and no popular movies to fall back on: "
                          f"materialize {WRITERS['gold.popular_movies']}")
    return listing(source.popular(limit, set(), genre), ["rank", "movie_id", "title", "num_ratings"], "popular",
                   "nothing is trending (no events streamed yet): popular movies (fallback)")


def seconds_since(moment: datetime | None) -> float | None:
    """Age of a timestamp (Delta timestamps are instants: one without a time zone is UTC)."""
    if moment is None:
        return None
    return round((datetime.now(UTC) - (moment if moment.tzinfo else moment.replace(tzinfo=UTC))).total_seconds(), 1)


def fetch(con: duckdb.DuckDBPyConnection, sql: str, params=()) -> tuple[list[str], list[tuple]]:
    cursor = con.execute(sql, params)
    return [d[0] for d in cursor.description], cursor.fetchall()


def exists(con: duckdb.DuckDBPyConnection, relation: str) -> bool:
    """Whether `schema.name` is a table or view of this database."""
    schema, name = relation.split(".")
    return bool(fetch(con, "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND "
                           "table_name = ?", (schema, name))[1][0][0])


class CatalogSource:
    """The lookups in SQL, over the DuckDB catalog's views (or any connection with tables of the same names)."""

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con

    def has(self, table: str) -> bool:
        return exists(self.con, table)

    def require(self, table: str) -> None:
        if not self.has(table):
            raise unavailable(table)

    def records(self, sql: str, params=()) -> list[dict]:
        columns, rows = fetch(self.con, sql, params)
        return [dict(zip(columns, row, strict=True)) for row in rows]

    def ranked(self, table: str, key, limit: int) -> Rows:
        self.require(table)
        key_column, columns = LOOKUPS[table]
        where, params = (f"{key_column} IS NULL", (limit,)) if key is None else (f"{key_column} = ?", (key, limit))
        return Rows(table, None, self.records(f"SELECT {', '.join(columns)} FROM {table} WHERE {where} ORDER BY rank "
                                              "LIMIT ?", params))

    def rated(self, user_id: int) -> set[int]:
        if not self.has("silver.ratings"):
            return set()
        return {m for (m,) in fetch(self.con, "SELECT movie_id FROM silver.ratings WHERE user_id = ?", (user_id,))[1]}

    def popular(self, limit: int, exclude: set[int], genre: str | None) -> Rows:
        self.require("gold.popular_movies")
        where, params = ["NOT list_contains(?, p.movie_id)"], [sorted(exclude)]
        if genre is not None:
            where.append("p.movie_id IN (SELECT movie_id FROM silver.movies WHERE list_contains(genres, ?))")
            params.append(genre)
        return Rows("gold.popular_movies", None, self.records(
            "SELECT row_number() OVER (ORDER BY p.rank) AS rank, p.movie_id, p.title, p.year, p.num_ratings "
            f"FROM gold.popular_movies p WHERE {' AND '.join(where)} ORDER BY p.rank LIMIT ?", (*params, limit)))

    def title(self, movie_id: int) -> str | None:
        self.require("silver.movies")
        found = fetch(self.con, "SELECT title FROM silver.movies WHERE movie_id = ?", (movie_id,))[1]
        return found[0][0] if found else None

    def genres(self) -> list[str]:
        self.require("silver.movies")
        return [g for (g,) in fetch(self.con, "SELECT DISTINCT unnest(genres) AS g FROM silver.movies ORDER BY g")[1]]


def event_stats(con: duckdb.DuckDBPyConnection) -> dict:
    """Totals of silver.events: events, per type, users, movies, the last event and its age, rejected records, and
    the age of gold.trending_now."""
    if not exists(con, "silver.events"):
        raise unavailable("silver.events")
    columns, rows = fetch(con, "SELECT count(*) AS total_events, count(DISTINCT user_id) AS unique_users, "
                               "count(DISTINCT movie_id) AS unique_movies, max(event_ts) AS last_event_ts, "
                               "max(received_at) AS last_received_at FROM silver.events")
    stats = dict(zip(columns, rows[0], strict=True))
    stats["freshness_seconds"] = seconds_since(stats["last_received_at"])
    per_type = fetch(con, "SELECT event_type, count(*) FROM silver.events GROUP BY event_type ORDER BY event_type")[1]
    stats.update({f"{kind}_events": n for kind, n in per_type})
    stats["rejected_records"] = fetch(con, "SELECT count(*) FROM silver.events_rejected")[1][0][0] \
        if exists(con, "silver.events_rejected") else 0
    if exists(con, "gold.trending_now"):
        stats["trending_now_age_seconds"] = seconds_since(
            fetch(con, "SELECT max(updated_at) FROM gold.trending_now")[1][0][0])
    return stats
