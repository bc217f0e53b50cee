"""Delta Lake: writes (one commit per write, conflicts named, compaction and vacuum); the log's metadata and small
tables are read without Spark.

A Spark DataFrame is written by Spark's Delta writer, through DataFrame options, so it works the same in a local
session and over Spark Connect (the Delta Python API does not). Rows already in the driver's memory (an Arrow table:
a live run's few new records, a small result) are committed by the `deltalake` package (delta-rs) instead: about
20 ms, where Spark's writer takes 0.3 s to append and 1.5 s or more to replace over Spark Connect. Versions, history
and the few rows of a small table come from `deltalake` too, which reads the log directly.
"""

import uuid
from dataclasses import dataclass

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError
from pyspark.sql import DataFrame, SparkSession

from reco_assets.lakehouse import storage

# What Delta raises when another transaction committed first and this one cannot be serialized after it.
CONFLICTS = ("ConcurrentAppendException", "ConcurrentDeleteReadException", "ConcurrentDeleteDeleteException",
             "ConcurrentTransactionException", "MetadataChangedException", "ProtocolChangedException",
             "DELTA_CONCURRENT", "DELTA_METADATA_CHANGED", "DELTA_PROTOCOL_CHANGED")


# delta-rs names its commits' metrics differently: the Spark names are kept.
DELTA_RS_METRICS = {"num_added_rows": "numOutputRows", "num_added_files": "numFiles",
                    "num_removed_files": "numRemovedFiles"}


class ConcurrentWriteError(RuntimeError):
    """Another writer committed to the same part of the table first; nothing of this write was committed."""


@dataclass(frozen=True)
class Commit:
    """One Delta commit: its version, operation and metrics (numOutputRows, numFiles, numRemovedFiles, ...)."""

    version: int
    operation: str
    metrics: dict[str, str]

    @property
    def rows(self) -> int:
        return int(self.metrics.get("numOutputRows", 0))

    @property
    def files(self) -> int:
        return int(self.metrics.get("numFiles", self.metrics.get("numAddedFiles", 0)))


def sql_path(uri: str) -> str:
    return "delta.`" + uri.replace("`", "``") + "`"


def read(spark: SparkSession, uri: str, version: int | None = None) -> DataFrame:
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(uri)


def table(uri: str, version: int | None = None) -> DeltaTable:
    """The table's Delta log (delta-rs), local or on S3."""
    return DeltaTable(uri, version=version, storage_options=storage.delta_options(uri))


def history(uri: str, limit: int = 20) -> list[dict]:
    """The latest `limit` commits, newest first: version, timestamp, operation, operationMetrics, userMetadata."""
    return table(uri).history(limit)


def exists(uri: str) -> bool:
    """Whether a Delta table with at least one commit is at `uri`."""
    return DeltaTable.is_deltatable(uri, storage_options=storage.delta_options(uri))


def version(uri: str) -> int:
    return table(uri).version()


def head(uri: str, version: int, n: int):
    """The first `n` rows of the table at `version`, as pandas (a preview)."""
    return table(uri, version).to_pyarrow_dataset().head(n).to_pandas()


def rows(uri: str, column: str | None = None, values: list[str] | None = None,
         columns: list[str] | None = None) -> list[dict]:
    """The rows of a small table (those whose partition `column` is one of `values`, if given) at its latest
    version, with `columns` (default all)."""
    filters = [(column, "in", values)] if column else None
    return table(uri).to_pyarrow_table(columns=columns, filters=filters).to_pylist()


def partition_counts(uri: str, version: int, columns: tuple[str, ...]) -> dict[tuple, int]:
    """Rows per value of the partition `columns` at `version`, summed from the log's file statistics (no data file
    is read). Delta writers record every file's row count; a file without one is an error, not a zero."""
    files = pa.table(table(uri, version).get_add_actions(flatten=True))
    counts: dict[tuple, int] = {}
    for row in files.select(["path", "num_records", *(f"partition.{c}" for c in columns)]).to_pylist():
        if row["num_records"] is None:
            raise ValueError(f"{uri} version {version}: {row['path']} has no row count in the Delta log")
        key = tuple(row[f"partition.{c}"] for c in columns)
        counts[key] = counts.get(key, 0) + row["num_records"]
    return counts


def arrow_schema(uri: str) -> pa.Schema:
    """The table's schema as Arrow types."""
    return pa.schema(table(uri).schema().to_arrow())


def conflict(label: str, uri: str, error: Exception) -> ConcurrentWriteError:
    """The error a write raises when another writer committed first (Spark's or delta-rs' exception as its cause)."""
    return ConcurrentWriteError(f"{label}: another run committed to the same part of {uri} first, so this write was "
                                f"not committed ({str(error).splitlines()[0][:300]})")


