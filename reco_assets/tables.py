"""What every Parquet-writing asset reports about the table it wrote."""

import time

import dagster as dg
import duckdb

SPARK_TO_DAGSTER_TYPES = {"integer": "int", "bigint": "bigint", "double": "double", "float": "float"}


def duckdb_scalar(sql: str, *params):
    with duckdb.connect() as con:
        return con.execute(sql, params).fetchone()[0]


def table_metadata(spark, path, started: float, preview_rows: int = 5, **extra) -> dict:
    """Row count, column schema, a preview and timings of a written Parquet table.

    The schema comes from Spark (its type names); count and preview from DuckDB over the files, which reads
    the count from the Parquet footers and costs no Spark job.
    """
    columns = [
        dg.TableColumn(name=f.name, type=SPARK_TO_DAGSTER_TYPES.get(f.dataType.typeName(), f.dataType.simpleString()))
        for f in spark.read.parquet(str(path)).schema.fields
    ]
    files = f"{path}/*.parquet"
    with duckdb.connect() as con:
        rows = con.execute("SELECT count(*) FROM read_parquet(?)", [files]).fetchone()[0]
        preview = con.execute(f"SELECT * FROM read_parquet(?) LIMIT {int(preview_rows)}", [files]).df()
    return {
        "dagster/row_count": dg.MetadataValue.int(rows),
        "dagster/column_schema": dg.TableSchema(columns=columns),
        "path": dg.MetadataValue.path(str(path)),
        "preview": dg.MetadataValue.md(preview.to_markdown(index=False)),
        **extra,
        "seconds": round(time.monotonic() - started, 2),
    }
