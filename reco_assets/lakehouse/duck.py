"""DuckDB over the Delta tables: the Delta extension from the `duckdb-ext-delta` package, never downloaded."""

import json
import os
import re
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from urllib.parse import urlparse

import duckdb

from reco_assets.lakehouse import storage

LOCK_RETRY_SECONDS = 30.0
# Nothing is installed or loaded behind the user's back (and nothing is downloaded at query time).
NO_AUTOLOAD = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}


def packaged_extension(name: str = "delta") -> Path:
    """An extension that a `duckdb-ext-<name>` wheel ships for this DuckDB version and platform (Delta; httpfs for a
    lakehouse on S3)."""
    folder = resources.files("duckdb_ext") / "extensions" / f"v{duckdb.__version__}"
    found = sorted(Path(str(folder)).glob(f"*/{name}.duckdb_extension"))
    if not found:
        raise RuntimeError(f"no {name} extension for DuckDB {duckdb.__version__} in {folder}: install the "
                           f"duckdb-ext-{name} package that matches it (scripts/setup.sh does)")
    return found[0]


def install_delta() -> Path:
    """Install the packaged Delta extension into DuckDB's extension folder (~/.duckdb/extensions), from the file:
    any DuckDB client of this version (Python, the `duckdb` CLI) then loads it on its own when a catalog view needs
    it, without downloading anything. Idempotent."""
    with duckdb.connect(config=NO_AUTOLOAD) as con:
        installed = con.execute("SELECT installed FROM duckdb_extensions() WHERE extension_name = 'delta'").fetchone()
        if not (installed and installed[0]):
            con.execute(f"INSTALL '{packaged_extension()}'")
        return Path(con.execute("SELECT install_path FROM duckdb_extensions() WHERE extension_name = 'delta'")
                    .fetchone()[0])


def load_delta(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """Load the Delta extension and, for a lakehouse on S3, httpfs with a secret made from the environment."""
    con.execute(f"LOAD '{packaged_extension()}'")
    # Delta timestamps are instants; show them in UTC, as Spark's sessions do, whatever the host's zone.
    con.execute("SET TimeZone = 'UTC'")
    if storage.on_s3():
        con.execute(f"LOAD '{packaged_extension('httpfs')}'")
        try:
            con.execute(s3_secret_sql())
        except duckdb.Error:  # its message may quote the statement, and with it the secret key
            raise duckdb.InvalidInputException("could not make DuckDB's S3 secret from the AWS_* variables of the "
                                               "environment") from None
    return con


def s3_secret_sql() -> str:
    """A temporary DuckDB secret (this connection only, never stored) for the lakehouse's S3, from the
    environment."""
    options = {"KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID"), "SECRET": os.environ.get("AWS_SECRET_ACCESS_KEY"),
               "SESSION_TOKEN": os.environ.get("AWS_SESSION_TOKEN"), "REGION": storage.region()}
    if url := storage.endpoint():
        target = urlparse(url)
        options |= {"ENDPOINT": target.netloc, "URL_STYLE": "path", "USE_SSL": target.scheme == "https"}
    values = ", ".join(f"{key} {str(value).lower() if isinstance(value, bool) else sql_string(value)}"
                       for key, value in options.items() if value is not None)
    return f"CREATE OR REPLACE TEMPORARY SECRET reco_lakehouse (TYPE s3, {values})"


def sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def connect(database: str = ":memory:", read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that can `delta_scan`; waits briefly while another process holds a file's write lock."""
    return with_lock_retry(lambda: load_delta(duckdb.connect(database, read_only=read_only, config=NO_AUTOLOAD)))


class RefusedQuery(ValueError):
    """A statement that a read-only catalog connection does not run; the message says why in one line."""


READ_STATEMENTS = "SELECT, WITH, FROM, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN"
# Table functions that read neither files nor settings; every other one (read_csv, glob, query, ...) is refused.
SAFE_TABLE_FUNCTIONS = frozenset({
    "range", "generate_series", "unnest", "duckdb_columns", "duckdb_constraints", "duckdb_databases",
    "duckdb_functions", "duckdb_keywords", "duckdb_schemas", "duckdb_tables", "duckdb_types", "duckdb_views"})


def connect_read_only(database: str, readable_dirs: list[str]) -> duckdb.DuckDBPyConnection:
    """The catalog for reading only: file access off except below `readable_dirs` (where the views read the
    lakehouse), configuration locked, no extension installed or loaded besides Delta (and httpfs, for S3). Run user
    SQL through `check_read_only` first: a read-only database alone still lets `COPY`, `ATTACH` and file readers
    through."""
    allowed = ", ".join(sql_string(d.rstrip("/") + "/") for d in readable_dirs)

    def open_locked() -> duckdb.DuckDBPyConnection:
        con = load_delta(duckdb.connect(database, read_only=True, config=NO_AUTOLOAD))
        con.execute(f"SET allowed_directories = [{allowed}]")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        return con

    return with_lock_retry(open_locked)


def check_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Refuse (`RefusedQuery`) anything but one read statement over the catalog's views: no second statement, no
    COPY, ATTACH, INSTALL, LOAD, SET, PRAGMA, EXPORT or CALL, no file path as a table, no table function that reads
    files or settings."""
    statements = con.extract_statements(sql)
    if len(statements) != 1:
        raise RefusedQuery(f"read-only: one statement at a time, got {len(statements)}")
    statement = statements[0]
    if statement.type == duckdb.StatementType.EXPLAIN:
        explained = re.match(r"(?is)\s*explain\s+(?:analyze\s+)?(.+)", statement.query)
        if not explained:
            raise RefusedQuery("only EXPLAIN [ANALYZE] of a read statement runs")
        check_read_only(con, explained.group(1))
        return
    keyword = (statement.query.split() or ["?"])[0].upper()
    tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [statement.query]).fetchone()[0])
    if statement.type != duckdb.StatementType.SELECT or tree.get("error"):
        raise RefusedQuery(f"read-only: {keyword} does not run here, only {READ_STATEMENTS}")
    _check_sources(tree["statements"])


def _check_sources(node) -> None:
    if isinstance(node, list):
        for child in node:
            _check_sources(child)
        return
    if not isinstance(node, dict):
        return
    if node.get("type") == "TABLE_FUNCTION":
        name = node["function"].get("function_name", "?")
        if name.lower() not in SAFE_TABLE_FUNCTIONS:
            raise RefusedQuery(f"read-only: {name}() reads outside the catalog; query its views instead "
                               "(SHOW ALL TABLES lists them)")
    if node.get("type") == "BASE_TABLE":
        name = ".".join(p for p in (node.get("catalog_name"), node.get("schema_name"), node.get("table_name")) if p)
        if any(ch in (node.get("table_name") or "") for ch in "/\\.:"):
            raise RefusedQuery(f"read-only: {name!r} is a file, not a view of the catalog")
    for child in node.values():
        _check_sources(child)


def with_lock_retry(open_connection: Callable[[], duckdb.DuckDBPyConnection]) -> duckdb.DuckDBPyConnection:
    """DuckDB lets one process write a database file or many read it; wait briefly while another holds the lock."""
    deadline = time.monotonic() + LOCK_RETRY_SECONDS
    while True:
        try:
            return open_connection()
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def scalar(sql: str, *params):
    """One value from a query over the lakehouse (`delta_scan` available)."""
    with connect() as con:
        return con.execute(sql, params).fetchone()[0]
