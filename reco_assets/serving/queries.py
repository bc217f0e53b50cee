"""The read queries of the gold tables, shared by the CLI (over the DuckDB catalog's views) and the HTTP API (over its
serving copy, which has tables of the same names): one SQL text per question, whichever source answers it."""

from dataclasses import dataclass, field
from datetime import UTC, datetime

import duckdb

MODELS = {"als": "gold.recommendations", "hybrid": "gold.hybrid_recommendations"}
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


@dataclass
class Listing:
    """Ranked rows, where they came from (`source`: als, hybrid, similar, trending or popular), and why a fallback
    answered, if one did."""

    columns: list[str]
    rows: list[tuple]
    source: str
    note: str | None = None
    about: dict = field(default_factory=dict)

    def records(self) -> list[dict]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


def fetch(con: duckdb.DuckDBPyConnection, sql: str, params=()) -> tuple[list[str], list[tuple]]:
    cursor = con.execute(sql, params)
    return [d[0] for d in cursor.description], cursor.fetchall()


def exists(con: duckdb.DuckDBPyConnection, relation: str) -> bool:
    """Whether `schema.name` is a table or view of this database (catalog views and serving tables alike)."""
    schema, name = relation.split(".")
    return bool(fetch(con, "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND "
                           "table_name = ?", (schema, name))[1][0][0])


def require(con: duckdb.DuckDBPyConnection, relation: str) -> None:
    if not exists(con, relation):
        raise Unavailable(f"{relation} is not materialized yet: materialize {WRITERS[relation]}")


def seconds_since(moment) -> float | None:
    """Age of a timestamp read from DuckDB (Delta timestamps are instants: DuckDB gives them a time zone)."""
    return None if moment is None else round((datetime.now(UTC) - moment).total_seconds(), 1)


def popular_for(con: duckdb.DuckDBPyConnection, user_id: int, k: int, note: str) -> Listing:
    """The cold-start list: the most-rated movies the user has not rated."""
    require(con, "gold.popular_movies")
    rated = ("WHERE p.movie_id NOT IN (SELECT movie_id FROM silver.ratings WHERE user_id = ?)"
             if exists(con, "silver.ratings") else "WHERE ? IS NOT NULL")
    columns, rows = fetch(con, "SELECT row_number() OVER (ORDER BY p.rank) AS rank, p.movie_id, p.title, p.year, "
                               f"p.num_ratings AS score FROM gold.popular_movies p {rated} ORDER BY p.rank LIMIT ?",
                          (user_id, k))
    return Listing(columns, rows, "popular", note)


def recommendations(con: duckdb.DuckDBPyConnection, user_id: int, k: int, model: str = "als") -> Listing:
    """A user's top `k` of one model (als or hybrid); a user it has no list for gets the cold-start list."""
    table = MODELS[model]
    require(con, table)
    extra = "year" if model == "als" else "source AS reason"
    columns, rows = fetch(con, f"SELECT rank, movie_id, title, {extra}, score, model_version FROM {table} "
                               "WHERE user_id = ? ORDER BY rank LIMIT ?", (user_id, k))
    if rows:
        return Listing(columns[:-1], [row[:-1] for row in rows], model, about={"model_version": rows[0][-1]})
    history = exists(con, "silver.ratings") and fetch(
        con, "SELECT count(*) FROM silver.ratings WHERE user_id = ?", (user_id,))[1][0][0]
    reason = f"no {model} recommendations yet" if history else "no history"
    return popular_for(con, user_id, k, f"user {user_id} has {reason}: popular movies (cold-start fallback)")


def similar(con: duckdb.DuckDBPyConnection, movie_id: int, k: int) -> Listing:
    require(con, "silver.movies")
    found = fetch(con, "SELECT title FROM silver.movies WHERE movie_id = ?", (movie_id,))[1]
    if not found:
        raise NotFound(f"movie {movie_id} is not in silver.movies")
    require(con, "gold.similar_movies")
    columns, rows = fetch(con, "SELECT rank, similar_movie_id AS movie_id, similar_title AS title, score AS cosine "
                               "FROM gold.similar_movies WHERE movie_id = ? ORDER BY rank LIMIT ?", (movie_id, k))
    note = None if rows else f"movie {movie_id} ({found[0][0]}) has no ALS factors (no ratings yet)"
    return Listing(columns, rows, "similar", note, about={"title": found[0][0]})


def trending(con: duckdb.DuckDBPyConnection, genre: str | None, limit: int) -> Listing:
    """What is trending now, overall (`genre` None) or in one genre; popular movies while nothing is."""
    where = "genre IS NULL" if genre is None else "genre = ?"
    params = () if genre is None else (genre,)
    if exists(con, "gold.trending_now"):
        columns, rows = fetch(con, "SELECT rank, movie_id, title, trend_score, events, views, clicks, ratings, "
                                   "unique_users, last_event_at, as_of, updated_at FROM gold.trending_now "
                                   f"WHERE {where} ORDER BY rank LIMIT ?", (*params, limit))
        if rows:
            as_of, updated_at = rows[0][-2:]
            return Listing(columns[:-2], [row[:-2] for row in rows], "trending",
                           about={"as_of": as_of, "updated_at": updated_at,
                                  "age_seconds": seconds_since(updated_at)})
    if genre is not None:
        if not exists(con, "silver.movies"):
            raise Unavailable(f"nothing trending in {genre!r}, and no genres to check it against: materialize "
                              f"{WRITERS['silver.movies']}")
        if not fetch(con, "SELECT count(*) FROM silver.movies WHERE list_contains(genres, ?)", params)[1][0][0]:
            genres = fetch(con, "SELECT DISTINCT unnest(genres) AS g FROM silver.movies ORDER BY g")[1]
            raise NotFound(f"no genre {genre!r}; genres: {', '.join(g for (g,) in genres)}")
    if not exists(con, "gold.popular_movies"):
        raise Unavailable("nothing is trending (no events streamed yet) and no popular movies to fall back on: "
                          f"materialize {WRITERS['gold.popular_movies']}")
    genre_filter = "" if genre is None else "WHERE list_contains(m.genres, ?)"
    columns, rows = fetch(con, "SELECT row_number() OVER (ORDER BY p.rank) AS rank, p.movie_id, p.title, "
                               "p.num_ratings FROM gold.popular_movies p "
                               f"JOIN silver.movies m USING (movie_id) {genre_filter} ORDER BY p.rank LIMIT ?",
                          (*params, limit))
    return Listing(columns, rows, "popular", "nothing is trending (no events streamed yet): popular movies (fallback)")


def event_stats(con: duckdb.DuckDBPyConnection) -> dict:
    """Totals of silver.events: events, per type, users, movies, the last event and its age, rejected records, and
    the age of gold.trending_now."""
    require(con, "silver.events")
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
