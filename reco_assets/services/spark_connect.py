"""A warm Spark for the live path: a Spark Connect server that the project starts and stops like its Kafka broker.

Every Dagster run is a fresh process, and a local Spark session costs 7–16 s to start in one. With the server up,
runs connect through `SPARK_REMOTE=sc://127.0.0.1:PORT` (PySpark's builder honours it, so dagster-pyspark's
`LazyPySparkResource` works unchanged) in about a second. The server gets the settings of
`resources.spark_config(remote=False)` (driver memory, shuffle partitions, UTC, Arrow, this venv's Python for the
workers) and Spark's Kafka connector jars, so `spark.read.format("kafka")` works over Connect too.

Everything it keeps lives under `$RECO_DATA_DIR/spark-connect`: `connect.pid`, the logs (`logs/server.log`, Spark's
log4j output; `logs/server.out`, the process's stdout and stderr) and Spark's scratch space (`work/`).

The server keeps its Python workers and their imported modules: after changing code that runs inside Python UDFs
(`mapInPandas` and the like), restart it (`reco-assets spark down && reco-assets spark up`).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from reco_assets import jars
from reco_assets.services.base import LocalService, ServiceError, ServiceStatus, command_line, port_open

DEFAULT_PORT = 15002
SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
# Variables that would turn the server's own launch into a Connect client.
_CLIENT_ENV = ("SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED", "SPARK_LOCAL_REMOTE", "SPARK_API_MODE", "MASTER")

_LOG4J2 = """\
status = warn
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = {logs}/server.log
appender.file.filePattern = {logs}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = %d{{yy/MM/dd HH:mm:ss}} %p %c{{1}}: %m%n%ex
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = warn
rootLogger.appenderRef.file.ref = file
logger.connect.name = org.apache.spark.sql.connect.service.SparkConnectServer
logger.connect.level = info
logger.context.name = org.apache.spark.SparkContext
logger.context.level = info
"""

# Run in a separate interpreter: a Connect session in the caller would switch its PySpark into Connect mode.
# The marker guards against PySpark's doctest shortcut, which exits 0 silently when a client dependency is missing.
_PROBE = """\
import sys
from pyspark.sql.connect.session import SparkSession
spark = SparkSession.builder.remote(sys.argv[1]).create()
print("reco-assets-probe", spark.range(1).count())
"""
_PROBE_OK = "reco-assets-probe 1"


class ConnectServerError(ServiceError):
    """The Spark Connect server could not be started, reached or stopped."""


def default_port() -> int:
    return int(os.environ.get("SPARK_CONNECT_PORT", str(DEFAULT_PORT)))


def check_client() -> None:
    """PySpark's Connect client needs the `pyspark[connect]` extras (grpcio-status, googleapis-common-protos, …)."""
    try:  # the package checks on import, before check_dependencies is reached
        from pyspark.sql.connect.utils import check_dependencies

        check_dependencies()
    except ImportError as error:
        import pyspark

        raise ConnectServerError(f"the Spark Connect client is not installed: {error} (install PySpark's "
                                 f"`connect` extras: pip install 'pyspark[connect]=={pyspark.__version__}')") from None


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


def spark_environment() -> dict[str, str]:
    """The environment of a Spark JVM the project starts (this server, a standalone master or worker): no variable
    that would make it a Connect client, the pyspark wheel as SPARK_HOME, this venv's Python for the Python workers,
    Java's home, and the loopback unless SPARK_LOCAL_IP says otherwise."""
    env = {k: v for k, v in os.environ.items() if k not in _CLIENT_ENV}
    env["SPARK_HOME"] = str(spark_home())
    env["PYSPARK_PYTHON"] = os.environ.get("PYSPARK_PYTHON", sys.executable)
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # the driver and its block manager stay on the loopback too
    java = shutil.which("java")
    if java and not env.get("JAVA_HOME"):
        env["JAVA_HOME"] = str(Path(java).resolve().parent.parent)
    return env


