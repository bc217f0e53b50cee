"""Gold for the stream: trending movies per hour, per-genre minute windows, and what is trending now."""

import time
from datetime import UTC, datetime, timedelta

import dagster as dg
from dagster_pyspark import LazyPySparkResource
from pydantic import Field
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from reco_assets.bronze.events import EVENT_HOURS_POOL
from reco_assets.gold import now, trending
from reco_assets.lakehouse import LakehouseResource, Table, retry_on_conflict
from reco_assets.lakehouse.hours import HOUR_COLUMN, HOUR_PATTERN, hour_key, hour_start, hourly_events, hours_between
from reco_assets.lakehouse.metadata import commit_metadata
from reco_assets.silver import silver_movies
from reco_assets.silver.events import read_events

STREAM_KINDS = {"spark", "delta"}
# gold_trending's and gold_genre_minute_stats' steps run one at a time across runs (one writer per table) in a pool of
# their own, so an open hour's gold refresh does not hold up the live runs' steps (EVENT_HOURS_POOL).
GOLD_HOURS_POOL = "lakehouse_gold_hours"
TRENDING_COLUMNS = ["hour", "rank", "movie_id", "title", "genres", "genre_ranks", "trend_score", "events",
                    "baseline_mean", "views", "clicks", "ratings", "unique_users", "avg_rating", "watch_seconds"]

# Each hour's trend compares it with the movie's previous hours, so it reads those silver hours too.
trailing_silver_hours = dg.TimeWindowPartitionMapping(
    start_offset=-trending.BASELINE_HOURS, end_offset=0, allow_nonexistent_upstream_partitions=True
)


def _hour_column(df: DataFrame) -> DataFrame:
    return df.withColumn(HOUR_COLUMN, F.date_format(HOUR_COLUMN, HOUR_PATTERN))


def _movies(spark, lakehouse: LakehouseResource, log) -> DataFrame:
    """silver_movies, or no movies (titles empty, genre `(unknown)`) when the batch graph has not run yet."""
    movies = lakehouse.table("silver.movies")
    if movies.exists():
        return movies.read(spark)
    log.warning(trending.NO_MOVIES_WARNING)
    return spark.createDataFrame([], "movie_id INT, title STRING, genres ARRAY<STRING>")


def _silver_hours(spark, lakehouse: LakehouseResource, keys: list[str]) -> DataFrame:
    if not lakehouse.table("silver.event_outcomes").exists():
        raise dg.Failure(f"silver_events has none of the hours {keys[0]} … {keys[-1]}; materialize it first")
    return read_events(spark, lakehouse, keys)


def rank_violations(spark, table: Table, version: int, keys: list[str]) -> dict[str, int]:
    """Hours (overall) and hour-genres of `keys` whose ranks in gold_trending are not exactly 1..n."""
    written = table.read_hours(spark, keys, version)
    overall = written.select(HOUR_COLUMN, F.col("rank").alias("r"))
    per_genre = written.select(HOUR_COLUMN, F.explode("genre_ranks").alias("g", "r"))

    def broken(ranks: DataFrame, *keys: str) -> int:
        return ranks.groupBy(*keys).agg(F.count(F.lit(1)).alias("n"), F.max("r").alias("top"), F.min("r").alias(
            "low"), F.countDistinct("r").alias("distinct")).where(
            (F.col("n") != F.col("top")) | (F.col("distinct") != F.col("n")) | (F.col("low") != 1)).count()

    return {"hours_with_broken_ranks": broken(overall, HOUR_COLUMN),
            "hour_genres_with_broken_ranks": broken(per_genre, HOUR_COLUMN, "g")}


