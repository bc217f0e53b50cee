"""Resources: where the lakehouse lives and how Spark is reached."""

import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from dagster_pyspark import LazyPySparkResource

from reco_assets.kafka import jars
from reco_assets.partitions import hour_folder

DEFAULT_DATA_DIR = "data"
LAYERS = ("bronze", "silver", "gold")


def env_or_default(name: str, default: str) -> str | dg.EnvVar:
    """`EnvVar(name)` when the variable is set (the UI then shows where the value came from)."""
    return dg.EnvVar(name) if os.environ.get(name) else default


def replace_dir(staged: Path, final: Path) -> None:
    """Swap a fully written directory into place; readers never see a half-written one."""
    old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
    if final.exists():
        final.rename(old)
    staged.rename(final)
    shutil.rmtree(old, ignore_errors=True)


class LakehouseResource(dg.ConfigurableResource):
    """The data directory: Parquet lakehouse, DuckDB catalog and downloads all live below it."""

    data_dir: str = DEFAULT_DATA_DIR

    @property
    def root(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    @property
    def lakehouse(self) -> Path:
        return self.root / "lakehouse"

    @property
    def warehouse_path(self) -> Path:
        return self.root / "warehouse.duckdb"

    @property
    def downloads(self) -> Path:
        return self.root / "downloads"

    def table_path(self, layer: str, table: str) -> Path:
        if layer not in LAYERS:
            raise ValueError(f"unknown layer {layer!r}, expected one of {LAYERS}")
        return self.lakehouse / layer / table

    def parquet_glob(self, layer: str, table: str) -> str:
        return str(self.table_path(layer, table) / "*.parquet")

    @contextmanager
    def staged_dir(self, final: Path) -> Iterator[Path]:
        """Yield a temporary sibling of `final`; on success it replaces `final` atomically.

        On failure the staged copy is removed and `final` is left as it was.
        """
        final.parent.mkdir(parents=True, exist_ok=True)
        for stale in final.parent.glob(f".{final.name}.*"):
            shutil.rmtree(stale, ignore_errors=True)
        staged = final.with_name(f".{final.name}.staged-{uuid.uuid4().hex[:8]}")
        try:
            yield staged
            replace_dir(staged, final)
        finally:
            shutil.rmtree(staged, ignore_errors=True)

    def write_table(self, df, layer: str, table: str, num_files: int | None = None) -> Path:
        """Write a Spark DataFrame as a Parquet table, replacing the previous version atomically."""
        final = self.table_path(layer, table)
        if num_files:
            df = df.coalesce(num_files)
        with self.staged_dir(final) as staged:
            df.write.mode("overwrite").parquet(str(staged))
        return final

    def write_hours(self, df, layer: str, table: str, partition_keys: list[str]) -> list[Path]:
        """Write the hour partitions of a Spark DataFrame with an `hour` column (`YYYY-MM-DD-HH`) in one job.

        Each hour's folder is swapped in atomically; an hour without rows gets an empty file with the schema.
        """
        root = self.table_path(layer, table)
        root.mkdir(parents=True, exist_ok=True)
        staged = root.with_name(f".{table}.hours-{uuid.uuid4().hex[:8]}")
        try:
            df.repartition("hour").write.partitionBy("hour").parquet(str(staged))
            written = []
            for key in partition_keys:
                part = staged / hour_folder(key)
                if not part.exists():
                    df.limit(0).drop("hour").coalesce(1).write.parquet(str(part))
                replace_dir(part, root / hour_folder(key))
                written.append(root / hour_folder(key))
        finally:
            shutil.rmtree(staged, ignore_errors=True)
        return written


def spark_config(remote: bool | None = None) -> dict[str, str]:
    """Spark settings from the environment: `SPARK_MASTER` (default `local[*]`) and friends.

    Two modes. Local (`remote=False`, or `SPARK_REMOTE` unset): everything a session started in this process needs,
    master, driver memory and jars included. Spark Connect (`remote=True`, or `SPARK_REMOTE=sc://…` set, as
    `scripts/run.sh` does for the warm server of `reco_assets.spark_connect`): only the runtime SQL settings
    (`spark.sql.*`), the only ones a Connect client may send; the static ones (master, driver memory, jars, Python)
    belong to the server, which `ConnectServer` starts with the local-mode settings.
    """
    # PySpark starts its Python workers with $PYSPARK_PYTHON (default: `python3` from PATH), not with the
    # `spark.pyspark.python` setting, so point it at this interpreter unless the user chose one.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    config = {
        "spark.master": os.environ.get("SPARK_MASTER", "local[*]"),
        "spark.app.name": "reco_assets",
        "spark.driver.memory": os.environ.get("SPARK_DRIVER_MEMORY", "4g"),
        "spark.sql.shuffle.partitions": os.environ.get("SPARK_SHUFFLE_PARTITIONS", "8"),
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.pyspark.python": os.environ["PYSPARK_PYTHON"],
        "spark.ui.showConsoleProgress": "false",
        # Fall back from whole-stage codegen when a generated method is too big for HotSpot to JIT (8 KB);
        # the event contract check is such a stage, and interpreted bytecode is far slower than the fallback.
        "spark.sql.codegen.hugeMethodLimit": "8000",
        # The throughput collector: on 2 cores G1's concurrent threads take CPU from the tasks (about 10 % on a
        # large silver hour, bench/silver_events.py).
        "spark.driver.extraJavaOptions": "-XX:+UseParallelGC",
        "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
    }
    if os.environ.get("SPARK_REMOTE") if remote is None else remote:
        # Spark Connect: runtime SQL settings only (all `spark.sql.*` ones above are); the server has the rest.
        return {key: value for key, value in config.items() if key.startswith("spark.sql.")}
    # Spark's Kafka source, resolved from Maven Central once (`reco-assets kafka install`).
    config["spark.jars"] = ",".join(str(jar) for jar in jars.jars(jars.SPARK_KAFKA))
    return config


def spark_resource() -> LazyPySparkResource:
    return LazyPySparkResource(spark_config=spark_config())
