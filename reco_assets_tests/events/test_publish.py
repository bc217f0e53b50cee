"""`reco-assets generate-events` and `replay-movielens` against a real broker: counts acknowledged, rate held."""

import json
import time
import uuid
from datetime import UTC, datetime

import pytest
from confluent_kafka import Consumer, TopicPartition

from reco_assets.bronze.movielens import BUNDLED_SAMPLE
from reco_assets.cli import main
from reco_assets.contracts import check_event
from reco_assets.events.generator import ratings_source
from reco_assets.events.publish import REPLAY_NAMESPACE, movielens_ratings
from reco_assets.kafka.client import EVENT_TOPICS
from reco_assets.services import free_port


def retained(kafka) -> dict[str, int]:
    offsets = kafka.offsets()
    tps = offsets.partitions()
    end = offsets.end(tps)
    return {topic: sum(n for (t, _), n in end.items() if t == topic) for topic in EVENT_TOPICS}


@pytest.fixture
def cli(kafka, monkeypatch, tmp_path):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrap_servers)
    return lambda *args: main(["--data-dir", str(tmp_path), *args])


def test_batch_mode_sends_exactly_what_it_reports(cli, kafka, capsys):
    before = retained(kafka)
    assert cli("generate-events", "--mode", "batch", "--num-events", "20000", "--seed", "1") == 0
    after = retained(kafka)
    out = capsys.readouterr()
    assert out.out.startswith("20000 events acknowledged")
    assert sum(after.values()) - sum(before.values()) == 20_000
    assert (after["events_views"] - before["events_views"]) / 20_000 == pytest.approx(0.6, abs=0.02)
    assert "views" in out.err and "ev/s" in out.err  # the live status line


def test_stream_mode_holds_the_rate(cli, kafka, capsys):
    before = sum(retained(kafka).values())
    started = time.monotonic()
    assert cli("generate-events", "--mode", "stream", "--events-per-second", "400", "--duration", "3") == 0
    elapsed = time.monotonic() - started
    assert sum(retained(kafka).values()) - before == 1200
    assert 2.9 <= elapsed <= 6.0


def test_a_broker_that_is_down_gives_a_clear_error_and_sends_nothing(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")
    code = main(["--data-dir", str(tmp_path), "generate-events", "--num-events", "10", "--timeout", "2"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("reco-assets: error: Kafka at 127.0.0.1:") and "0 events sent" in err


def test_replay_publishes_movielens_ratings_in_time_order(cli, kafka, capsys, tmp_path):
    before = retained(kafka)["events_ratings"]
    assert cli("replay-movielens", "--limit", "1000") == 0
    assert "1000 MovieLens ratings" in capsys.readouterr().out
    assert retained(kafka)["events_ratings"] - before == 1000
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": "replay-test",
                         "enable.auto.commit": False})
    offsets = kafka.offsets()
    tps = [tp for tp in offsets.partitions(["events_ratings"])]
    end = offsets.end(tps)
    consumer.assign([TopicPartition(t, p, max(0, end[(t, p)] - 400)) for t, p in tps])
    events = []
    while len(events) < sum(min(400, end[tp]) for tp in tps):
        message = consumer.poll(5)
        assert message is not None and message.error() is None
        events.append((message.partition(), json.loads(message.value())))
    consumer.close()
    # The ratings are stamped when sent (within the contract's bounds); ids derive from the original ratings.
    replayed = [(p, e) for p, e in events if uuid.UUID(e["event_id"]).version == 5]
    assert replayed and all(e["event_ts"].endswith("Z") for _, e in replayed)
    assert all(check_event("events_ratings", json.dumps(e).encode(), datetime.now(UTC)) is None for _, e in replayed)
    # In MovieLens' time order: each partition holds its ratings in the order of their original times.
    order = {str(uuid.uuid5(REPLAY_NAMESPACE, f"{user}:{movie}:{ts}")): i for i, (user, movie, _, ts) in enumerate(
        movielens_ratings(ratings_source(str(tmp_path), BUNDLED_SAMPLE), 1000))}
    for partition in {p for p, _ in replayed}:
        positions = [order[e["event_id"]] for p, e in replayed if p == partition]
        assert len(positions) > 10 and positions == sorted(positions)
        stamps = [e["event_ts"] for p, e in replayed if p == partition]
        assert stamps == sorted(stamps)
