"""The API's serving copy: an in-memory DuckDB database whose tables have the catalog's names and hold the gold
tables that requests look up, each copied whole at one Delta version and sorted by its lookup key.

A refresher thread follows the Delta logs and replaces a table (with its row in `serving.versions`) in one DuckDB
transaction when a newer version is committed. A request reads in one transaction, so every answer comes from one
version of each table, the old or the new, never a mix; a point query on a sorted in-memory table takes well under a
millisecond, where `delta_scan` of the files takes 10 ms warm (bench/serving.py). Tables that only rare or heavy
requests read (ratings, events) stay views over the current Delta snapshot, as in the catalog.
"""

import threading
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb
from deltalake import DeltaTable

from reco_assets.lakehouse import LakehouseResource, duck
from reco_assets.lakehouse.catalog import view_sql
from reco_assets.lakehouse.tables import TABLES

# Copied tables and the order they are sorted in (their lookup key first: DuckDB skips the row groups whose
# min/max rule the key out).
COPIED = {
    "gold.recommendations": "user_id, rank",
    "gold.hybrid_recommendations": "user_id, rank",
    "gold.similar_movies": "movie_id, rank",
    "gold.popular_movies": "rank",
    "gold.trending_now": "genre, rank",
    "silver.movies": "movie_id",
}
# Read through views over their current Delta snapshot.
VIEWED = ("silver.ratings", "silver.event_outcomes")


@dataclass(frozen=True)
class Served:
    """One copied table: its Delta version and commit time."""

    version: int
    committed_at: datetime


class ServingCopy:
    """The copied tables, kept current by `refresh()` (call it, or `start()` a thread that does every `interval_s`)."""

    def __init__(self, lakehouse: LakehouseResource, interval_s: float = 1.0):
        self.lakehouse = lakehouse
        self.interval_s = interval_s
        self.db = duckdb.connect(config={**duck.NO_AUTOLOAD, "threads": "1"})
        duck.load_delta(self.db)
        for schema in ("gold", "silver", "serving"):
            self.db.execute(f"CREATE SCHEMA {schema}")
        self.db.execute("CREATE TABLE serving.versions (name VARCHAR PRIMARY KEY, version BIGINT, "
                        "committed_at TIMESTAMPTZ, copied_at TIMESTAMPTZ, rows BIGINT)")
        self.served: dict[str, Served] = {}
        self.logs: dict[str, DeltaTable] = {}
        self.views: set[str] = set()
        self.errors: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A connection of its own to the copy, for one thread."""
        return self.db.cursor()

    def refresh(self) -> list[str]:
        """Copy every table whose Delta version changed since it was copied; return their names."""
        copied = []
        for name in COPIED:
            try:
                if self._refresh_table(name):
                    copied.append(name)
                self.errors.pop(name, None)
            except Exception as error:  # keep serving the copy already held; /health reports it
                self.errors[name] = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
        for name in VIEWED:
            if name not in self.views and self.lakehouse.table(name).exists():
                with self.db.cursor() as con:
                    for view in TABLES[name].catalog_views:
                        con.execute(f"CREATE OR REPLACE VIEW {view.name} AS "
                                    f"{view_sql(view, self.lakehouse.table(name).uri)}")
                self.views.add(name)
        return copied

    def _refresh_table(self, name: str) -> bool:
        log = self.logs.get(name)
        if log is None:
            table = self.lakehouse.table(name)
            if not table.exists():
                return False
            log = self.logs[name] = DeltaTable(table.uri)
        else:
            log.update_incremental()
        version = log.version()
        if name in self.served and self.served[name].version == version:
            return False
        rows = log.to_pyarrow_table()
        committed_at = datetime.fromtimestamp(log.history(1)[0]["timestamp"] / 1000, UTC)
        with self.db.cursor() as con:
            con.register("incoming", rows)
            con.execute("BEGIN TRANSACTION")
            con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM incoming ORDER BY {COPIED[name]}")
            con.execute("INSERT OR REPLACE INTO serving.versions VALUES (?, ?, ?, ?, (SELECT count(*) FROM "
                        f"{name}))", (name, version, committed_at, datetime.now(UTC)))
            con.execute("COMMIT")
        self.served[name] = Served(version, committed_at)
        return True

    def start(self) -> "ServingCopy":
        self.refresh()
        self._thread = threading.Thread(target=self._follow, name="serving-copy", daemon=True)
        self._thread.start()
        return self

    def _follow(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=30)
        self.db.close()


def versions(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """The Delta version of each copied table, as the transaction of `con` sees them."""
    return dict(con.execute("SELECT name, version FROM serving.versions").fetchall())
