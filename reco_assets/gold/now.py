"""What is trending now, computed by DuckDB on the last hours of silver events read from the Delta files.

The scores are `trending.decayed_scores`' (a test holds the two to the same numbers): every event received within
the window before the latest one counts `EVENT_WEIGHTS[type] * 2 ** (-age / half_life)`. No Spark job: a live run's
Spark query had to rebuild the snapshot of silver.event_outcomes after each live commit (1.5–2 s).
"""

from datetime import datetime, timedelta

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from reco_assets.gold.trending import EVENT_WEIGHTS, NO_MOVIES_WARNING, UNKNOWN_GENRE
from reco_assets.lakehouse import LakehouseResource
from reco_assets.lakehouse.hours import HOUR_COLUMN, hour_key, hour_value, hours_between
from reco_assets.silver.events import latest_event

TRENDING_NOW_SCHEMA = pa.schema([
    ("genre", pa.string()), ("rank", pa.int32()), ("movie_id", pa.int32()), ("title", pa.string()),
    ("trend_score", pa.float64()), ("events", pa.int64()), ("views", pa.int64()), ("clicks", pa.int64()),
    ("ratings", pa.int64()), ("unique_users", pa.int64()), ("last_event_at", pa.timestamp("us", tz="UTC")),
    ("as_of", pa.timestamp("us", tz="UTC")), ("updated_at", pa.timestamp("us", tz="UTC")),
])
MOVIES_SCHEMA = pa.schema([("movie_id", pa.int32()), ("title", pa.string()), ("genres", pa.list_(pa.string()))])

_WEIGHT = "CASE event_type " + " ".join(f"WHEN '{name}' THEN {float(w)}" for name, w in EVENT_WEIGHTS.items()) \
    + " ELSE 0.0 END"
TOP_NOW_SQL = f"""
WITH scores AS (
    SELECT movie_id,
           round(sum({_WEIGHT} * pow(2.0, -((epoch_us($as_of) - epoch_us(received_at)) / 3600e6) / $half_life)), 6)
               AS trend_score,
           count(*) AS events,
           count(*) FILTER (event_type = 'view') AS views,
           count(*) FILTER (event_type = 'click') AS clicks,
           count(*) FILTER (event_type = 'rating') AS ratings,
           count(DISTINCT user_id) AS unique_users,
           max(received_at) AS last_event_at
    FROM events
    WHERE received_at > $since AND received_at <= $as_of
    GROUP BY movie_id
), scored AS (
    SELECT s.*, m.title,
           coalesce(CASE WHEN len(m.genres) > 0 THEN m.genres END, ['{UNKNOWN_GENRE}']) AS genres
    FROM scores s LEFT JOIN movies m USING (movie_id)
), listed AS (
    SELECT NULL::VARCHAR AS genre, * EXCLUDE (genres) FROM scored
    UNION ALL
    SELECT unnest(genres) AS genre, * EXCLUDE (genres) FROM scored
)
SELECT genre, row_number() OVER (PARTITION BY genre ORDER BY trend_score DESC, events DESC, movie_id) AS rank,
       movie_id, title, trend_score, events, views, clicks, ratings, unique_users, last_event_at,
       $as_of AS as_of, $updated_at AS updated_at
FROM listed
QUALIFY rank <= $top_n
ORDER BY genre NULLS FIRST, rank
"""


def movies(lakehouse: LakehouseResource) -> pa.Table | None:
    """silver.movies' id, title and genres; None before the batch graph made it."""
    table = lakehouse.table("silver.movies")
    version = table.version()
    return None if version is None else table.arrow(None, version, MOVIES_SCHEMA.names).cast(MOVIES_SCHEMA)


def top_now(events, movies: pa.Table, as_of: datetime, since: datetime, top_n: int, half_life_hours: float,
            updated_at: datetime) -> pa.Table:
    """The top `top_n` movies overall (genre NULL) and within each genre by decayed score: `events` (an Arrow
    table or dataset with movie_id, event_type, user_id and received_at) received in (`since`, `as_of`]."""
    with duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False}) as con:
        con.register("events", events)
        con.register("movies", movies)
        rows = con.execute(TOP_NOW_SQL, {"as_of": as_of, "since": since, "half_life": half_life_hours,
                                         "top_n": top_n, "updated_at": updated_at}).fetch_arrow_table()
    return rows.cast(TRENDING_NOW_SCHEMA)


def trending_now(lakehouse: LakehouseResource, top_n: int, window_hours: float, half_life_hours: float,
                 updated_at: datetime, log) -> tuple[pa.Table, datetime | None]:
    """gold.trending_now's rows and the time they are as of (None, and no rows, while silver holds no events)."""
    latest = latest_event(lakehouse)
    if latest is None:
        log.warning("silver_events holds no events yet: gold_trending_now is empty")
        return TRENDING_NOW_SCHEMA.empty_table(), None
    version, latest_hour, as_of = latest
    since = as_of - timedelta(hours=window_hours)
    hours = [hour_value(h) for h in hours_between(hour_key(since), latest_hour)]
    table = lakehouse.table("silver.event_outcomes")
    events = table.arrow(None, version, ["movie_id", "event_type", "user_id", "received_at"],
                         where=pc.field(HOUR_COLUMN).isin(hours) & ~pc.field("rejected")
                         & (pc.field("received_at") > pa.scalar(since, pa.timestamp("us", tz="UTC"))))
    catalog = movies(lakehouse)
    if catalog is None:
        log.warning(NO_MOVIES_WARNING)
        catalog = MOVIES_SCHEMA.empty_table()
    return top_now(events, catalog, as_of, since, top_n, half_life_hours, updated_at), as_of
