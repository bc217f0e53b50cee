"""The API's serving copy: each gold table it looks up, held in memory whole at one Delta version, sorted by its
lookup key, and answered by binary search.

A refresher thread follows the Delta logs and swaps in a table's newer version as one new object; a request takes a
table's snapshot once and reads only it, so every answer comes from one version of the table, the old or the new,
never a mix. A lookup is a binary search and a slice of Arrow arrays (microseconds), where one DuckDB point query on
an in-memory table of 3.2M rows took 3.3 ms here and `delta_scan` of the files 16 ms (bench/serving.py). Tables that
only rare requests read (ratings for a cold-start user, events for /stats) stay DuckDB views over the current Delta
snapshot, as in the catalog. The copy is a source of reco_assets.serving.queries: the API asks the CLI's questions.
"""

import threading
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from reco_assets.lakehouse import LakehouseResource, delta, duck
from reco_assets.lakehouse.catalog import view_sql
from reco_assets.lakehouse.tables import TABLES
from reco_assets.serving.queries import LOOKUPS, POPULAR_COLUMNS, Rows, unavailable

# Copied tables: (lookup key or None, the columns kept, in answer order after the key).
COPIED = {**LOOKUPS, "gold.popular_movies": (None, POPULAR_COLUMNS), "silver.movies": ("movie_id", ["title", "genres"])}
# What /health requires: the batch graph's tables.
REQUIRED = ("gold.recommendations", "gold.similar_movies", "gold.popular_movies", "silver.movies")
# Read through DuckDB views over their current Delta snapshot.
VIEWED = ("silver.ratings", "silver.event_outcomes")
OVERALL = ""  # trending_now's key for the overall list (genre NULL)


@dataclass(frozen=True)
class Snapshot:
    """One table at one Delta version, sorted by its key (then by rank)."""

    name: str
    version: int
    committed_at: datetime
    rows: pa.Table
    keys: np.ndarray | None

    def span(self, key) -> tuple[int, int]:
        """The row range of `key` (all rows for a table without key)."""
        if self.keys is None:
            return 0, self.rows.num_rows
        if self.keys.dtype.kind in "iu":
            if not np.iinfo(self.keys.dtype).min <= key <= np.iinfo(self.keys.dtype).max:
                return 0, 0
            key = self.keys.dtype.type(key)  # of the keys' own type: numpy would copy them all to compare otherwise
        return int(np.searchsorted(self.keys, key, "left")), int(np.searchsorted(self.keys, key, "right"))

    def lookup(self, key, limit: int) -> list[dict]:
        """The rows of `key` (all rows for a table without key), at most `limit`."""
        start, end = self.span(key)
        return self.rows.slice(start, min(end - start, limit)).to_pylist()


def snapshot(name: str, log: DeltaTable) -> Snapshot:
    key, columns = COPIED[name]
    rows = log.to_pyarrow_table(columns=[key, *columns] if key else columns)
    if key == "genre":
        rows = rows.set_column(0, key, pc.fill_null(rows[key], OVERALL))
    rows = rows.sort_by([(key, "ascending"), ("rank", "ascending")] if key and "rank" in columns else
                        [(key or "rank", "ascending")])
    keys = None if key is None else rows[key].to_numpy(zero_copy_only=False)
    committed_at = datetime.fromtimestamp(log.history(1)[0]["timestamp"] / 1000, UTC)
    return Snapshot(name, log.version(), committed_at, rows.drop_columns([key]) if key else rows, keys)


class ServingCopy:
    """The copied tables, kept current by `refresh()` (call it, or `start()` a thread that does every `interval_s`),
    and a DuckDB connection for the rare questions."""

    def __init__(self, lakehouse: LakehouseResource, interval_s: float = 1.0):
        self.lakehouse = lakehouse
        self.interval_s = interval_s
        self.snapshots: dict[str, Snapshot] = {}
        self.errors: dict[str, str] = {}
        self.logs: dict[str, DeltaTable] = {}
        self.db = duckdb.connect(config={**duck.NO_AUTOLOAD, "threads": "1"})
        duck.load_delta(self.db)
        for schema in ("gold", "silver"):
            self.db.execute(f"CREATE SCHEMA {schema}")
        self.views: set[str] = set()
        self._genres: tuple[Snapshot | None, list[str]] = (None, [])
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def get(self, name: str) -> Snapshot:
        """The table's current snapshot; Unavailable (naming the asset to materialize) before its first commit."""
        found = self.snapshots.get(name)
        if found is None:
            raise unavailable(name)
        return found

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection of its own (one per thread) over the views of `VIEWED`."""
        return self.db.cursor()

    def refresh(self) -> list[str]:
        """Copy every table whose Delta version changed since it was copied; return their names."""
        copied = []
        for name in COPIED:
            try:
                log = self.logs.get(name)
                if log is None:
                    table = self.lakehouse.table(name)
                    if not table.exists():
                        continue
                    log = self.logs[name] = delta.table(table.uri)
                else:
                    log.update_incremental()
                if name not in self.snapshots or self.snapshots[name].version != log.version():
                    self.snapshots[name] = snapshot(name, log)
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

    # The lookups of the questions (reco_assets.serving.queries), from the snapshots.

    def has(self, table: str) -> bool:
        return table in self.snapshots or (table in VIEWED and table in self.views)

    def has_key(self, table: str, key) -> bool:
        """Whether `table` is copied and holds rows of `key` (microseconds: no DuckDB)."""
        start, end = self.snapshots[table].span(key) if table in self.snapshots else (0, 0)
        return end > start

    def ranked(self, table: str, key, limit: int) -> Rows:
        snapshot = self.get(table)
        return Rows(table, snapshot.version, snapshot.lookup(OVERALL if key is None else key, limit))

    def rated(self, user_id: int) -> set[int]:
        if "silver.ratings" not in self.views:
            return set()
        with self.cursor() as con:
            return {m for (m,) in con.execute("SELECT movie_id FROM silver.ratings WHERE user_id = ?",
                                              (user_id,)).fetchall()}

    def popular(self, limit: int, exclude: set[int], genre: str | None) -> Rows:
        table = self.get("gold.popular_movies")
        movies = self.get("silver.movies") if genre is not None else None
        found, offset, batch = [], 0, limit + len(exclude)
        while len(found) < limit and offset < table.rows.num_rows:  # in batches, top first
            for row in table.rows.slice(offset, batch).to_pylist():
                if row["movie_id"] in exclude or (movies is not None and genre not in (
                        next(iter(movies.lookup(row["movie_id"], 1)), {}).get("genres") or [])):
                    continue
                found.append({**row, "rank": len(found) + 1})
                if len(found) == limit:
                    break
            offset, batch = offset + batch, batch * 4
        return Rows(table.name, table.version, found)

    def title(self, movie_id: int) -> str | None:
        found = self.get("silver.movies").lookup(movie_id, 1)
        return found[0]["title"] if found else None

    def genres(self) -> list[str]:
        movies = self.get("silver.movies")
        if self._genres[0] is not movies:  # once per version of silver.movies
            self._genres = (movies, sorted({g for genres in movies.rows["genres"].to_pylist() for g in genres or []}))
        return self._genres[1]