def is_conflict(error: Exception) -> bool:
    text = f"{type(error).__name__} {error}"
    return any(marker in text for marker in CONFLICTS)


def write(df: DataFrame, uri: str, label: str, partition_by: tuple[str, ...] = (),
          replace_where: str | None = None, properties: dict[str, str] | None = None, append: bool = False) -> Commit:
    """Overwrite the table (or, with `replace_where`, only the rows matching it; with `append`, none) in one commit;
    return it. `properties` are the table's Delta properties, applied when the write creates the table.

    `label` names the write in conflicts and in the commit's userMetadata, which is how the commit is found again
    when other writers commit at the same time.
    """
    token = f"{label} #{uuid.uuid4().hex[:12]}"
    writer = (df.write.format("delta").mode("append" if append else "overwrite").option("userMetadata", token)
              .options(**(properties or {})))
    if replace_where is not None:
        writer = writer.option("replaceWhere", replace_where)
    elif not append:
        writer = writer.option("overwriteSchema", "true")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    try:
        writer.save(uri)
    except Exception as error:
        if is_conflict(error):
            raise conflict(label, uri, error) from error
        raise
    return find_commit(uri, token)


def write_rows(rows: pa.Table, uri: str, label: str, partition_by: tuple[str, ...] = (),
               predicate: str | None = None, properties: dict[str, str] | None = None, append: bool = False) -> Commit:
    """`write` for rows in memory, committed by delta-rs: the same modes, labels and commits. Rows added to a
    table take its types; a whole-table overwrite replaces its schema, as `write` does."""
    token = f"{label} #{uuid.uuid4().hex[:12]}"
    created = exists(uri)
    whole = not append and predicate is None
    if created and not whole:
        schema = arrow_schema(uri)
        rows = rows.select(schema.names).cast(schema)
    try:
        write_deltalake(uri, rows, partition_by=list(partition_by) or None, mode="append" if append else "overwrite",
                        predicate=predicate, schema_mode="overwrite" if created and whole else None,
                        configuration=None if created else properties, storage_options=storage.write_options(uri),
                        commit_properties=CommitProperties(custom_metadata={"userMetadata": token}))
    except CommitFailedError as error:
        raise conflict(label, uri, error) from error
    return find_commit(uri, token)


def find_commit(uri: str, token: str) -> Commit:
    """The commit a write made; a write with nothing to change (no rows, none to replace) makes none, and then
    this is the table's current version with no rows written."""
    commits = history(uri, 50)
    for commit in commits:
        if commit.get("userMetadata") == token:
            metrics = {DELTA_RS_METRICS.get(k, k): str(v) for k, v in (commit.get("operationMetrics") or {}).items()}
            return Commit(commit["version"], commit["operation"], metrics)
    return Commit(commits[0]["version"], "NONE", {"numOutputRows": "0", "numFiles": "0"})


def compact_partition(uri: str, column: str, value: str, min_files: int, target_bytes: int) -> int:
    """Bin-pack one partition's files smaller than `target_bytes` with delta-rs, when it has `min_files` or more: a
    commit that changes no rows (readers of any version see the same data). Returns the files removed (0: no
    commit). Like every write, it takes the table's one-writer rule (on S3: docs/lakehouse.md)."""
    writer = DeltaTable(uri, storage_options=storage.write_options(uri))  # one load of the log, for both
    if len(writer.file_uris(file_pruning_predicate=[(column, "=", value)])) < min_files:
        return 0
    try:
        metrics = writer.optimize.compact(partition_filters=[(column, "=", value)], target_size=target_bytes)
    except CommitFailedError as error:
        raise conflict(f"compaction of {column} {value}", uri, error) from error
    return int(metrics["numFilesRemoved"])


def optimize(spark: SparkSession, uri: str, where: str | None = None) -> dict:
    """Compact small files (bin-packing) of the rows matching `where`; Delta's OPTIMIZE metrics."""
    clause = f" WHERE {where}" if where else ""
    row = spark.sql(f"OPTIMIZE {sql_path(uri)}{clause}").collect()[0]
    metrics = row["metrics"].asDict()
    return {"files_added": int(metrics["numFilesAdded"]), "files_removed": int(metrics["numFilesRemoved"])}


def vacuum(spark: SparkSession, uri: str, retain_hours: float) -> None:
    """Delete files that no version of the last `retain_hours` reads."""
    spark.sql(f"VACUUM {sql_path(uri)} RETAIN {float(retain_hours)} HOURS").collect()
