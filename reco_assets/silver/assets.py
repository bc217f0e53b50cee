"""Silver: typed, validated, deduplicated MovieLens tables (Spark), with data-quality checks (DuckDB)."""

import time

import dagster as dg
from dagster_pyspark import LazyPySparkResource

from reco_assets.bronze import bronze_movielens, movielens
from reco_assets.resources import LakehouseResource
from reco_assets.silver import transforms
from reco_assets.tables import duckdb_scalar, table_metadata


def _build_silver(name: str, lakehouse: LakehouseResource, pyspark: LazyPySparkResource) -> dg.MaterializeResult:
    started = time.monotonic()
    bronze_dir = lakehouse.table_path("bronze", "movielens")
    manifest = movielens.read_manifest(bronze_dir)
    bronze_rows = next(f["rows"] for f in manifest["files"] if f["name"] == f"{name}.csv")
    spark = pyspark.spark_session
    df = getattr(transforms, name)(transforms.read_movielens_csv(spark, bronze_dir, name))
    path = lakehouse.write_table(df, "silver", name)
    metadata = table_metadata(spark, path, started, bronze_rows=dg.MetadataValue.int(bronze_rows))
    metadata["rows_removed"] = dg.MetadataValue.int(bronze_rows - metadata["dagster/row_count"].value)
    return dg.MaterializeResult(metadata=metadata)


SILVER_KINDS = {"spark", "parquet"}


@dg.asset(group_name="silver", kinds=SILVER_KINDS, deps=[bronze_movielens])
def silver_movies(lakehouse: LakehouseResource, pyspark: LazyPySparkResource) -> dg.MaterializeResult:
    """Movies: movie_id, title (year removed), year parsed from the title, genres as a list."""
    return _build_silver("movies", lakehouse, pyspark)


@dg.asset(group_name="silver", kinds=SILVER_KINDS, deps=[bronze_movielens])
def silver_ratings(lakehouse: LakehouseResource, pyspark: LazyPySparkResource) -> dg.MaterializeResult:
    """Ratings: user_id, movie_id, rating, rated_at (UTC); one row per user and movie, the latest."""
    return _build_silver("ratings", lakehouse, pyspark)


@dg.asset(group_name="silver", kinds=SILVER_KINDS, deps=[bronze_movielens])
def silver_tags(lakehouse: LakehouseResource, pyspark: LazyPySparkResource) -> dg.MaterializeResult:
    """Tags: user_id, movie_id, tag, tagged_at (UTC); empty tags and exact repeats removed."""
    return _build_silver("tags", lakehouse, pyspark)


@dg.asset(group_name="silver", kinds=SILVER_KINDS, deps=[bronze_movielens])
def silver_links(lakehouse: LakehouseResource, pyspark: LazyPySparkResource) -> dg.MaterializeResult:
    """Links: movie_id to imdb_id (as published, zero-padded) and tmdb_id."""
    return _build_silver("links", lakehouse, pyspark)


def _unique_key_check(asset: dg.AssetsDefinition, table: str, keys: list[str]) -> dg.AssetChecksDefinition:
    key_list = ", ".join(keys)

    @dg.asset_check(
        asset=asset, name=f"{table}_unique_key", blocking=True, description=f"({key_list}) is unique in silver.{table}"
    )
    def check(lakehouse: LakehouseResource) -> dg.AssetCheckResult:
        duplicates = duckdb_scalar(
            f"SELECT count(*) FROM (SELECT {key_list} FROM read_parquet(?) GROUP BY ALL HAVING count(*) > 1)",
            lakehouse.parquet_glob("silver", table),
        )
        return dg.AssetCheckResult(passed=duplicates == 0, metadata={"duplicate_keys": duplicates})

    return check


@dg.asset_check(asset=silver_ratings, blocking=True, description="rating is in [0.5, 5.0] on half steps")
def ratings_on_half_star_scale(lakehouse: LakehouseResource) -> dg.AssetCheckResult:
    invalid = duckdb_scalar(
        "SELECT count(*) FROM read_parquet(?) "
        "WHERE rating IS NULL OR rating < 0.5 OR rating > 5.0 OR rating * 2 <> round(rating * 2)",
        lakehouse.parquet_glob("silver", "ratings"),
    )
    return dg.AssetCheckResult(passed=invalid == 0, metadata={"invalid_ratings": invalid})


@dg.asset_check(
    asset=silver_ratings,
    additional_deps=[silver_movies],
    blocking=True,
    description="every rating's movie_id exists in silver.movies",
)
def ratings_movies_exist(lakehouse: LakehouseResource) -> dg.AssetCheckResult:
    orphans = duckdb_scalar(
        "SELECT count(*) FROM read_parquet(?) r ANTI JOIN read_parquet(?) m USING (movie_id)",
        lakehouse.parquet_glob("silver", "ratings"),
        lakehouse.parquet_glob("silver", "movies"),
    )
    return dg.AssetCheckResult(passed=orphans == 0, metadata={"ratings_with_unknown_movie": orphans})


silver_assets = [silver_movies, silver_ratings, silver_tags, silver_links]
silver_checks = [
    _unique_key_check(silver_movies, "movies", ["movie_id"]),
    _unique_key_check(silver_ratings, "ratings", ["user_id", "movie_id"]),
    _unique_key_check(silver_links, "links", ["movie_id"]),
    ratings_on_half_star_scale,
    ratings_movies_exist,
]
