"""Pure Spark logic of the stream's gold tables: hourly trend scores, per-genre minute windows, decayed "now" scores.

Trend score of a movie in an hour (documented in docs/trending.md): a Poisson-floored z-score of the hour's
event count x against the movie's previous `BASELINE_HOURS` hourly counts (zeros included),

    z = (x - mean) / sqrt(max(variance, mean) + 1)

The variance is floored by the mean because counts are roughly Poisson: a flat history (variance 0) must not
make a small rise look huge; the +1 keeps the score defined for a movie with no history (z = x / 1).

"Now" score: every event of the last hours counts `EVENT_WEIGHTS[type] * 2 ** (-age / half_life)`, with the
age measured in broker time (when Kafka received the event) up to the latest event received.
"""

from datetime import datetime

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

BASELINE_HOURS = 24
# How much one event says about a movie being in demand: a view is watching, a click is browsing,
# a rating is a deliberate act after watching.
EVENT_WEIGHTS = {"view": 1.0, "click": 0.5, "rating": 2.0}
UNKNOWN_GENRE = "(unknown)"
NO_MOVIES_WARNING = ("silver_movies is not materialized: no titles, every genre is (unknown); "
                     "materialize the MovieLens batch graph to fill them in")


def event_weight(event_type: Column, weights: dict[str, float] = EVENT_WEIGHTS) -> Column:
    weight = F.lit(0.0)
    for name, value in weights.items():
        weight = F.when(event_type == name, F.lit(float(value))).otherwise(weight)
    return weight


def movie_genres(movies: DataFrame) -> DataFrame:
    """movie_id, title, genres (never empty: `(no genres listed)` movies and unknown ids get `(unknown)`)."""
    return movies.select(
        "movie_id", "title",
        F.when(F.size("genres") > 0, F.col("genres")).otherwise(F.array(F.lit(UNKNOWN_GENRE))).alias("genres"),
    )


def with_genres(events: DataFrame, movies: DataFrame) -> DataFrame:
    """Events with the movie's title and genres; a movie_id missing from the catalog gets `(unknown)`."""
    return events.join(F.broadcast(movie_genres(movies)), "movie_id", "left").withColumn(
        "genres", F.coalesce("genres", F.array(F.lit(UNKNOWN_GENRE)))
    )


def activity_counts() -> list[Column]:
    """The aggregates every stream table reports: events, views, clicks, ratings and unique users."""
    kind = F.col("event_type")
    return [
        F.count(F.lit(1)).alias("events"),
        *[F.count(F.when(kind == name, 1)).alias(f"{name}s") for name in ("view", "click", "rating")],
        F.countDistinct("user_id").alias("unique_users"),
    ]


def hourly_activity(events: DataFrame) -> DataFrame:
    """Per (hour, movie_id): events, views, clicks, ratings, unique users, average rating, watch time.

    `events` are silver events with an `hour` column (the broker hour partition they belong to).
    """
    return events.groupBy("hour", "movie_id").agg(
        *activity_counts(),
        F.round(F.avg("rating"), 3).alias("avg_rating"),
        F.coalesce(F.sum("watch_seconds"), F.lit(0)).cast("long").alias("watch_seconds"),
    )


def trend_scores(activity: DataFrame, hours: list[datetime], baseline_hours: int = BASELINE_HOURS) -> DataFrame:
    """The movies active in each of `hours`, with their baseline over the previous hours and the trend score.

    `activity` holds `hourly_activity` rows of `hours` and of the `baseline_hours` before each, with `hour` as
    a timestamp; an hour without a row counts as zero. Every row is spread over the hours it is a baseline of,
    so a whole range of hours is scored in one pass.
    """
    current = activity.where(F.col("hour").isin([F.lit(h) for h in hours]))
    history = (
        activity.select("hour", "movie_id", "events")
        .withColumn("_k", F.explode(F.sequence(F.lit(1), F.lit(baseline_hours))))
        .withColumn("hour", F.col("hour") + F.make_dt_interval(hours=F.col("_k")))
        .groupBy("hour", "movie_id")
        .agg(F.sum("events").alias("_sum"), F.sum(F.col("events") * F.col("events")).alias("_sumsq"))
    )
    n = float(baseline_hours)
    mean = F.coalesce(F.col("_sum"), F.lit(0)) / n
    variance = F.greatest(F.coalesce(F.col("_sumsq"), F.lit(0)) / n - mean * mean, F.lit(0.0))
    return (
        current.join(history, ["hour", "movie_id"], "left")
        .withColumn("baseline_mean", F.round(mean, 4))
        .withColumn("trend_score", F.round((F.col("events") - mean) / F.sqrt(F.greatest(variance, mean) + 1), 4))
        .drop("_sum", "_sumsq")
    )


def rank_trending(scored: DataFrame, movies: DataFrame) -> DataFrame:
    """Dense, unique ranks per hour: overall (`rank`) and within each of the movie's genres (`genre_ranks`)."""
    order = [F.col("trend_score").desc(), F.col("events").desc(), F.col("movie_id")]
    ranked = with_genres(scored, movies).withColumn("rank", F.row_number().over(Window.partitionBy("hour")
                                                                                 .orderBy(*order)))
    per_genre = (
        ranked.select("hour", "movie_id", "trend_score", "events", F.explode("genres").alias("genre"))
        .withColumn("genre_rank", F.row_number().over(Window.partitionBy("hour", "genre").orderBy(*order)))
        .groupBy("hour", "movie_id")
        .agg(F.map_from_entries(F.collect_list(F.struct("genre", "genre_rank"))).alias("genre_ranks"))
    )
    return ranked.join(per_genre, ["hour", "movie_id"])


def genre_minute_stats(events: DataFrame, movies: DataFrame) -> DataFrame:
    """Per genre and one-minute event-time window: what a windowed streaming job reports."""
    per_genre = with_genres(events, movies).withColumn("genre", F.explode("genres"))
    return (
        per_genre.groupBy("hour", "genre", F.window("event_ts", "1 minute").alias("w"))
        .agg(
            *activity_counts(),
            F.round(F.avg("rating"), 3).alias("avg_rating"),
            F.min("rating").alias("min_rating"),
            F.max("rating").alias("max_rating"),
            F.coalesce(F.sum("watch_seconds"), F.lit(0)).cast("long").alias("watch_seconds"),
        )
        .select("hour", "genre", F.col("w.start").alias("window_start"), F.col("w.end").alias("window_end"),
                "events", "views", "clicks", "ratings", "unique_users", "avg_rating", "min_rating", "max_rating",
                "watch_seconds")
    )


def decayed_scores(events: DataFrame, as_of: datetime, half_life_hours: float,
                   weights: dict[str, float] = EVENT_WEIGHTS) -> DataFrame:
    """movie_id, trend_score, events, views, clicks, ratings, unique_users, last_event_at — decayed to `as_of`.

    `events` need movie_id, event_type, user_id and received_at (broker time); events after `as_of` are ignored.
    """
    age_hours = (F.lit(as_of).cast("double") - F.col("received_at").cast("double")) / 3600.0
    decay = F.pow(F.lit(2.0), -age_hours / F.lit(half_life_hours))
    return (
        events.where(F.col("received_at") <= F.lit(as_of))
        .withColumn("_w", event_weight(F.col("event_type"), weights) * decay)
        .groupBy("movie_id")
        .agg(
            F.round(F.sum("_w"), 6).alias("trend_score"),
            *activity_counts(),
            F.max("received_at").alias("last_event_at"),
        )
    )
