"""Gold for the stream: trending movies per hour, per-genre minute windows, and what is trending now."""

import time
from datetime import UTC, datetime, timedelta

import dagster as dg
from dagster_pyspark import LazyPySparkResource
from pydantic import Field
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from reco_assets.catalog import register_views
from reco_assets.gold import trending
from reco_assets.partitions import hour_folder, hour_key, hour_start, hourly_events
from reco_assets.resources import LakehouseResource
from reco_assets.silver import silver_movies
from reco_assets.tables import duckdb_scalar, table_metadata

STREAM_KINDS = {"spark", "parquet"}
TRENDING_COLUMNS = ["hour", "rank", "movie_id", "title", "genres", "genre_ranks", "trend_score", "events",
                    "baseline_mean", "views", "clicks", "ratings", "unique_users", "avg_rating", "watch_seconds"]

# Each hour's trend compares it with the movie's previous hours, so it reads those silver hours too.
trailing_silver_hours = dg.TimeWindowPartitionMapping(
    start_offset=-trending.BASELINE_HOURS, end_offset=0, allow_nonexistent_upstream_partitions=True
)


def _hours_between(first: str, last: str) -> list[str]:
    keys, moment = [], hour_start(first)
    while moment <= hour_start(last):
        keys.append(hour_key(moment))
        moment += timedelta(hours=1)
    return keys


def _hour_column(df: DataFrame) -> DataFrame:
    return df.withColumn("hour", F.date_format("hour", "yyyy-MM-dd-HH"))


def _movies(spark, lakehouse: LakehouseResource, log) -> DataFrame:
    """silver_movies, or no movies (titles empty, genre `(unknown)`) when the batch graph has not run yet."""
    path = lakehouse.table_path("silver", "movies")
    if path.exists():
        return spark.read.parquet(str(path))
    log.warning("silver_movies is not materialized: no titles, every genre is (unknown); "
                "materialize the MovieLens batch graph to fill them in")
    return spark.createDataFrame([], "movie_id INT, title STRING, genres ARRAY<STRING>")


def _hour_paths(lakehouse: LakehouseResource, table: str, keys: list[str]) -> list[str]:
    return [str(lakehouse.table_path("gold", table) / hour_folder(k)) for k in keys]


def _silver_hours(spark, lakehouse: LakehouseResource, keys: list[str]) -> DataFrame:
    events = trending.read_hours(spark, lakehouse, "silver", "events", keys)
    if events is None:
        raise dg.Failure(f"silver_events has none of the hours {keys[0]} … {keys[-1]}; materialize it first")
    return events


def _hours_metadata(lakehouse: LakehouseResource, table: str, keys: list[str], started: float, **extra) -> dict:
    """Row count (from the Parquet footers, no Spark job), hours, path and timing of an hourly gold table."""
    files = [f"{path}/*.parquet" for path in _hour_paths(lakehouse, table, keys)]
    return {
        "dagster/row_count": dg.MetadataValue.int(duckdb_scalar("SELECT count(*) FROM read_parquet(?)", files)),
        "hours": len(keys),
        "path": dg.MetadataValue.path(str(lakehouse.table_path("gold", table))),
        **extra,
        "seconds": round(time.monotonic() - started, 2),
    }


def rank_violations(lakehouse: LakehouseResource, keys: list[str]) -> dict[str, int]:
    """Hours (overall) and hour-genres of `keys` whose ranks in gold_trending are not exactly 1..n."""
    files = ", ".join(f"'{path}/*.parquet'" for path in _hour_paths(lakehouse, "trending", keys))
    source = f"read_parquet([{files}], hive_partitioning=true)"
    broken = "count(*) <> max(r) OR count(DISTINCT r) <> count(*) OR min(r) <> 1"
    overall = duckdb_scalar(
        f"SELECT count(*) FROM (SELECT hour FROM (SELECT hour, rank AS r FROM {source}) GROUP BY hour "
        f"HAVING {broken})")
    per_genre = duckdb_scalar(
        f"SELECT count(*) FROM (SELECT hour, g FROM (SELECT hour, unnest(map_keys(genre_ranks)) AS g, "
        f"unnest(map_values(genre_ranks)) AS r FROM {source}) GROUP BY hour, g HAVING {broken})")
    return {"hours_with_broken_ranks": overall, "hour_genres_with_broken_ranks": per_genre}


@dg.asset(
    partitions_def=hourly_events,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="gold",
    kinds=STREAM_KINDS,
    deps=[dg.AssetDep("silver_events", partition_mapping=trailing_silver_hours), silver_movies],
    check_specs=[dg.AssetCheckSpec("ranks_dense_and_unique", asset="gold_trending",
                                   description="every hour's ranks, overall and per genre, are exactly 1..n")],
)
def gold_trending(context: dg.AssetExecutionContext, lakehouse: LakehouseResource, pyspark: LazyPySparkResource):
    """Per movie and hour: views, clicks, ratings, users, rating, watch time and a trend score against the
    movie's previous 24 hours; rank overall and within each genre."""
    started = time.monotonic()
    spark = pyspark.spark_session
    keys = context.partition_keys
    window = _hours_between(hour_key(hour_start(keys[0]) - timedelta(hours=trending.BASELINE_HOURS)), keys[-1])
    events = _silver_hours(spark, lakehouse, window)
    scored = trending.trend_scores(trending.hourly_activity(events), [hour_start(k) for k in keys])
    movies = _movies(spark, lakehouse, context.log)
    table = _hour_column(trending.rank_trending(scored, movies)).select(*TRENDING_COLUMNS)
    lakehouse.write_hours(table, "gold", "trending", keys)
    register_views(lakehouse, ["gold.trending"], context.log)
    violations = rank_violations(lakehouse, keys)
    written = spark.read.parquet(*_hour_paths(lakehouse, "trending", keys))
    top = written.orderBy(F.col("trend_score").desc()).limit(10).select("rank", "movie_id", "title", "trend_score",
                                                                         "events", "baseline_mean").toPandas()
    return dg.MaterializeResult(
        metadata=_hours_metadata(lakehouse, "trending", keys, started,
                                 top_movies=dg.MetadataValue.md(top.to_markdown(index=False))),
        check_results=[dg.AssetCheckResult(check_name="ranks_dense_and_unique",
                                           passed=not any(violations.values()), metadata=violations)],
    )


