"""Silver: typed, validated, deduplicated MovieLens tables (Spark), with data-quality checks (DuckDB)."""

import time

import dagster as dg
from dagster_pyspark import LazyPySparkResource

from reco_assets.bronze import bronze_movielens
from reco_assets.lakehouse import LakehouseResource
from reco_assets.lakehouse.duck import scalar
from reco_assets.lakehouse.metadata import commit_metadata
from reco_assets.silver import transforms


def _build_silver(name: str, lakehouse: LakehouseResource, pyspark: LazyPySparkResource,
                  log) -> dg.MaterializeResult:
    started = time.monotonic()
    manifest = lakehouse.movielens_manifest()  # read once: a landing published meanwhile changes neither
    if manifest is None:
        raise dg.Failure(description=f"{lakehouse.movielens_dir} has no published MovieLens files: materialize "
                                     "bronze_movielens first")
    bronze_rows = next(f["rows"] for f in manifest["files"] if f["name"] == f"{name}.csv")
    spark = pyspark.spark_session
    folder = lakehouse.movielens_files(manifest)
    df = getattr(transforms, name)(transforms.read_movielens_csv(spark, folder, name))
    table = lakehouse.table(f"silver.{name}")
    commit = table.overwrite(df, log)
    return dg.MaterializeResult(metadata=commit_metadata(
        table, commit, df, started, bronze_rows=dg.MetadataValue.int(bronze_rows),
        rows_removed=dg.MetadataValue.int(bronze_rows - commit.rows), bronze_folder=manifest.get("folder", "")))


SILVER_KINDS = {"spark", "delta"}


@dg.asset(group_name="silver", kinds=SILVER_KINDS, deps=[bronze_movielens])
def silver_movies(context: dg.AssetExecutionContext, lakehouse: LakehouseResource,
                pyspark: LazyPySparkResource) -> dg.MaterializeResult:
    """Movies: movie_id, title (year removed), year parsed from the title, genres as a list."""
    return _build_silver("movies", lakehouse, pyspark, context.log)


@dg.asset(group_name="silver", kinds=SILVER_KINDS, deps=[bronze_movielens])
def silver_ratings(context: dg.AssetExecutionContext, lakehouse: LakehouseResource,
                pyspark: LazyPySparkResource) -> dg.MaterializeResult:
    """Ratings: user_id, movie_id, rating, rated_at (UTC); one row per user and movie, the latest."""
    return _build_silver("ratings", lakehouse, pyspark, context.log)


@dg.asset(group_name="silver", kinds=SILVER_KINDS, deps=[bronze_movielens])
def silver_tags(context: dg.AssetExecutionContext, lakehouse: LakehouseResource,
                pyspark: LazyPySparkResource) -> dg.MaterializeResult:
    """Tags: user_id, movie_id, tag, tagged_at (UTC); empty tags and exact repeats removed."""
    return _build_silver("tags", lakehouse, pyspark, context.log)


@dg.asset(group_name="silver", kinds=SILVER_KINDS, deps=[bronze_movielens])
def silver_links(context: dg.AssetExecutionContext, lakehouse: LakehouseResource,
                pyspark: LazyPySparkResource) -> dg.MaterializeResult:
    """Links: movie_id to imdb_id (as published, zero-padded) and tmdb_id."""
    return _build_silver("links", lakehouse, pyspark, context.log)


def _unique_key_check(asset: dg.AssetsDefinition, table: str, keys: list[str]) -> dg.AssetChecksDefinition:
    key_list = ", ".join(keys)

    @dg.asset_check(
        asset=asset, name=f"{table}_unique_key", blocking=True, description=f"({key_list}) is unique in silver.{table}"
    )
    def check(lakehouse: LakehouseResource) -> dg.AssetCheckResult:
        source = lakehouse.table(f"silver.{table}").duckdb()
        duplicates = scalar(f"SELECT count(*) FROM (SELECT {key_list} FROM {source} GROUP BY ALL HAVING count(*) > 1)")
        return dg.AssetCheckResult(passed=duplicates == 0, metadata={"duplicate_keys": duplicates})

    return check


@dg.asset_check(asset=silver_ratings, blocking=True, description="rating is in [0.5, 5.0] on half steps")
def ratings_on_half_star_scale(lakehouse: LakehouseResource) -> dg.AssetCheckResult:
    invalid = scalar(
        f"SELECT count(*) FROM {lakehouse.table('silver.ratings').duckdb()} "
        "WHERE rating IS NULL OR rating < 0.5 OR rating > 5.0 OR rating * 2 <> round(rating * 2)")
    return dg.AssetCheckResult(passed=invalid == 0, metadata={"invalid_ratings": invalid})


@dg.asset_check(
    asset=silver_ratings,
    additional_deps=[silver_movies],
    blocking=True,
    description="every rating's movie_id exists in silver.movies",
)
def ratings_movies_exist(lakehouse: LakehouseResource) -> dg.AssetCheckResult:
    orphans = scalar(f"SELECT count(*) FROM {lakehouse.table('silver.ratings').duckdb()} r "
                     f"ANTI JOIN {lakehouse.table('silver.movies').duckdb()} m USING (movie_id)")
    return dg.AssetCheckResult(passed=orphans == 0, metadata={"ratings_with_unknown_movie": orphans})


silver_assets = [silver_movies, silver_ratings, silver_tags, silver_links]
silver_checks = [
    _unique_key_check(silver_movies, "movies", ["movie_id"]),
    _unique_key_check(silver_ratings, "ratings", ["user_id", "movie_id"]),
    _unique_key_check(silver_links, "links", ["movie_id"]),
    ratings_on_half_star_scale,
    ratings_movies_exist,
]
