"""Delta Lake with Spark: one commit per write, the version it made, conflicts named, compaction and vacuum.

Everything goes through Spark SQL and DataFrame options, so it works the same in a local session and over Spark
Connect (the Delta Python API does not).
"""

import uuid
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession

# What Delta raises when another transaction committed first and this one cannot be serialized after it.
CONFLICTS = ("ConcurrentAppendException", "ConcurrentDeleteReadException", "ConcurrentDeleteDeleteException",
             "ConcurrentTransactionException", "MetadataChangedException", "ProtocolChangedException",
             "DELTA_CONCURRENT", "DELTA_METADATA_CHANGED", "DELTA_PROTOCOL_CHANGED")


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


def history(spark: SparkSession, uri: str, limit: int = 20) -> list:
    return spark.sql(f"DESCRIBE HISTORY {sql_path(uri)} LIMIT {int(limit)}").select(
        "version", "timestamp", "operation", "operationMetrics", "userMetadata").collect()


def version(spark: SparkSession, uri: str) -> int:
    return history(spark, uri, 1)[0]["version"]


def is_conflict(error: Exception) -> bool:
    text = f"{type(error).__name__} {error}"
    return any(marker in text for marker in CONFLICTS)


def write(df: DataFrame, uri: str, label: str, partition_by: tuple[str, ...] = (),
          replace_where: str | None = None) -> Commit:
    """Overwrite the table (or, with `replace_where`, only the rows matching it) in one commit; return it.

    `label` names the write in conflicts and in the commit's userMetadata, which is how the commit is found again
    when other writers commit at the same time.
    """
    token = f"{label} #{uuid.uuid4().hex[:12]}"
    writer = df.write.format("delta").mode("overwrite").option("userMetadata", token)
    if replace_where is not None:
        writer = writer.option("replaceWhere", replace_where)
    else:
        writer = writer.option("overwriteSchema", "true")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    try:
        writer.save(uri)
    except Exception as error:
        if is_conflict(error):
            raise ConcurrentWriteError(
                f"{label}: another run committed to the same part of {uri} first, so this write was not "
                f"committed ({str(error).splitlines()[0][:300]})") from error
        raise
    return find_commit(df.sparkSession, uri, token)


def find_commit(spark: SparkSession, uri: str, token: str) -> Commit:
    """The commit a write made; a write with nothing to change (no rows, none to replace) makes none, and then
    this is the table's current version with no rows written."""
    rows = history(spark, uri, 50)
    for row in rows:
        if row["userMetadata"] == token:
            return Commit(row["version"], row["operation"], dict(row["operationMetrics"] or {}))
    return Commit(rows[0]["version"], "NONE", {"numOutputRows": "0", "numFiles": "0"})


def optimize(spark: SparkSession, uri: str, where: str | None = None) -> dict:
    """Compact small files (bin-packing) of the rows matching `where`; Delta's OPTIMIZE metrics."""
    clause = f" WHERE {where}" if where else ""
    row = spark.sql(f"OPTIMIZE {sql_path(uri)}{clause}").collect()[0]
    metrics = row["metrics"].asDict()
    return {"files_added": int(metrics["numFilesAdded"]), "files_removed": int(metrics["numFilesRemoved"])}


def vacuum(spark: SparkSession, uri: str, retain_hours: float) -> None:
    """Delete files that no version of the last `retain_hours` reads."""
    spark.sql(f"VACUUM {sql_path(uri)} RETAIN {float(retain_hours)} HOURS").collect()
