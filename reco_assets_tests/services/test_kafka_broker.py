"""The project's own Kafka broker and topics, for real (jars from Maven Central, KRaft, loopback)."""

import socket

import pytest
from confluent_kafka.admin import ConfigResource, NewTopic

from reco_assets.kafka.client import EVENT_TOPICS, KafkaResource, KafkaSetupError, ensure_topics
from reco_assets.services import BrokerError, LocalBroker, free_port


def test_event_topics_have_three_partitions_broker_time_and_seven_days(kafka):
    admin = kafka.admin()
    metadata = admin.list_topics(timeout=10).topics
    assert {topic: len(metadata[topic].partitions) for topic in EVENT_TOPICS} == dict.fromkeys(EVENT_TOPICS, 3)
    for _, future in admin.describe_configs([ConfigResource("topic", t) for t in EVENT_TOPICS]).items():
        config = future.result()
        assert config["message.timestamp.type"].value == "LogAppendTime"
        assert config["retention.ms"].value == str(7 * 24 * 3600 * 1000)
    assert ensure_topics(admin) == []  # idempotent


def test_up_status_down_and_a_topic_without_broker_time_is_refused(tmp_path):
    broker = LocalBroker(tmp_path, port=free_port(), controller_port=free_port())
    assert not broker.status().running
    status = broker.up()
    try:
        assert status.running and status.pid and (tmp_path / "kafka" / "data" / "meta.properties").exists()
        assert broker.up().pid == status.pid  # already running: nothing new is started
        admin = KafkaResource(bootstrap_servers=broker.bootstrap_servers).admin()
        created = admin.create_topics([NewTopic("events_views", 3, 1, config={"message.timestamp.type": "CreateTime"})])
        created["events_views"].result()
        with pytest.raises(KafkaSetupError, match="events_views uses message.timestamp.type=CreateTime.*--add-config"):
            ensure_topics(admin)
    finally:
        assert broker.down()
    assert not broker.status().running and broker.read_pid() is None
    assert not broker.down()
    # State survives a restart: the topic is still there.
    broker.up()
    try:
        admin = KafkaResource(bootstrap_servers=broker.bootstrap_servers).admin()
        assert "events_views" in admin.list_topics(timeout=10).topics
    finally:
        broker.down()


def test_a_taken_port_is_refused_with_the_reason(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        broker = LocalBroker(tmp_path, port=taken.getsockname()[1], controller_port=free_port())
        with pytest.raises(BrokerError, match="is taken by another process"):
            broker.up()
