"""The DuckDB catalog: schemas bronze, silver and gold of views over the lakehouse files."""

import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import duckdb

from reco_assets.bronze.movielens import EXPECTED_HEADERS, MANIFEST_NAME
from reco_assets.resources import LakehouseResource

PARQUET_TABLES = {
    "silver": ["movies", "ratings", "tags", "links"],
    "gold": ["recommendations", "similar_movies", "popular_movies", "reco_evaluation", "trending_now",
             "hybrid_recommendations"],
}
# Tables written one Hive-style folder per hour (`hour=YYYY-MM-DD-HH`); the view exposes `hour` as a column.
HOURLY_TABLES = {"bronze": ["events"], "silver": ["events", "events_rejected"],
                 "gold": ["trending", "genre_minute_stats"]}
# Every table is written by the asset named `<layer>_<table>`.
CATALOG_DEPS = [
    "bronze_movielens",
    *(f"{layer}_{table}" for tables in (PARQUET_TABLES, HOURLY_TABLES) for layer, names in tables.items()
      for table in names),
]
LOCK_RETRY_SECONDS = 30.0


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def view_sources(lakehouse: LakehouseResource) -> dict[str, tuple[Path, str]]:
    """Qualified view name -> (the file or folder it reads, the SQL it selects from)."""
    bronze = lakehouse.table_path("bronze", "movielens")
    sources = {
        "bronze.movielens_manifest": (
            bronze / MANIFEST_NAME,
            f"read_json_auto({_sql_string(str(bronze / MANIFEST_NAME))})",
        ),
    }
    for name in EXPECTED_HEADERS:
        csv = bronze / name
        sources[f"bronze.movielens_{csv.stem}"] = (csv, f"read_csv({_sql_string(str(csv))}, header = true)")
    for layer, tables in PARQUET_TABLES.items():
        for table in tables:
            folder = lakehouse.table_path(layer, table)
            sources[f"{layer}.{table}"] = (folder, f"read_parquet({_sql_string(str(folder / '*.parquet'))})")
    for layer, tables in HOURLY_TABLES.items():
        for table in tables:
            folder = lakehouse.table_path(layer, table)
            pattern = _sql_string(str(folder / "hour=*" / "*.parquet"))
            sources[f"{layer}.{table}"] = (folder, f"read_parquet({pattern}, hive_partitioning = true)")
    return sources


def with_lock_retry(open_connection: Callable[[], duckdb.DuckDBPyConnection]) -> duckdb.DuckDBPyConnection:
    """DuckDB lets one process write or many read; wait briefly while another holds the lock."""
    deadline = time.monotonic() + LOCK_RETRY_SECONDS
    while True:
        try:
            return open_connection()
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def refresh_catalog(lakehouse: LakehouseResource, only: list[str] | None = None) -> tuple[list[str], list[str]]:
    """(Re)create a view for every table that exists (or those in `only`); return (views, tables missing)."""
    lakehouse.root.mkdir(parents=True, exist_ok=True)
    created, missing = [], []
    with with_lock_retry(lambda: duckdb.connect(str(lakehouse.warehouse_path))) as con:
        for schema in ("bronze", "silver", "gold"):
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        for view, (path, select_from) in view_sources(lakehouse).items():
            if only is not None and view not in only:
                continue
            if path.exists():
                con.execute(f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM {select_from}")
                created.append(view)
            else:
                con.execute(f"DROP VIEW IF EXISTS {view}")
                missing.append(view)
    return created, missing


def register_views(lakehouse: LakehouseResource, views: list[str], log) -> None:
    """Create the views of tables that an hourly run just wrote, so they are queryable without a catalog run.

    Best effort: when another process holds the catalog's write lock, the run goes on and says so.
    """
    try:
        refresh_catalog(lakehouse, only=views)
    except duckdb.Error as error:
        log.warning(f"could not update the DuckDB catalog ({str(error).splitlines()[0]}); "
                    "materialize duckdb_catalog later to add the views")


@dg.asset(group_name="catalog", kinds={"duckdb"}, deps=CATALOG_DEPS)
def duckdb_catalog(context: dg.AssetExecutionContext, lakehouse: LakehouseResource) -> dg.MaterializeResult:
    """`warehouse.duckdb`: views (not copies) over bronze, silver and gold, so it is small and always current."""
    created, missing = refresh_catalog(lakehouse)
    if missing:
        context.log.warning(f"not materialized yet, so no view: {', '.join(missing)}")
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(lakehouse.warehouse_path)),
            "views": dg.MetadataValue.md("\n".join(f"- `{v}`" for v in created)),
            "view_count": dg.MetadataValue.int(len(created)),
            "missing": ", ".join(missing) or "none",
        }
    )
