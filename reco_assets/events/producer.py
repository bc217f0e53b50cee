"""Send events to Kafka: an idempotent librdkafka producer that counts only what the broker acknowledged."""

import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator

from confluent_kafka import KafkaError, KafkaException, Producer

from reco_assets.events.generator import Batch

# Batches of up to 10k records, lz4, idempotent (no duplicates or reordering on retries), acks from all ISRs.
PRODUCER_CONFIG = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 20,
    "batch.num.messages": 10000,
    "batch.size": 1_000_000,
    "compression.type": "lz4",
    "queue.buffering.max.messages": 500_000,
    "retry.backoff.ms": 200,
    "retry.backoff.max.ms": 5000,
    "log_level": 3,
}


class ProduceError(RuntimeError):
    """The broker did not acknowledge every event; says how many were."""


class EventProducer:
    """Counts acknowledged events per kind; a delivery failure stops the run with a clear error."""

    def __init__(self, client_config: dict, delivery_timeout_s: float = 30.0):
        self.where = client_config["bootstrap.servers"]
        self.timeout_s = delivery_timeout_s
        timeout = {"message.timeout.ms": int(delivery_timeout_s * 1000)}
        self.producer = Producer(client_config | PRODUCER_CONFIG | timeout)
        self.acked: Counter = Counter()
        self.failed: Counter = Counter()
        self.first_error: str | None = None
        self.submitted = 0

    def check_reachable(self) -> None:
        try:
            self.producer.list_topics(timeout=min(self.timeout_s, 10.0))
        except KafkaException as error:
            raise ProduceError(f"Kafka at {self.where} is unreachable ({error.args[0].str()}); "
                               "0 events sent") from error

    def _on_delivery(self, label: str) -> Callable:
        def report(error: KafkaError | None, _message) -> None:
            if error is None:
                self.acked[label] += 1
            else:
                self.failed[label] += 1
                self.first_error = self.first_error or error.str()
        return report

    def send(self, batch: Batch) -> None:
        """Queue a batch; each event counts under its label once the broker acknowledged it."""
        produce, poll = self.producer.produce, self.producer.poll
        callbacks = {label: self._on_delivery(label) for label in set(batch.labels)}
        for topic, key, value, label in zip(batch.topics, batch.keys, batch.values, batch.labels, strict=True):
            while True:
                try:
                    produce(topic, value, key, on_delivery=callbacks[label])
                    break
                except BufferError:  # local queue full: let deliveries drain
                    poll(0.05)
                    self._raise_on_failure()
            self.submitted += 1
        poll(0)
        self._raise_on_failure()

    def _raise_on_failure(self) -> None:
        if self.failed:
            self.producer.purge()
            self.producer.flush(5)
            raise ProduceError(
                f"Kafka at {self.where} did not acknowledge {sum(self.failed.values())} event(s) "
                f"({self.first_error}); {sum(self.acked.values())} were acknowledged and are in Kafka")

    def flush(self) -> None:
        left = self.producer.flush(self.timeout_s + 5)
        self._raise_on_failure()
        if left:
            raise ProduceError(f"{left} event(s) still unacknowledged by Kafka at {self.where} after "
                               f"{self.timeout_s:.0f} s; {sum(self.acked.values())} were acknowledged")


class Progress:
    """One status line on stderr, at most every `every_s` seconds."""

    def __init__(self, producer: EventProducer, total: int | None, every_s: float = 1.0, stream=None):
        self.producer, self.total, self.every_s = producer, total, every_s
        self.stream = stream or sys.stderr
        self.started = self.last = time.monotonic()

    def line(self) -> str:
        acked = self.producer.acked
        sent = sum(acked.values())
        elapsed = max(time.monotonic() - self.started, 1e-9)
        parts = [f"{sent:,} acked"]
        if self.total:
            done = sent / self.total
            parts.insert(0, f"[{'#' * int(done * 20):<20}] {done:4.0%}")
        parts += [f"views {acked['view']:,}", f"clicks {acked['click']:,}", f"ratings {acked['rating']:,}",
                  f"invalid {acked['invalid']:,}", f"errors {sum(self.producer.failed.values())}",
                  f"{sent / elapsed:,.0f} ev/s"]
        return " | ".join(parts)

    def tick(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last >= self.every_s:
            self.last = now
            print("\r" + self.line(), end="\n" if force else "", file=self.stream, flush=True)


def paced(rate: float, duration_s: float | None, tick_s: float = 0.1) -> Iterator[int]:
    """How many events to send in each tick so that `rate` per second holds over time (no drift)."""
    started = time.monotonic()
    due_before = 0
    step = 0
    while duration_s is None or step * tick_s < duration_s:
        step += 1
        due = int(rate * step * tick_s)
        yield due - due_before
        due_before = due
        delay = started + step * tick_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
