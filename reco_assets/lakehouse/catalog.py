"""The DuckDB catalog: schemas bronze, silver and gold of views over the lakehouse's current Delta snapshots.

A view is `delta_scan` of its table, so a query reads the latest committed version, never a half-written one, and a
view made once stays current. Every table write makes sure its views exist (`ensure_views`), so each table can be
queried as soon as its asset materializes; the `duckdb_catalog` asset rebuilds them all.
"""

from pathlib import Path

import duckdb

from reco_assets.lakehouse import duck, storage
from reco_assets.lakehouse.tables import MOVIELENS_FILES, MOVIELENS_MANIFEST, TABLES, TableSpec, View

SCHEMAS = ("bronze", "silver", "gold")


def view_sql(view: View, uri: str) -> str:
    columns = ", ".join(f'"{c}"' for c in view.columns) if view.columns else "*"
    where = f" WHERE {view.where}" if view.where else ""
    return f"SELECT {columns} FROM delta_scan({duck.sql_string(storage.s3_uri(uri))}){where}"


def movielens_views(folder: str | None) -> dict[str, str | None]:
    """bronze.movielens_<file> views over the current landed CSV files and their manifest: view -> SQL (None when
    nothing is landed yet)."""
    files = {"manifest": MOVIELENS_MANIFEST, **{name.removesuffix(".csv"): name for name in MOVIELENS_FILES}}
    views = {}
    for view, name in files.items():
        path = duck.sql_string(storage.s3_uri(storage.join(folder, name))) if folder else None
        reader = f"read_json_auto({path})" if name == MOVIELENS_MANIFEST else f"read_csv({path}, header = true)"
        views[f"bronze.movielens_{view}"] = f"SELECT * FROM {reader}" if folder else None
    return views


def _existing_columns(con: duckdb.DuckDBPyConnection, view: str) -> list[str]:
    schema, name = view.split(".")
    return [c for (c,) in con.execute("SELECT column_name FROM duckdb_columns() WHERE schema_name = ? AND "
                                      "table_name = ? ORDER BY column_index", [schema, name]).fetchall()]


def ensure_views(warehouse: Path, spec: TableSpec, uri: str, columns: list[str], log=None) -> None:
    """Create the views of a table just written, unless they exist with these columns (cheap: no extension load).

    Best effort: when another process keeps the catalog locked, the write goes on and says so.
    """
    wanted = {view.name: view.columns or columns for view in spec.catalog_views}
    try:
        if warehouse.exists():
            with duck.with_lock_retry(lambda: duckdb.connect(str(warehouse), read_only=True,
                                                             config=duck.NO_AUTOLOAD)) as con:
                if all(_existing_columns(con, view) == cols for view, cols in wanted.items()):
                    return
        warehouse.parent.mkdir(parents=True, exist_ok=True)
        duck.install_delta()
        with duck.connect(str(warehouse)) as con:
            for schema in SCHEMAS:
                con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            for view in spec.catalog_views:
                con.execute(f"CREATE OR REPLACE VIEW {view.name} AS {view_sql(view, uri)}")
    except duckdb.Error as error:
        if log is None:
            raise
        log.warning(f"could not add {', '.join(wanted)} to the DuckDB catalog ({str(error).splitlines()[0]}); "
                    "materialize duckdb_catalog later to add them")


def refresh_catalog(warehouse: Path, tables: dict[str, str],
                    movielens_folder: str | None) -> tuple[list[str], list[str]]:
    """(Re)create every view whose table exists (`tables`: qualified table name -> URI of an existing table);
    drop the others. Returns (views created, views missing)."""
    created, missing = [], []
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    duck.install_delta()
    with duck.connect(str(warehouse)) as con:
        for schema in SCHEMAS:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        for view, sql in movielens_views(movielens_folder).items():
            con.execute(f"CREATE OR REPLACE VIEW {view} AS {sql}" if sql else f"DROP VIEW IF EXISTS {view}")
            (created if sql else missing).append(view)
        for qualified, spec in TABLES.items():
            for view in spec.catalog_views:
                if qualified in tables:
                    con.execute(f"CREATE OR REPLACE VIEW {view.name} AS {view_sql(view, tables[qualified])}")
                    created.append(view.name)
                else:
                    con.execute(f"DROP VIEW IF EXISTS {view.name}")
                    missing.append(view.name)
    return created, missing
