"""Keeping Delta tables small and fast: compact closed hours (OPTIMIZE), drop files no kept version reads (VACUUM)."""

from collections import Counter
from datetime import UTC, datetime

from pyarrow import fs
from pyspark.sql import SparkSession

from reco_assets.lakehouse import delta, storage
from reco_assets.lakehouse.hours import HOUR_COLUMN, hour_key, hour_value
from reco_assets.lakehouse.resource import Table


def compact_closed_hours(spark: SparkSession, table: Table, now: datetime | None = None) -> dict:
    """OPTIMIZE every hour before the current one (hours already compacted cost only a look at their files)."""
    current = hour_value(hour_key(now or datetime.now(UTC)))
    return delta.optimize(spark, table.uri, f"{HOUR_COLUMN} < '{current}'" if table.spec.hourly else None)


def vacuum(spark: SparkSession, table: Table, retain_hours: float) -> None:
    delta.vacuum(spark, table.uri, retain_hours)


def live_files_per_hour(spark: SparkSession, table: Table) -> Counter:
    """Data files of the current version, per hour."""
    rows = spark.sql(f"SELECT {HOUR_COLUMN}, count(DISTINCT _metadata.file_path) AS files FROM "
                     f"{delta.sql_path(table.uri)} GROUP BY {HOUR_COLUMN}").collect()
    return Counter({row[HOUR_COLUMN]: row["files"] for row in rows})


def stored_files(table: Table) -> int:
    """Data files in the table's folder, read by some version or by none (until VACUUM removes them)."""
    filesystem, folder = storage.filesystem(table.uri)
    listed = filesystem.get_file_info(fs.FileSelector(folder, recursive=True))
    return sum(1 for f in listed if f.path.endswith(".parquet") and "/_delta_log/" not in f.path)
