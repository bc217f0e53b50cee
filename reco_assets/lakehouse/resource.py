"""`LakehouseResource`: where the lakehouse, the DuckDB catalog and the downloads live, and a handle per table."""

import json
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import fs
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from reco_assets.lakehouse import catalog, delta, storage
from reco_assets.lakehouse.delta import Commit, ConcurrentWriteError
from reco_assets.lakehouse.hours import HOUR_COLUMN, hour_value, value_hour
from reco_assets.lakehouse.tables import MOVIELENS_MANIFEST, TABLES, TableSpec, View

DEFAULT_DATA_DIR = "data"
# A live run appends a file per hourly table; once the open hour has this many, the run compacts them into files of
# up to LIVE_COMPACT_BYTES (about a tenth of a second each time), so reads of the hour stay fast until its final run
# rewrites it whole.
LIVE_FILES_PER_HOUR = 50
LIVE_COMPACT_BYTES = 16 << 20


@dataclass(frozen=True)
class Table:
    """One Delta table of the lakehouse: read it, replace it or some of its hours in one commit."""

    spec: TableSpec
    uri: str
    warehouse: Path

    @property
    def name(self) -> str:
        return self.spec.qualified

    def duckdb(self, view: str | None = None) -> str:
        """The whole table (or what one of its catalog views shows) as a DuckDB subquery over its current
        snapshot."""
        chosen = View(self.name) if view is None else next(v for v in self.spec.catalog_views if v.name == view)
        return f"({catalog.view_sql(chosen, self.uri)})"

    def exists(self) -> bool:
        """Whether the table has a commit (a first write killed before it leaves only data files)."""
        return delta.exists(self.uri)

    def read(self, spark: SparkSession, version: int | None = None, view: str | None = None) -> DataFrame:
        """The table at `version` (default: the latest), or what one of its catalog views shows of it."""
        df = delta.read(spark, self.uri, version)
        if view is None:
            return df
        chosen = next(v for v in self.spec.catalog_views if v.name == view)
        df = df.where(F.expr(chosen.where)) if chosen.where else df
        return df.select(*chosen.columns) if chosen.columns else df

    def read_hours(self, spark: SparkSession, partition_keys: list[str], version: int | None = None,
                   view: str | None = None) -> DataFrame:
        """The rows of these hour partitions (partition pruning: no other hour is read)."""
        return self.read(spark, version, view).where(
            F.col(HOUR_COLUMN).isin([hour_value(k) for k in partition_keys]))

    def rows_of_hours(self, partition_keys: list[str]) -> list[dict]:
        """The rows of these hours as Python dicts, read without Spark: for small tables only (bronze.event_ranges).
        Empty when the table does not exist yet."""
        return delta.rows(self.uri, HOUR_COLUMN, [hour_value(k) for k in partition_keys]) if self.exists() else []

    def hour_counts(self, partition_keys: list[str], version: int, by: str | None = None) -> dict:
        """Rows per hour of `partition_keys` at `version` (per hour and value of the partition column `by`, if
        given), from the Delta log alone: milliseconds, whatever the hours hold."""
        columns = (HOUR_COLUMN,) if by is None else (HOUR_COLUMN, by)
        counts = delta.partition_counts(self.uri, version, columns)
        wanted = {hour_value(k): k for k in partition_keys}
        return {(wanted[key[0]], *key[1:]) if by else wanted[key[0]]: n
                for key, n in counts.items() if key[0] in wanted}

    def latest_hour(self, version: int, **partition_values) -> str | None:
        """The latest hour that holds rows at `version` (rows whose other partition columns have these values), from
        the Delta log alone; None when there is none."""
        columns = (HOUR_COLUMN, *partition_values)
        wanted = tuple(partition_values.values())
        hours = [key[0] for key, n in delta.partition_counts(self.uri, version, columns).items()
                 if n and key[1:] == wanted]
        return value_hour(max(hours)) if hours else None

    def pinned(self, spark: SparkSession, view: str | None = None) -> tuple[DataFrame | None, int | None]:
        """(the table at its current version, that version): every action on it reads the same snapshot, whatever
        other runs commit meanwhile. (None, None) when the table does not exist yet."""
        version = self.version()
        return (None, None) if version is None else (self.read(spark, version, view), version)

    def version(self) -> int | None:
        """The latest committed version (None before the first commit)."""
        return delta.version(self.uri) if self.exists() else None

    def overwrite(self, rows: DataFrame | pa.Table, log=None) -> Commit:
        """Replace the whole table with `rows` in one commit (readers see the old or the new version, never a mix).

        Here and below, a Spark DataFrame is written by Spark, rows in memory (Arrow) by delta-rs."""
        return self._write(rows, self.name, log)

    def replace_hours(self, rows: DataFrame | pa.Table, partition_keys: list[str], log=None) -> Commit:
        """Replace these hours with `rows` (which have an `hour` column and only these hours) in one commit."""
        hours = ", ".join(f"'{hour_value(k)}'" for k in partition_keys)
        label = f"{self.name} hour {partition_keys[0]}" + (f" … {partition_keys[-1]}" if len(partition_keys) > 1
                                                             else "")
        return self._write(rows, label, log, where=f"{HOUR_COLUMN} IN ({hours})")

    def append_to_hour(self, rows: DataFrame | pa.Table, partition_key: str, log=None) -> Commit:
        """Add `rows` (all of this hour) to the hour in one commit, keeping the rows it has."""
        return self._write(rows, f"{self.name} hour {partition_key} (append)", log, append=True)

    def compact_hour(self, partition_key: str, min_files: int = LIVE_FILES_PER_HOUR,
                     target_bytes: int = LIVE_COMPACT_BYTES) -> int:
        """Compact the hour's small files once live appends have left `min_files` of them (delta-rs, no Spark);
        the files removed, 0 when there were too few."""
        return delta.compact_partition(self.uri, HOUR_COLUMN, hour_value(partition_key), min_files, target_bytes)

    def _write(self, rows: DataFrame | pa.Table, label: str, log, where: str | None = None,
               append: bool = False) -> Commit:
        if isinstance(rows, pa.Table):
            commit = delta.write_rows(rows, self.uri, label, self.spec.partition_by, where, self.spec.properties,
                                      append)
            columns = rows.column_names
        else:
            commit = delta.write(rows, self.uri, label, self.spec.partition_by, where, self.spec.properties, append)
            columns = rows.columns
        catalog.ensure_views(self.warehouse, self.spec, self.uri, columns, log)
        return commit

    def arrow(self, partition_keys: list[str] | None, version: int, columns: list[str] | None = None,
              where: pc.Expression | None = None) -> pa.Table:
        """The rows of these hours (None: of all) at `version` that match `where`, read into memory without Spark:
        for the few columns or rows a live run needs."""
        if partition_keys is not None:
            hours = pc.field(HOUR_COLUMN).isin([hour_value(k) for k in partition_keys])
            where = hours if where is None else hours & where
        return delta.table(self.uri, version).to_pyarrow_dataset().to_table(columns=columns, filter=where)


