"""Resources: how Spark is reached (the lakehouse's own resource lives in reco_assets.lakehouse)."""

import os
import socket
import sys
import threading

import dagster as dg
from dagster_pyspark import LazyPySparkResource

from reco_assets import jars
from reco_assets.lakehouse import storage


def env_or_default(name: str, default: str) -> str | dg.EnvVar:
    """`EnvVar(name)` when the variable is set (the UI then shows where the value came from)."""
    return dg.EnvVar(name) if os.environ.get(name) else default


# What a Spark Connect client may set; the rest belongs to the server.
RUNTIME_PREFIXES = ("spark.sql.", "spark.databricks.delta.")
STATIC_SQL_SETTINGS = {"spark.sql.extensions", "spark.sql.catalog.spark_catalog"}


def spark_config(remote: bool | None = None) -> dict[str, str]:
    """Spark settings from the environment: `SPARK_MASTER` (default `local[*]`) and friends.

    Two modes. Local (`remote=False`, or `SPARK_REMOTE` unset): everything a session started in this process needs,
    master, driver memory and jars included. Spark Connect (`remote=True`, or `SPARK_REMOTE=sc://…` set, as
    `scripts/run.sh` does for the warm server of `reco_assets.services.spark_connect`): only the runtime SQL settings
    (`spark.sql.*`), the only ones a Connect client may send; the static ones (master, driver memory, jars, Python)
    belong to the server, which `ConnectServer` starts with the local-mode settings.
    """
    # PySpark starts its Python workers with $PYSPARK_PYTHON (default: `python3` from PATH), not with the
    # `spark.pyspark.python` setting, so point it at this interpreter unless the user chose one.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    master = os.environ.get("SPARK_MASTER", "local[*]")
    if master.startswith("local"):
        # A local driver, its block manager and its UI (which follows SPARK_LOCAL_IP, not the bind address) listen
        # on the loopback only; a cluster's executors must reach the driver, so there the host is the user's choice.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    config = {
        "spark.master": master,
        "spark.app.name": "reco_assets",
        "spark.driver.memory": os.environ.get("SPARK_DRIVER_MEMORY", "4g"),
        "spark.sql.shuffle.partitions": os.environ.get("SPARK_SHUFFLE_PARTITIONS", "8"),
        # Parallel file listing (Delta's VACUUM lists a table with it): Spark's 10,000 tasks took 40 s on a small
        # table here, 5 s with as many tasks as shuffle partitions.
        "spark.sql.sources.parallelPartitionDiscovery.parallelism": os.environ.get("SPARK_SHUFFLE_PARTITIONS", "8"),
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
        **({"spark.driver.bindAddress": os.environ["SPARK_LOCAL_IP"], "spark.driver.host": os.environ["SPARK_LOCAL_IP"]}
           if master.startswith("local") else {}),
        # Delta Lake: every lakehouse table is a Delta table (reco_assets.lakehouse).
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        # Delta rebuilds a table's state with a Spark job of this many tasks (default 50: mostly scheduling on 2 cores),
        # and need not rebuild it after every commit only to log the commit's statistics.
        "spark.databricks.delta.snapshotPartitions": "2",
        "spark.databricks.delta.commitStats.collect": "false",
        # A lakehouse on S3 (RECO_LAKEHOUSE_URI=s3a://…): endpoint and region; the keys stay in the environment.
        **(storage.spark_settings() if storage.on_s3() else {}),
    }
    if os.environ.get("SPARK_REMOTE") if remote is None else remote:
        # Spark Connect: runtime settings only; the server has the static ones (master, memory, jars, extensions).
        return {key: value for key, value in config.items()
                if key.startswith(RUNTIME_PREFIXES) and key not in STATIC_SQL_SETTINGS}
    # Spark's Kafka source and Delta Lake (and hadoop-aws for S3), resolved from Maven Central once.
    config["spark.jars"] = ",".join(str(jar) for jar in jars.spark_jars(s3=storage.on_s3()))
    return config