@dg.asset(
    partitions_def=hourly_events,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="gold",
    kinds=STREAM_KINDS,
    pool=GOLD_HOURS_POOL,
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
    window = hours_between(hour_key(hour_start(keys[0]) - timedelta(hours=trending.BASELINE_HOURS)), keys[-1])
    events = _silver_hours(spark, lakehouse, window)
    scored = trending.trend_scores(trending.hourly_activity(events), [hour_start(k) for k in keys])
    movies = _movies(spark, lakehouse, context.log)
    df = _hour_column(trending.rank_trending(scored, movies)).select(*TRENDING_COLUMNS)
    table = lakehouse.table("gold.trending")
    commit = retry_on_conflict(lambda: table.replace_hours(df, keys, context.log), context.log)
    violations = rank_violations(spark, table, commit.version, keys)
    top = (table.read_hours(spark, keys, commit.version).orderBy(F.col("trend_score").desc()).limit(10)
           .select("rank", "movie_id", "title", "trend_score", "events", "baseline_mean").toPandas())
    return dg.MaterializeResult(
        metadata=commit_metadata(table, commit, df, started, preview_rows=0, hours=len(keys),
                                 top_movies=dg.MetadataValue.md(top.to_markdown(index=False))),
        check_results=[dg.AssetCheckResult(check_name="ranks_dense_and_unique",
                                           passed=not any(violations.values()), metadata=violations)],
    )


@dg.asset(
    partitions_def=hourly_events,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="gold",
    kinds=STREAM_KINDS,
    pool=GOLD_HOURS_POOL,
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
    df = _hour_column(trending.genre_minute_stats(events, _movies(spark, lakehouse, context.log)))
    table = lakehouse.table("gold.genre_minute_stats")
    commit = retry_on_conflict(lambda: table.replace_hours(df, keys, context.log), context.log)
    busiest = (table.read_hours(spark, keys, commit.version).groupBy("genre")
               .agg(F.sum("events").alias("events"), F.sum("views").alias("views"),
                    F.sum("watch_seconds").alias("watch_seconds"))
               .orderBy(F.col("events").desc()).limit(10).toPandas())
    return dg.MaterializeResult(metadata=commit_metadata(
        table, commit, df, started, preview_rows=0, hours=len(keys),
        genres=dg.MetadataValue.md(busiest.to_markdown(index=False))))


class TrendingNowConfig(dg.Config):
    top_n: int = Field(default=20, description="movies kept overall and per genre")
    window_hours: float = Field(default=24.0, description="how far back events count")
    half_life_hours: float = Field(default=1.0, description="an event's weight halves every this many hours")


# gold_trending_now is stale (the UI says so, the daemon evaluates it) when no run updated it for a minute, the
# shortest window Dagster accepts (live runs update it every 10-20 s); the seconds-level target of an event's
# way into it is measured by bench/freshness.py.
TRENDING_NOW_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(minutes=5),
                                                        warn_window=timedelta(minutes=1))


# In a run that also refreshes gold_trending and gold_genre_minute_stats, trending-now goes first: it is the live one.
@dg.asset(group_name="gold", kinds={"duckdb", "delta"}, deps=["silver_events", silver_movies],
          freshness_policy=TRENDING_NOW_FRESHNESS, pool=EVENT_HOURS_POOL, op_tags={"dagster/priority": "1"})
def gold_trending_now(context: dg.AssetExecutionContext, config: TrendingNowConfig,
                      lakehouse: LakehouseResource) -> dg.MaterializeResult:
    """The current top N overall and per genre: events of the latest hours, exponentially decayed by age (DuckDB
    on the files, committed with delta-rs: no Spark job on the live path's last step)."""
    started = time.monotonic()
    updated_at = datetime.now(UTC)
    rows, as_of = now.trending_now(lakehouse, config.top_n, config.window_hours, config.half_life_hours, updated_at,
                                   context.log)
    table = lakehouse.table("gold.trending_now")
    commit = retry_on_conflict(lambda: table.overwrite(rows, context.log), context.log)
    return dg.MaterializeResult(metadata=commit_metadata(
        table, commit, rows, started, preview_rows=10,
        as_of=dg.MetadataValue.timestamp(as_of) if as_of else "no events",
        event_lag_seconds=round((updated_at - as_of).total_seconds(), 1) if as_of else float("nan"),
        window_hours=config.window_hours, half_life_hours=config.half_life_hours,
    ))


stream_gold_assets = [gold_trending, gold_genre_minute_stats, gold_trending_now]