class LakehouseResource(dg.ConfigurableResource):
    """The data directory: the DuckDB catalog and the downloads live below it, and so does the Delta lakehouse
    unless `RECO_LAKEHOUSE_URI` puts it on S3 (`reco_assets.lakehouse.storage`)."""

    data_dir: str = DEFAULT_DATA_DIR

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Refuse a run up front when the lakehouse's S3 endpoint, bucket or credentials are wrong."""
        storage.check(self.location)

    @property
    def root(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    @property
    def location(self) -> str:
        """The lakehouse's root: `RECO_LAKEHOUSE_URI` (s3a://bucket/prefix), or the folder `lakehouse` of the data
        directory."""
        return storage.configured_root() or str(self.root / "lakehouse")

    @property
    def warehouse_path(self) -> Path:
        return self.root / "warehouse.duckdb"

    @property
    def downloads(self) -> Path:
        return self.root / "downloads"

    @property
    def movielens_dir(self) -> str:
        """bronze_movielens: the landed copies and the published manifest, which names the current one."""
        return storage.join(self.location, "bronze", "movielens")

    def movielens_manifest(self) -> dict | None:
        """The published manifest of bronze_movielens (None before the first landing)."""
        filesystem, folder = storage.filesystem(self.movielens_dir)
        path = storage.join(folder, MOVIELENS_MANIFEST)
        if filesystem.get_file_info(path).type == fs.FileType.NotFound:
            return None
        with filesystem.open_input_stream(path) as stream:
            return json.loads(stream.read())

    def movielens_files(self, manifest: dict | None = None) -> str | None:
        """The folder of the MovieLens files that `manifest` (default: the published one) describes. A manifest
        without `folder` is the older layout, with the files beside it."""
        manifest = manifest or self.movielens_manifest()
        return None if manifest is None else storage.join(self.movielens_dir, manifest.get("folder", "."))

    def table(self, qualified: str) -> Table:
        spec = TABLES[qualified]
        return Table(spec, storage.join(self.location, spec.layer, spec.name), self.warehouse_path)

    def existing_tables(self) -> dict[str, str]:
        """Qualified name -> URI of every table written so far."""
        return {name: table.uri for name in TABLES if (table := self.table(name)).exists()}

    def bronze_offsets(self) -> dict[tuple[str, int], int]:
        """Per (topic, partition), the offset up to which bronze holds the log (read from bronze.event_ranges
        without Spark: milliseconds)."""
        table = self.table("bronze.event_ranges")
        held: dict[tuple[str, int], int] = {}
        for row in delta.rows(table.uri, columns=["topic", "partition", "end_offset"]) if table.exists() else []:
            key = (row["topic"], row["partition"])
            held[key] = max(held.get(key, 0), row["end_offset"])
        return held

    def refresh_catalog(self, log=None) -> tuple[list[str], list[str]]:
        """Rebuild every view of the DuckDB catalog: (views created, views missing). With `log`, best effort: when
        another process keeps the catalog locked, say so and go on."""
        try:
            return catalog.refresh_catalog(self.warehouse_path, self.existing_tables(), self.movielens_files())
        except duckdb.Error as error:
            if log is None:
                raise
            log.warning(f"could not update the DuckDB catalog ({str(error).splitlines()[0]}); "
                        "materialize duckdb_catalog later")
            return [], []


def retry_on_conflict(materialize, log, attempts: int = 2, again=None):
    """Run `materialize` (one hour) again on top of the version that another run committed first (`again` instead,
    when given: a live run retries as a rebuild); past `attempts`, fail with the conflict, which names the table and
    the hour."""
    for attempt in range(1, attempts + 1):
        try:
            return (materialize if attempt == 1 or again is None else again)()
        except ConcurrentWriteError as error:
            if attempt == attempts:
                raise dg.Failure(description=f"{error}. Re-run the hour once the other run has finished.") from error
            log.warning(f"{error}; retrying on top of the new version")
