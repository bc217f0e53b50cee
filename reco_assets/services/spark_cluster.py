"""A Spark standalone cluster on this machine: a master and workers as JVMs of their own, started from the pyspark
wheel's `bin/spark-class` (the wheel has no `sbin/` start scripts). Runs reach it with
`SPARK_MASTER=spark://127.0.0.1:PORT`; the workers' executors run the project's Python, so top-K scoring (numpy in
Spark tasks) runs there as it does locally.

Each keeps its logs under `$RECO_DATA_DIR/spark-master` or `$RECO_DATA_DIR/spark-worker-N`; a worker's executors
work in its `work/` folder. Everything listens on 127.0.0.1 (`SPARK_LOCAL_IP`).
"""

import json
import os
import urllib.request
from pathlib import Path

from reco_assets.services.base import LocalService, ServiceError, port_open
from reco_assets.services.spark_connect import spark_environment, spark_home

DEFAULT_MASTER_PORT = 7077


class SparkClusterError(ServiceError):
    """The local Spark master or a worker could not be started, reached or stopped."""


def _environment() -> dict[str, str]:
    return {**spark_environment(), "SPARK_LOCAL_IP": "127.0.0.1"}  # the cluster's JVMs on the loopback, always


class SparkMaster(LocalService):
    """The standalone master on 127.0.0.1:port, its web UI (and JSON status) on port + 1."""

    title = "the Spark master"
    name = "spark-master"
    marker = "org.apache.spark.deploy.master.Master"
    port_variable = "RECO_SPARK_MASTER_PORT"
    error = SparkClusterError

    def __init__(self, data_dir: str | Path, port: int | None = None):
        super().__init__(data_dir, port or int(os.environ.get("RECO_SPARK_MASTER_PORT", DEFAULT_MASTER_PORT)))

    @property
    def url(self) -> str:
        return f"spark://{self.host}:{self.port}"

    @property
    def address(self) -> str:
        return self.url

    @property
    def ui_port(self) -> int:
        return self.port + 1

    @property
    def ports(self) -> list[int]:
        return [self.port, self.ui_port]

    def command(self) -> list[str]:
        return [str(spark_home() / "bin" / "spark-class"), self.marker, "--host", self.host, "--port",
                str(self.port), "--webui-port", str(self.ui_port)]

    def environment(self) -> dict[str, str]:
        return _environment()

    def state(self) -> dict:
        """The master's own view (its web UI's JSON): alive workers, cores, running and completed applications."""
        with urllib.request.urlopen(f"http://{self.host}:{self.ui_port}/json/", timeout=5) as answer:
            return json.load(answer)

    def not_ready(self, timeout: float) -> str | None:
        if not port_open(self.host, self.port):
            return "it does not listen yet"
        try:
            return None if self.state().get("status") == "ALIVE" else "it is not ALIVE yet"
        except OSError as error:
            return f"its status page does not answer ({error})"


class SparkWorker(LocalService):
    """Worker `index` of the master: `cores` cores and `memory` for its executors; ready once the master lists it
    as ALIVE."""

    title = "a Spark worker"
    marker = "org.apache.spark.deploy.worker.Worker"
    port_variable = "RECO_SPARK_MASTER_PORT"
    error = SparkClusterError

    def __init__(self, data_dir: str | Path, master: SparkMaster, index: int = 1, cores: int = 1,
                 memory: str = "2g"):
        self.name = f"spark-worker-{index}"
        self.title = f"Spark worker {index}"
        self.master = master
        self.cores, self.memory = cores, memory
        # Its ports follow the master's: worker 1 on master + 2 and + 3 (UI), worker 2 on + 4 and + 5, …
        super().__init__(data_dir, master.port + 2 * index)

    @property
    def ports(self) -> list[int]:
        return [self.port, self.port + 1]

    def command(self) -> list[str]:
        return [str(spark_home() / "bin" / "spark-class"), self.marker, self.master.url, "--host", self.host,
                "--port", str(self.port), "--webui-port", str(self.port + 1), "--cores", str(self.cores),
                "--memory", self.memory, "--work-dir", str(self.home / "work")]

    def environment(self) -> dict[str, str]:
        return _environment()

    def prepare(self, log) -> None:
        (self.home / "work").mkdir(parents=True, exist_ok=True)
        if self.master.read_pid() is None and not port_open(self.master.host, self.master.port):
            raise SparkClusterError(f"no Spark master at {self.master.url}: start it first "
                                    "(`reco-assets cluster up` starts both)")

    def not_ready(self, timeout: float) -> str | None:
        try:
            workers = self.master.state().get("workers", [])
        except OSError as error:
            return f"the master's status page does not answer ({error})"
        if any(w.get("state") == "ALIVE" and w.get("port") == self.port for w in workers):
            return None
        return f"the master at {self.master.url} does not list it as ALIVE yet"


def cluster(data_dir: str | Path, port: int | None = None, workers: int = 1, cores: int = 1,
            memory: str = "2g") -> tuple[SparkMaster, list[SparkWorker]]:
    """The master and `workers` workers; with those started before (a `down` or `status` after an `up` with more
    workers), every one that has a state folder."""
    master = SparkMaster(data_dir, port)
    started = [int(folder.name.rsplit("-", 1)[1]) for folder in Path(master.home.parent).glob("spark-worker-*")
               if folder.name.rsplit("-", 1)[1].isdigit()]
    return master, [SparkWorker(data_dir, master, i, cores, memory)
                    for i in sorted(set(range(1, workers + 1)) | set(started))]
