"""Spark column expressions that turn MovieLens CSV into typed silver tables."""

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

# "Toy Story (1995)", "Dead Snow 2 (2014) ", "Death Note: Desu nôto (2006–2007)"; a few titles carry no year.
TITLE_WITH_YEAR = r"^(.*\S)\s*\((\d{4})(?:\s*[-–]\s*(?:\d{4})?)?\)\s*$"
NO_GENRES = "(no genres listed)"

CSV_SCHEMAS = {
    "movies": "movieId INT, title STRING, genres STRING",
    "ratings": "userId INT, movieId INT, rating DOUBLE, timestamp BIGINT",
    "tags": "userId INT, movieId INT, tag STRING, timestamp BIGINT",
    "links": "movieId INT, imdbId STRING, tmdbId INT",
}


def read_movielens_csv(spark: SparkSession, bronze_dir, name: str) -> DataFrame:
    """Read a bronze CSV with its declared schema; a malformed row fails the read."""
    return spark.read.csv(
        f"{bronze_dir}/{name}.csv",
        header=True,
        schema=CSV_SCHEMAS[name],
        escape='"',
        mode="FAILFAST",
    )


def _matched(raw: Column, group: int) -> Column:
    return F.nullif(F.regexp_extract(raw, TITLE_WITH_YEAR, group), F.lit(""))


def title_without_year(raw: Column) -> Column:
    return F.coalesce(_matched(raw, 1), F.trim(raw))


def year_from_title(raw: Column) -> Column:
    return _matched(raw, 2).cast(T.IntegerType())


def genre_list(raw: Column) -> Column:
    return F.when(raw.isNull() | (F.trim(raw) == NO_GENRES), F.array().cast("array<string>")).otherwise(
        F.split(raw, r"\|")
    )


def movies(raw: DataFrame) -> DataFrame:
    return raw.select(
        F.col("movieId").alias("movie_id"),
        title_without_year(F.col("title")).alias("title"),
        year_from_title(F.col("title")).alias("year"),
        genre_list(F.col("genres")).alias("genres"),
    )


def latest_per_key(df: DataFrame, keys: list[str], ts: str) -> DataFrame:
    """One row per key: the latest by `ts` (ties broken by the other columns, so it is deterministic)."""
    others = [c for c in df.columns if c not in keys and c != ts]
    latest = F.max(F.struct(F.col(ts), *[F.col(c) for c in others])).alias("latest")
    return df.groupBy(*keys).agg(latest).select(*keys, *[F.col(f"latest.{c}").alias(c) for c in [ts, *others]])


def ratings(raw: DataFrame) -> DataFrame:
    typed = raw.select(
        F.col("userId").alias("user_id"),
        F.col("movieId").alias("movie_id"),
        F.col("rating").cast(T.FloatType()).alias("rating"),
        F.timestamp_seconds("timestamp").alias("rated_at"),
    )
    return latest_per_key(typed, ["user_id", "movie_id"], "rated_at").select(
        "user_id", "movie_id", "rating", "rated_at"
    )


def tags(raw: DataFrame) -> DataFrame:
    return (
        raw.where(F.col("tag").isNotNull())
        .select(
            F.col("userId").alias("user_id"),
            F.col("movieId").alias("movie_id"),
            F.trim(F.col("tag")).alias("tag"),
            F.timestamp_seconds("timestamp").alias("tagged_at"),
        )
        .dropDuplicates(["user_id", "movie_id", "tag", "tagged_at"])
    )


def links(raw: DataFrame) -> DataFrame:
    return raw.select(
        F.col("movieId").alias("movie_id"),
        F.col("imdbId").alias("imdb_id"),
        F.col("tmdbId").alias("tmdb_id"),
    )
