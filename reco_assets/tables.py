"""What every Parquet-writing asset reports about the table it wrote."""

import time

import dagster as dg
import duckdb

SPARK_TO_DAGSTER_TYPES = {"integer": "int", "bigint": "bigint", "double": "double", "float": "float"}


def duckdb_scalar(sql: str, *params):
    with duckdb.connect() as con:
        return con.execute(sql, params).fetchone()[0]


def table_metadata(spark, path, started: float, preview_rows: int = 5, **extra) -> dict:
    """Row count, column schema, a preview and timings of a written Parquet table."""
    written = spark.read.parquet(str(path))
    columns = [
        dg.TableColumn(name=f.name, type=SPARK_TO_DAGSTER_TYPES.get(f.dataType.typeName(), f.dataType.simpleString()))
        for f in written.schema.fields
    ]
    preview = written.limit(preview_rows).toPandas()
    return {
        "dagster/row_count": dg.MetadataValue.int(written.count()),
        "dagster/column_schema": dg.TableSchema(columns=columns),
        "path": dg.MetadataValue.path(str(path)),
        "preview": dg.MetadataValue.md(preview.to_markdown(index=False)),
        **extra,
        "seconds": round(time.monotonic() - started, 2),
    }
