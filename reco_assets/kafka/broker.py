"""A single-node Apache Kafka broker (KRaft, broker + controller) that the project installs and runs itself.

Everything it keeps lives under `$RECO_DATA_DIR/kafka`: `server.properties`, the log dirs (`data/`),
the broker's own logs (`logs/`) and `kafka.pid`. The jars come from Maven Central (see `jars.py`).
"""

import base64
import os
import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from reco_assets import jars
from reco_assets.processes import pid_alive, port_open, read_pid_file, terminate

DEFAULT_PORT = 9092
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0

_LOG4J2 = """\
status = warn
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = {logs}/server.log
appender.file.filePattern = {logs}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
logger.kafka.name = org.apache.kafka
logger.kafka.level = warn
"""


class BrokerError(RuntimeError):
    """The local broker could not be installed, started or stopped."""


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    pid: int | None
    bootstrap_servers: str
    home: Path
    detail: str


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalBroker:
    """Install, start, stop and inspect the project's own broker on 127.0.0.1."""

    def __init__(self, data_dir: str | Path, port: int = DEFAULT_PORT, controller_port: int | None = None):
        self.home = Path(data_dir).expanduser().resolve() / "kafka"
        self.port = port
        self.controller_port = controller_port or port + 1
        self.host = "127.0.0.1"

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.home / "kafka.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / "server.out"

    def _properties(self) -> str:
        return "\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.bootstrap.servers={self.host}:{self.controller_port}",
            f"listeners=PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}",
            f"advertised.listeners=PLAINTEXT://{self.host}:{self.port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={self.home / 'data'}",
            "num.partitions=3",
            "auto.create.topics.enable=false",
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "log.retention.hours=168",
            "",
        ])

    def _java(self, main: str, *args: str, **popen) -> list[str]:
        classpath = os.pathsep.join(str(p) for p in jars.jars(jars.BROKER))
        heap = os.environ.get("KAFKA_HEAP_OPTS", "-Xms256m -Xmx1g").split()
        return [shutil.which("java") or "java", *heap, "-XX:+UseG1GC",
                f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
                f"-Dkafka.logs.dir={self.home / 'logs'}", "-cp", classpath, main, *args]

    def read_pid(self) -> int | None:
        return read_pid_file(self.pid_file)

    def install(self, log=print) -> None:
        """Fetch the jars and format the KRaft storage (both only once)."""
        jars.resolve(jars.BROKER, log=log)
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        (self.home / "log4j2.properties").write_text(_LOG4J2.format(logs=self.home / "logs"))
        config = self.home / "server.properties"
        config.write_text(self._properties())
        if (self.home / "data" / "meta.properties").exists():
            return
        cluster_id = "-"
        while cluster_id.startswith("-"):  # the storage tool would read a leading "-" as an option (as Kafka's Uuid)
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        cmd = self._java("kafka.tools.StorageTool", "format", "--standalone", "-t", cluster_id, "-c", str(config))
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise BrokerError(f"formatting Kafka storage failed: {(done.stdout + done.stderr).strip()[-500:]}")

    def up(self, timeout: float = READY_TIMEOUT_S, log=print) -> BrokerStatus:
        """Start the broker unless it runs already; return once it answers a metadata request."""
        pid = self.read_pid()
        if pid is None:
            for port in (self.port, self.controller_port):
                if port_open(self.host, port):
                    raise BrokerError(f"port {port} on {self.host} is taken by another process; "
                                      "stop it or set KAFKA_PORT to another port")
            self.install(log=log)
            out = self.log_file.open("ab")
            proc = subprocess.Popen(self._java("kafka.Kafka", str(self.home / "server.properties")),
                                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
            out.close()
            pid = proc.pid
            self.pid_file.write_text(str(pid))
            log(f"started Kafka (pid {pid}) on {self.bootstrap_servers}; logs in {self.home / 'logs'}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                raise BrokerError(f"Kafka exited during start-up; see {self.log_file}:\n{self._log_tail()}")
            if self._answers_metadata(timeout=2.0):
                return self.status()
            time.sleep(0.3)
        raise BrokerError(f"Kafka did not answer within {timeout:.0f} s; see {self.log_file}")

    def down(self, timeout: float = STOP_TIMEOUT_S, log=print) -> bool:
        """Stop the broker cleanly (SIGTERM, then SIGKILL after `timeout`). False if it was not running."""
        pid = self.read_pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        terminate(pid, timeout, "Kafka", log)
        self.pid_file.unlink(missing_ok=True)
        log(f"stopped Kafka (pid {pid})")
        return True

    def status(self) -> BrokerStatus:
        pid = self.read_pid()
        if pid is None:
            return BrokerStatus(False, None, self.bootstrap_servers, self.home, "not running")
        ready = self._answers_metadata(timeout=2.0)
        detail = "running, answers metadata requests" if ready else "process alive but not answering yet"
        return BrokerStatus(ready, pid, self.bootstrap_servers, self.home, detail)

    def _answers_metadata(self, timeout: float) -> bool:
        if not port_open(self.host, self.port):
            return False
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "log_level": 0})
        try:
            admin.list_topics(timeout=timeout)
            return True
        except Exception:
            return False

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