@dg.asset(
    partitions_def=hourly_events,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="gold",
    kinds=STREAM_KINDS,
    deps=["silver_events", silver_movies],
)
def gold_genre_minute_stats(context: dg.AssetExecutionContext, lakehouse: LakehouseResource,
                            pyspark: LazyPySparkResource) -> dg.MaterializeResult:
    """Per genre and one-minute event-time window: views, clicks, ratings, unique users, rating avg/min/max,
    watch time — the aggregates of a windowed streaming job, per broker hour."""
    started = time.monotonic()
    spark = pyspark.spark_session
    keys = context.partition_keys
    events = _silver_hours(spark, lakehouse, keys)
    table = _hour_column(trending.genre_minute_stats(events, _movies(spark, lakehouse, context.log)))
    lakehouse.write_hours(table, "gold", "genre_minute_stats", keys)
    register_views(lakehouse, ["gold.genre_minute_stats"], context.log)
    written = spark.read.parquet(*_hour_paths(lakehouse, "genre_minute_stats", keys))
    busiest = (written.groupBy("genre").agg(F.sum("events").alias("events"), F.sum("views").alias("views"),
                                            F.sum("watch_seconds").alias("watch_seconds"))
               .orderBy(F.col("events").desc()).limit(10).toPandas())
    return dg.MaterializeResult(metadata=_hours_metadata(
        lakehouse, "genre_minute_stats", keys, started, genres=dg.MetadataValue.md(busiest.to_markdown(index=False))))


class TrendingNowConfig(dg.Config):
    top_n: int = Field(default=20, description="movies kept overall and per genre")
    window_hours: float = Field(default=24.0, description="how far back events count")
    half_life_hours: float = Field(default=1.0, description="an event's weight halves every this many hours")


TRENDING_NOW_SCHEMA = (
    "genre STRING, rank INT, movie_id INT, title STRING, trend_score DOUBLE, events BIGINT, views BIGINT, "
    "clicks BIGINT, ratings BIGINT, unique_users BIGINT, last_event_at TIMESTAMP, as_of TIMESTAMP, "
    "updated_at TIMESTAMP"
)


def top_now(scores: DataFrame, movies: DataFrame, top_n: int, as_of: datetime, updated_at: datetime) -> DataFrame:
    """The top `top_n` movies overall (genre NULL) and within each genre, by decayed score."""
    order = [F.col("trend_score").desc(), F.col("events").desc(), F.col("movie_id")]
    scored = trending.with_genres(scores, movies)
    overall = scored.withColumn("genre", F.lit(None).cast("string"))
    per_genre = scored.withColumn("genre", F.explode("genres"))
    ranked = overall.unionByName(per_genre).withColumn(
        "rank", F.row_number().over(Window.partitionBy("genre").orderBy(*order)))
    return ranked.where(F.col("rank") <= top_n).select(
        "genre", "rank", "movie_id", "title", "trend_score", "events", "views", "clicks", "ratings",
        "unique_users", "last_event_at", F.lit(as_of).alias("as_of"), F.lit(updated_at).alias("updated_at"),
    )


# gold_trending_now is stale (the UI says so, the daemon evaluates it) when no run updated it for a while.
TRENDING_NOW_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(minutes=5),
                                                        warn_window=timedelta(minutes=2))


@dg.asset(group_name="gold", kinds=STREAM_KINDS, deps=["silver_events", silver_movies],
          freshness_policy=TRENDING_NOW_FRESHNESS)
def gold_trending_now(context: dg.AssetExecutionContext, config: TrendingNowConfig, lakehouse: LakehouseResource,
                      pyspark: LazyPySparkResource) -> dg.MaterializeResult:
    """The current top N overall and per genre: events of the latest hours, exponentially decayed by age."""
    started = time.monotonic()
    spark = pyspark.spark_session
    updated_at = datetime.now(UTC)
    events, as_of = trending.recent_events(spark, lakehouse, config.window_hours)
    if events is None:
        context.log.warning("silver_events holds no events yet: gold_trending_now is empty")
        table = spark.createDataFrame([], TRENDING_NOW_SCHEMA)
    else:
        scores = trending.decayed_scores(events, as_of, config.half_life_hours)
        table = top_now(scores, _movies(spark, lakehouse, context.log), config.top_n, as_of, updated_at)
    path = lakehouse.write_table(table.orderBy(F.col("genre").asc_nulls_first(), "rank"), "gold", "trending_now",
                                 num_files=1)
    register_views(lakehouse, ["gold.trending_now"], context.log)
    return dg.MaterializeResult(metadata=table_metadata(
        spark, path, started, preview_rows=10,
        as_of=dg.MetadataValue.timestamp(as_of) if as_of else "no events",
        event_lag_seconds=round((updated_at - as_of).total_seconds(), 1) if as_of else float("nan"),
        window_hours=config.window_hours, half_life_hours=config.half_life_hours,
    ))


stream_gold_assets = [gold_trending, gold_genre_minute_stats, gold_trending_now]
