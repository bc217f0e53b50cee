"""A single-node Apache Kafka broker (KRaft, broker + controller) that the project installs and runs itself.

Everything it keeps lives under `$RECO_DATA_DIR/kafka`: `server.properties`, the log dirs (`data/`),
the broker's own logs (`logs/`) and `kafka.pid`. The jars come from Maven Central (see `jars.py`).
"""

import base64
import os
import shutil
import subprocess
import uuid
from pathlib import Path

from reco_assets import jars
from reco_assets.services.base import LocalService, ServiceError, port_open

DEFAULT_PORT = 9092

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


class BrokerError(ServiceError):
    """The local broker could not be installed, started or stopped."""


class LocalBroker(LocalService):
    """The project's own broker on 127.0.0.1 (its controller on the next port)."""

    title = "Kafka"
    name = "kafka"
    marker = "kafka.Kafka"
    port_variable = "KAFKA_PORT"
    error = BrokerError

    def __init__(self, data_dir: str | Path, port: int = DEFAULT_PORT, controller_port: int | None = None):
        super().__init__(data_dir, port)
        self.controller_port = controller_port or port + 1

    @property
    def bootstrap_servers(self) -> str:
        return self.address

    @property
    def ports(self) -> list[int]:
        return [self.port, self.controller_port]

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

    def _java(self, main: str, *args: str) -> list[str]:
        classpath = os.pathsep.join(str(p) for p in jars.jars(jars.BROKER))
        heap = os.environ.get("KAFKA_HEAP_OPTS", "-Xms256m -Xmx1g").split()
        return [shutil.which("java") or "java", *heap, "-XX:+UseG1GC",
                f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
                f"-Dkafka.logs.dir={self.home / 'logs'}", "-cp", classpath, main, *args]

    def prepare(self, log) -> None:
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

    def command(self) -> list[str]:
        return self._java("kafka.Kafka", str(self.home / "server.properties"))

    def not_ready(self, timeout: float) -> str | None:
        return None if self._answers_metadata(timeout=2.0) else "it does not answer metadata requests yet"

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
