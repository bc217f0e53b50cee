"""DuckDB over the Delta tables: the Delta extension from the `duckdb-ext-delta` package, never downloaded."""

import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import duckdb

LOCK_RETRY_SECONDS = 30.0
# Nothing is installed or loaded behind the user's back (and nothing is downloaded at query time).
NO_AUTOLOAD = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}


def delta_extension() -> Path:
    """The Delta extension that the `duckdb-ext-delta` wheel ships for this DuckDB version and platform."""
    folder = resources.files("duckdb_ext") / "extensions" / f"v{duckdb.__version__}"
    found = sorted(Path(str(folder)).glob("*/delta.duckdb_extension"))
    if not found:
        raise RuntimeError(f"no Delta extension for DuckDB {duckdb.__version__} in {folder}: install the "
                           "duckdb-ext-delta package that matches it (scripts/setup.sh does)")
    return found[0]


def install_delta() -> Path:
    """Install the packaged Delta extension into DuckDB's extension folder (~/.duckdb/extensions), from the file:
    any DuckDB client of this version (Python, the `duckdb` CLI) then loads it on its own when a catalog view needs
    it, without downloading anything. Idempotent."""
    with duckdb.connect(config=NO_AUTOLOAD) as con:
        installed = con.execute("SELECT installed FROM duckdb_extensions() WHERE extension_name = 'delta'").fetchone()
        if not (installed and installed[0]):
            con.execute(f"INSTALL '{delta_extension()}'")
        return Path(con.execute("SELECT install_path FROM duckdb_extensions() WHERE extension_name = 'delta'")
                    .fetchone()[0])


def load_delta(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    con.execute(f"LOAD '{delta_extension()}'")
    # Delta timestamps are instants; show them in UTC, as Spark's sessions do, whatever the host's zone.
    con.execute("SET TimeZone = 'UTC'")
    return con


def sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def connect(database: str = ":memory:", read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that can `delta_scan`; waits briefly while another process holds a file's write lock."""
    return with_lock_retry(lambda: load_delta(duckdb.connect(database, read_only=read_only, config=NO_AUTOLOAD)))


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
