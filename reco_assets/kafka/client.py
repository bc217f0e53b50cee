"""Kafka access for the pipeline: the connection resource, the event topics and offset look-ups by time.

Topics use `message.timestamp.type=LogAppendTime`, so record timestamps are the broker's and grow with the
offset inside each partition. An hour of events is then an exact offset range per topic-partition:
`[offset_for_time(hour start), offset_for_time(hour end))`.
"""

import os
import time
from dataclasses import dataclass

import dagster as dg
import pyarrow as pa
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicCollection, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, OffsetSpec

from reco_assets.contracts import TOPICS

EVENT_TOPICS = tuple(TOPICS.values())
TOPIC_PARTITIONS = 3
# How long the topics keep records (RECO_RETENTION_HOURS, default 7 days); silver deduplicates over the same window.
RETENTION_HOURS = float(os.environ.get("RECO_RETENTION_HOURS", "168"))
RETENTION_MS = int(RETENTION_HOURS * 3600 * 1000)
TOPIC_CONFIG = {"message.timestamp.type": "LogAppendTime", "retention.ms": str(RETENTION_MS)}

TopicPartitionKey = tuple[str, int]
# A Kafka record as bronze keeps it (the broker's timestamp in milliseconds becomes a UTC timestamp).
RECORD_SCHEMA = pa.schema([("topic", pa.string()), ("partition", pa.int32()), ("offset", pa.int64()),
                           ("timestamp", pa.timestamp("ms", tz="UTC")), ("key", pa.binary()), ("value", pa.binary())])
RECORD_COLUMNS = RECORD_SCHEMA.names


class KafkaSetupError(RuntimeError):
    """A topic exists but cannot be used as it is configured."""


class KafkaUnavailable(RuntimeError):
    """The cluster did not answer."""


@dataclass(frozen=True)
class OffsetRange:
    topic: str
    partition: int
    start: int
    end: int

    @property
    def count(self) -> int:
        return self.end - self.start


class KafkaResource(dg.ConfigurableResource):
    """Where the events live: the project's local broker by default, any cluster through the environment."""

    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_ca_location: str | None = None
    request_timeout_s: float = 10.0

    def client_config(self) -> dict[str, str]:
        """librdkafka settings (producers, admin)."""
        config = {"bootstrap.servers": self.bootstrap_servers, "security.protocol": self.security_protocol}
        if self.sasl_mechanism:
            config |= {"sasl.mechanism": self.sasl_mechanism, "sasl.username": self.sasl_username or "",
                       "sasl.password": self.sasl_password or ""}
        if self.ssl_ca_location:
            config["ssl.ca.location"] = self.ssl_ca_location
        return config

    def spark_options(self) -> dict[str, str]:
        """The same connection for Spark's Kafka source (Java client option names, prefixed `kafka.`).

        Its timeouts follow `request_timeout_s`: with Kafka's defaults, a read from a broker that went away hung for
        3 min (3 offset fetches of 60 s) before the run failed; with the project's 10 s, about 1 min.
        """
        timeout_ms = int(self.request_timeout_s * 1000)
        options = {"kafka.bootstrap.servers": self.bootstrap_servers,
                   "kafka.security.protocol": self.security_protocol,
                   "kafka.request.timeout.ms": str(timeout_ms),
                   "kafka.default.api.timeout.ms": str(2 * timeout_ms),
                   "kafkaConsumer.pollTimeoutMs": str(2 * timeout_ms)}
        if self.sasl_mechanism:
            module = ("org.apache.kafka.common.security.plain.PlainLoginModule" if self.sasl_mechanism == "PLAIN"
                      else "org.apache.kafka.common.security.scram.ScramLoginModule")
            options["kafka.sasl.mechanism"] = self.sasl_mechanism
            options["kafka.sasl.jaas.config"] = (
                f"{module} required username={jaas_quoted(self.sasl_username or '')} "
                f"password={jaas_quoted(self.sasl_password or '')};")
        if self.ssl_ca_location:
            options["kafka.ssl.truststore.type"] = "PEM"
            options["kafka.ssl.truststore.location"] = self.ssl_ca_location
        return options

    def admin(self) -> AdminClient:
        return AdminClient(self.client_config() | {"log_level": 0})

    def offsets(self) -> "Offsets":
        return Offsets(self.admin(), self.request_timeout_s, self.bootstrap_servers)

    def read_ranges(self, ranges: list[OffsetRange]) -> pa.Table:
        """Exactly the records of `ranges`, read in this process (a few thousand records in milliseconds, where
        Spark's Kafka source takes seconds to start its consumers): topic, partition, offset, broker timestamp,
        key, value. A range whose records do not all arrive within `request_timeout_s` raises KafkaUnavailable."""
        remaining = {(r.topic, r.partition): r.end for r in ranges if r.count > 0}
        columns = {name: [] for name in RECORD_COLUMNS}
        if not remaining:
            return pa.table(columns, schema=RECORD_SCHEMA)
        consumer = Consumer(self.client_config() | {"group.id": "reco-assets-bronze", "enable.auto.commit": False,
                                                    "enable.partition.eof": True, "log_level": 0})
        try:
            consumer.assign([TopicPartition(r.topic, r.partition, r.start) for r in ranges if r.count > 0])
            wanted = sum(r.count for r in ranges)
            deadline = time.monotonic() + self.request_timeout_s
            while remaining:
                if time.monotonic() > deadline:
                    raise KafkaUnavailable(f"Kafka at {self.bootstrap_servers} did not deliver offsets up to "
                                           f"{remaining} within {self.request_timeout_s:.0f} s")
                for message in consumer.consume(max(1, wanted - len(columns["offset"])), timeout=0.5):
                    key = (message.topic(), message.partition())
                    if key not in remaining:
                        continue
                    if message.error():
                        if message.error().code() == KafkaError._PARTITION_EOF:  # at the log's end
                            if message.offset() >= remaining[key]:  # offsets without records end the range
                                del remaining[key]
                            continue
                        raise KafkaUnavailable(f"reading {key[0]}/{key[1]} from {self.bootstrap_servers}: "
                                               f"{message.error().str()}")
                    offset = message.offset()
                    if offset >= remaining[key]:
                        continue
                    for name, value in zip(RECORD_COLUMNS, (key[0], key[1], offset, message.timestamp()[1],
                                                            message.key(), message.value()), strict=True):
                        columns[name].append(value)
                    if offset + 1 >= remaining[key]:
                        del remaining[key]
        finally:
            consumer.close()
        return pa.table(columns, schema=RECORD_SCHEMA)


