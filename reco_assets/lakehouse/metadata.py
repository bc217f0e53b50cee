"""What every asset reports about the table it wrote: rows, schema, Delta version, files, a preview, timings."""

import time

import dagster as dg
import pyarrow as pa
from pyspark.sql import DataFrame

from reco_assets.lakehouse import delta
from reco_assets.lakehouse.delta import Commit
from reco_assets.lakehouse.resource import Table

SPARK_TO_DAGSTER_TYPES = {"integer": "int", "bigint": "bigint", "double": "double", "float": "float"}


def column_schema(rows: DataFrame | pa.Table) -> dg.TableSchema:
    if isinstance(rows, pa.Table):
        return dg.TableSchema(columns=[dg.TableColumn(name=f.name, type=str(f.type)) for f in rows.schema])
    return dg.TableSchema(columns=[
        dg.TableColumn(name=f.name, type=SPARK_TO_DAGSTER_TYPES.get(f.dataType.typeName(), f.dataType.simpleString()))
        for f in rows.schema.fields])


def commit_metadata(table: Table, commit: Commit, df: DataFrame | pa.Table, started: float, preview_rows: int = 5,
                    **extra) -> dict:
    """Metadata of one commit: the rows it wrote (`dagster/row_count`, so the UI plots it), the table's schema,
    its Delta version, and a preview read back at that version."""
    metadata = {
        "dagster/row_count": dg.MetadataValue.int(commit.rows),
        "dagster/column_schema": column_schema(df),
        "delta_version": dg.MetadataValue.int(commit.version),
        "table": table.name,
        "path": dg.MetadataValue.path(table.uri),
        "files_written": dg.MetadataValue.int(commit.files),
    }
    if preview_rows:
        preview = delta.head(table.uri, commit.version, preview_rows)  # from the files, no Spark job
        metadata["preview"] = dg.MetadataValue.md(preview.to_markdown(index=False))
    return {**metadata, **extra, "seconds": round(time.monotonic() - started, 2)}
