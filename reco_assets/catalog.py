"""The DuckDB catalog: schemas bronze, silver and gold of views over the lakehouse files."""

import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import duckdb

from reco_assets.bronze import bronze_movielens
from reco_assets.bronze.movielens import EXPECTED_HEADERS, MANIFEST_NAME
from reco_assets.resources import LakehouseResource

PARQUET_TABLES = {
    "silver": ["movies", "ratings", "tags", "links"],
    "gold": ["recommendations", "similar_movies", "popular_movies", "reco_evaluation"],
}
# Every Parquet table is written by the asset named `<layer>_<table>`.
CATALOG_DEPS = [bronze_movielens, *(f"{layer}_{table}" for layer, tables in PARQUET_TABLES.items() for table in tables)]
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


def refresh_catalog(lakehouse: LakehouseResource) -> tuple[list[str], list[str]]:
    """(Re)create a view for every table that exists; return (views, tables not materialized yet)."""
    lakehouse.root.mkdir(parents=True, exist_ok=True)
    created, missing = [], []
    with with_lock_retry(lambda: duckdb.connect(str(lakehouse.warehouse_path))) as con:
        for schema in ("bronze", "silver", "gold"):
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        for view, (path, select_from) in view_sources(lakehouse).items():
            if path.exists():
                con.execute(f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM {select_from}")
                created.append(view)
            else:
                con.execute(f"DROP VIEW IF EXISTS {view}")
                missing.append(view)
    return created, missing


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