class ConnectServer(LocalService):
    """The project's Spark Connect server on 127.0.0.1; `up()` returns once a client ran a query over sc://."""

    title = "the Spark Connect server"
    name = "spark-connect"
    marker = SERVER_CLASS
    port_variable = "SPARK_CONNECT_PORT"
    error = ConnectServerError
    ready_timeout_s = 120.0

    def __init__(self, data_dir: str | Path, port: int | None = None):
        super().__init__(data_dir, port or default_port())

    @property
    def url(self) -> str:
        return f"sc://{self.host}:{self.port}"

    @property
    def address(self) -> str:
        return self.url

    @property
    def pid_file(self) -> Path:
        return self.home / "connect.pid"

    @property
    def log_file(self) -> Path:
        """Spark's log4j output."""
        return self.home / "logs" / "server.log"

    @property
    def log_files(self) -> list[Path]:
        return [self.log_file, self.out_file]

    @property
    def workdir(self) -> Path:
        return self.home / "work"

    def command(self) -> list[str]:
        """`spark-submit` of the server class (its scripts `exec` the JVM, so the child's pid is the server's)."""
        from reco_assets.resources import spark_config

        config = spark_config(remote=False)
        fixed = {"spark.master", "spark.app.name", "spark.driver.memory", "spark.driver.extraJavaOptions", "spark.jars"}
        confs = {key: value for key, value in config.items() if key not in fixed} | {
            "spark.connect.grpc.binding.address": self.host,
            "spark.connect.grpc.binding.port": str(self.port),
            # Fail on a taken port instead of quietly listening on the next one.
            "spark.connect.grpc.port.maxRetries": "0",
            "spark.local.dir": str(self.home / "work"),
            "spark.sql.warehouse.dir": str(self.home / "work" / "warehouse"),
        }
        return [
            str(spark_home() / "bin" / "spark-submit"),
            "--class", SERVER_CLASS,
            "--name", f"{config['spark.app.name']}-connect",
            "--master", config["spark.master"],
            "--driver-memory", config["spark.driver.memory"],
            "--driver-java-options", f"{config['spark.driver.extraJavaOptions']} "
                                     f"-Dlog4j2.configurationFile=file:{self.home / 'log4j2.properties'}",
            "--jars", config["spark.jars"],
            *[arg for key, value in confs.items() for arg in ("--conf", f"{key}={value}")],
            "spark-internal",
        ]

    def environment(self) -> dict[str, str]:
        return spark_environment()

    def running_port(self, pid: int) -> int | None:
        """The port a running server listens on, from its command line."""
        args = (command_line(pid) or "").split("\0")
        prefix = "spark.connect.grpc.binding.port="
        return next((int(arg[len(prefix):]) for arg in args if arg.startswith(prefix)), None)

    def prepare(self, log) -> None:
        check_client()
        if not jars.spark_jars():  # resolved once from Maven Central
            raise ConnectServerError(f"no Spark jars in {jars.cache_dir() / 'jars'}")
        (self.home / "work").mkdir(parents=True, exist_ok=True)
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        (self.home / "log4j2.properties").write_text(_LOG4J2.format(logs=self.home / "logs"))

    def check_running(self, pid: int) -> None:
        check_client()
        port = self.running_port(pid)
        if port not in (None, self.port):
            raise ConnectServerError(f"the Spark Connect server (pid {pid}) already runs on port {port}; "
                                     f"use that port or stop it first (`reco-assets spark down`)")

    def not_ready(self, timeout: float) -> str | None:
        if not port_open(self.host, self.port):
            return "it did not listen"
        return self._probe(timeout=max(5.0, timeout))

    def _probe(self, timeout: float) -> str | None:
        """Run `spark.range(1).count()` over sc:// in a fresh interpreter; None when it answered 1, else why not."""
        env = {k: v for k, v in os.environ.items() if k not in _CLIENT_ENV}
        try:
            done = subprocess.run([sys.executable, "-c", _PROBE, self.url], capture_output=True, text=True,
                                  timeout=timeout, env=env, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return f"a query did not finish within {timeout:.0f} s"
        if _PROBE_OK in done.stdout:
            return None
        lines = (done.stdout + done.stderr).strip().splitlines()
        return next((line for line in reversed(lines) if "Error" in line or "error" in line), lines[-1] if lines
                    else f"the probe exited {done.returncode}")

    def status(self) -> ServiceStatus:
        """Whether the server runs and listens, on the port it was started with (`up()` proves that queries run)."""
        pid = self.read_pid()
        if pid is None:
            return ServiceStatus(False, None, self.url, self.home, "not running")
        url = f"sc://{self.host}:{self.running_port(pid) or self.port}"
        if port_open(self.host, int(url.rsplit(":", 1)[1])):
            return ServiceStatus(True, pid, url, self.home, "running, accepts connections")
        return ServiceStatus(False, pid, url, self.home, "process alive but not listening yet")