def executor_environment(batches):
    """What an executor's Python worker runs: its version and the packages top-K scoring needs there."""
    import platform

    import numpy
    import pandas
    import pyarrow

    for _ in batches:
        yield pandas.DataFrame({"python": [platform.python_version()], "numpy": [numpy.__version__],
                                "pyarrow": [pyarrow.__version__]})


class SparkResource(LazyPySparkResource):
    """The lazily started Spark session, which refuses, before the run's first step, a standalone master it cannot
    reach, executors that cannot run the project's Python, and a Spark Connect server that cannot reach the
    lakehouse on S3."""

    @classmethod
    def _is_dagster_maintained(cls) -> bool:
        return False

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if remote := os.environ.get("SPARK_REMOTE"):
            if storage.on_s3():
                check_connect_server_reaches_s3(self.spark_session, remote)
            return
        master = self.spark_config.get("spark.master", "")
        if not master.startswith("spark://"):
            return
        check_master(master)
        found = self._probe_executors(master, float(os.environ.get("RECO_EXECUTOR_CHECK_TIMEOUT_S", "120")))
        context.log.info(f"executors of {master}: Python {found.python}, numpy {found.numpy}, "
                         f"pyarrow {found.pyarrow}")

    def _probe_executors(self, master: str, timeout: float):
        """One row through `executor_environment` on an executor, or a `dg.Failure` that says what to fix."""
        outcome: dict = {}

        def probe():
            try:
                outcome["row"] = self.spark_session.range(1, numPartitions=1).mapInPandas(
                    executor_environment, "python string, numpy string, pyarrow string").collect()[0]
            except Exception as error:
                outcome["error"] = error

        thread = threading.Thread(target=probe, name="executor-check", daemon=True)
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            self.spark_session.sparkContext.cancelAllJobs()
            raise dg.Failure(description=f"no executor of {master} ran a task within {timeout:.0f} s: are workers "
                             "registered with the master, with free cores and memory (another application may hold "
                             "them all; spark.cores.max limits one)?")
        if "error" in outcome:
            lines = [line for line in str(outcome["error"]).splitlines() if line.strip()]
            reason = (lines[-1] if lines else type(outcome["error"]).__name__)[:300]
            if any(marker in str(outcome["error"]) for marker in PYTHON_PROBLEMS):
                raise dg.Failure(description=f"the executors of {master} cannot run the project's Python ({reason}): "
                                 f"install Python {sys.version_info.major}.{sys.version_info.minor} with the project "
                                 "(`pip install -e .`) on every worker, and point PYSPARK_PYTHON at it") from None
            raise dg.Failure(description=f"the executors of {master} failed a one-row check job: {reason}") from None
        return outcome["row"]


def check_connect_server_reaches_s3(spark, remote: str) -> None:
    """A Spark Connect server takes its jars and s3a settings when it starts: refuse one started without them."""
    if "hadoop-aws" not in spark.conf.get("spark.jars", ""):
        raise dg.Failure(description=f"the Spark Connect server at {remote} was started without the lakehouse's S3 "
                         "settings (no hadoop-aws on its spark.jars): restart it in a shell with RECO_LAKEHOUSE_URI "
                         "and the AWS_* variables (`reco-assets spark down`, then `reco-assets spark up`)")


# How an executor's Python worker fails when it is not the project's Python.
PYTHON_PROBLEMS = ("ModuleNotFoundError", "PYTHON_VERSION_MISMATCH", "Python in worker has different version",
                   "Cannot run program")


def check_master(master: str, timeout: float = 3.0) -> None:
    """Refuse a standalone master (or, for `spark://h1:p1,h2:p2`, every one) that does not accept a connection."""
    problems = []
    for address in master.removeprefix("spark://").split(","):
        host, _, port = address.partition(":")
        try:
            socket.create_connection((host, int(port or 7077)), timeout=timeout).close()
            return
        except (OSError, ValueError) as error:
            problems.append(f"{address}: {error}")
    raise dg.Failure(description=f"no Spark master answers at {master} (SPARK_MASTER): {'; '.join(problems)}; start "
                     "it (`reco-assets cluster up` for a local one) or unset SPARK_MASTER for local mode")


def spark_resource() -> SparkResource:
    return SparkResource(spark_config=spark_config())