def lag_by_topic(end: dict[TopicPartitionKey, int], start: dict[TopicPartitionKey, int],
                 landed: dict[TopicPartitionKey, int]) -> dict[str, tuple[int, int, int]]:
    """Per event topic: (records in Kafka's logs, of them landed in bronze, lag: the records not landed yet). `landed`
    is, per topic-partition, the offset up to which bronze holds the log; records retention deleted count as
    neither. Bronze holding offsets past the log's end means it holds another log (the broker lost its data, or
    the topic was recreated): then none of this log counts as landed."""
    found = {}
    for topic in EVENT_TOPICS:
        mine = [tp for tp in end if tp[0] == topic]
        taken = {tp: max(landed.get(tp, 0), start[tp]) if landed.get(tp, 0) <= end[tp] else start[tp]
                 for tp in mine}
        found[topic] = (sum(end[tp] - start[tp] for tp in mine), sum(taken[tp] - start[tp] for tp in mine),
                        sum(end[tp] - taken[tp] for tp in mine))
    return found


def jaas_quoted(value: str) -> str:
    """`value` as a quoted JAAS option value: Kafka's JaasConfig reads it with a StreamTokenizer, so a backslash, a
    quote or a line break inside must be escaped, or it would end the value and start other options."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


KAFKA_ENV = {
    "bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS",
    "security_protocol": "KAFKA_SECURITY_PROTOCOL",
    "sasl_mechanism": "KAFKA_SASL_MECHANISM",
    "sasl_username": "KAFKA_SASL_USERNAME",
    "sasl_password": "KAFKA_SASL_PASSWORD",
    "ssl_ca_location": "KAFKA_SSL_CA_LOCATION",
}


def kafka_resource(resolve: bool = False) -> KafkaResource:
    """The resource from the `KAFKA_*` environment (each optional): `EnvVar`s for Definitions, so the UI shows
    where a value came from, or the resolved values for use outside Dagster (`resolve=True`).

    Without `KAFKA_BOOTSTRAP_SERVERS` it is the project's local broker, on `KAFKA_PORT` (default 9092).
    """
    settings = {field: os.environ[env] if resolve else dg.EnvVar(env)
                for field, env in KAFKA_ENV.items() if os.environ.get(env)}
    settings.setdefault("bootstrap_servers", f"127.0.0.1:{os.environ.get('KAFKA_PORT', '9092')}")
    return KafkaResource(**settings)


class Offsets:
    """Metadata look-ups (no records are read): partitions, watermarks and offsets by broker time."""

    def __init__(self, admin: AdminClient, timeout_s: float, where: str):
        self.admin = admin
        self.timeout_s = timeout_s
        self.where = where
        self.cluster_id: str | None = None  # known once `partitions` has asked

    def _wait(self, futures: dict, what: str) -> dict:
        try:
            return {key: future.result(timeout=self.timeout_s) for key, future in futures.items()}
        except KafkaException as error:
            raise KafkaUnavailable(f"Kafka at {self.where} did not answer ({what}): {error.args[0]}") from error
        except TimeoutError as error:
            raise KafkaUnavailable(f"Kafka at {self.where} did not answer within {self.timeout_s:.0f} s "
                                   f"({what})") from error

    def partitions(self, topics=EVENT_TOPICS) -> list[TopicPartitionKey]:
        try:
            metadata = self.admin.list_topics(timeout=self.timeout_s)
        except KafkaException as error:
            raise KafkaUnavailable(f"Kafka at {self.where} did not answer (metadata): {error.args[0]}") from error
        missing = [topic for topic in topics if topic not in metadata.topics]
        if missing:
            raise KafkaSetupError(f"topics {missing} do not exist on {self.where}; "
                                  "run `reco-assets kafka create-topics` (or `reco-assets kafka up`)")
        self.cluster_id = metadata.cluster_id
        return sorted((topic, p) for topic in topics for p in metadata.topics[topic].partitions)

    def log_ids(self, topics=EVENT_TOPICS) -> dict[str, str]:
        """Which logs these are: the cluster's id and each topic's (a recreated topic gets a new one)."""
        ids = {"cluster": self.cluster_id or self.admin.list_topics(timeout=self.timeout_s).cluster_id}
        described = self._wait(self.admin.describe_topics(TopicCollection(list(topics)),
                                                          request_timeout=self.timeout_s), "topic ids")
        return ids | {topic: str(description.topic_id) for topic, description in described.items()}

    def _list(self, specs: dict[TopicPartitionKey, OffsetSpec], what: str) -> dict[TopicPartitionKey, object]:
        futures = self.admin.list_offsets({TopicPartition(t, p): spec for (t, p), spec in specs.items()},
                                          request_timeout=self.timeout_s)
        results = self._wait(futures, what)
        return {(tp.topic, tp.partition): info for tp, info in results.items()}

    def end(self, tps: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        return {tp: info.offset for tp, info in self._list({tp: OffsetSpec.latest() for tp in tps}, "end").items()}

    def start(self, tps: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        infos = self._list({tp: OffsetSpec.earliest() for tp in tps}, "log start")
        return {tp: info.offset for tp, info in infos.items()}

    def at_time(self, tps: list[TopicPartitionKey], ts_ms: int,
                end: dict[TopicPartitionKey, int]) -> dict[TopicPartitionKey, int]:
        """The first offset whose broker timestamp is >= `ts_ms` (the end offset when there is none yet)."""
        infos = self._list({tp: OffsetSpec.for_timestamp(ts_ms) for tp in tps}, "offsets by time")
        return {tp: (info.offset if info.offset >= 0 else end[tp]) for tp, info in infos.items()}

    def first_timestamps(self, tps: list[TopicPartitionKey]) -> list[int]:
        """Broker timestamps of the first retained record of each non-empty partition."""
        infos = self._list({tp: OffsetSpec.for_timestamp(0) for tp in tps}, "first timestamps")
        return [info.timestamp for info in infos.values() if info.offset >= 0]

    def ranges(self, start_ms: int, end_ms: int, topics=EVENT_TOPICS) -> list[OffsetRange]:
        """The exact offset range of `[start_ms, end_ms)` in every partition of `topics`."""
        tps = self.partitions(topics)
        end = self.end(tps)
        first = self.at_time(tps, start_ms, end)
        last = self.at_time(tps, end_ms, end)
        return [OffsetRange(t, p, first[(t, p)], last[(t, p)]) for t, p in tps]


def ensure_topics(admin: AdminClient, partitions: int = TOPIC_PARTITIONS, timeout_s: float = 30.0) -> list[str]:
    """Create the event topics that are missing; refuse existing ones without LogAppendTime. Returns created."""
    existing = admin.list_topics(timeout=timeout_s).topics
    wanted = [NewTopic(topic, num_partitions=partitions, replication_factor=-1, config=TOPIC_CONFIG)
              for topic in EVENT_TOPICS if topic not in existing]
    created = []
    for topic, future in (admin.create_topics(wanted, request_timeout=timeout_s) if wanted else {}).items():
        try:
            future.result()
            created.append(topic)
        except KafkaException as error:
            if error.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise KafkaSetupError(f"could not create topic {topic}: {error.args[0].str()}") from error
    _wait_until_visible(admin, timeout_s)
    check_topic_configs(admin, timeout_s)
    return created


def _wait_until_visible(admin: AdminClient, timeout_s: float) -> None:
    """New topics reach the broker's metadata and leadership a moment after creation: wait until every
    partition answers an offset request."""
    deadline = time.monotonic() + timeout_s
    offsets = Offsets(admin, timeout_s, "the cluster")
    while True:
        try:
            offsets.end(offsets.partitions())
            return
        except (KafkaUnavailable, KafkaSetupError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def check_topic_configs(admin: AdminClient, timeout_s: float = 30.0) -> None:
    resources = [ConfigResource("topic", topic) for topic in EVENT_TOPICS]
    for resource, future in admin.describe_configs(resources, request_timeout=timeout_s).items():
        entry = future.result().get("message.timestamp.type")
        if entry is None or entry.value != "LogAppendTime":
            raise KafkaSetupError(
                f"topic {resource.name} uses message.timestamp.type={getattr(entry, 'value', None)}, but hourly "
                "partitions need broker time. Fix it with: kafka-configs.sh --bootstrap-server <servers> --alter "
                f"--entity-type topics --entity-name {resource.name} --add-config message.timestamp.type=LogAppendTime"
                " (records written before the change keep their producer timestamps), or recreate the topic.")
