"""The producers behind `reco-assets generate-events` and `reco-assets replay-movielens`."""

import time
import uuid
from collections import Counter
from datetime import UTC, datetime

from reco_assets.contracts import TOPICS
from reco_assets.events.generator import Batch, EventGenerator
from reco_assets.events.producer import EventProducer, Progress, paced
from reco_assets.lakehouse.duck import connect

CHUNK = 50_000
REPLAY_NAMESPACE = uuid.UUID("7d0c8c3e-52a4-4f55-9a8e-0b7c6e2f3a10")


def generate_batch(producer: EventProducer, generator: EventGenerator, num_events: int,
                   progress: Progress | None = None) -> Counter:
    """Send `num_events` as fast as the broker takes them; return what was acknowledged per kind."""
    producer.check_reachable()
    kinds: Counter = Counter()
    left = num_events
    while left > 0:
        batch = generator.batch(min(CHUNK, left))
        producer.send(batch)
        kinds.update(batch.kinds)
        left -= len(batch)
        if progress:
            progress.tick()
    producer.flush()
    if progress:
        progress.tick(force=True)
    return kinds


def generate_stream(producer: EventProducer, generator: EventGenerator, rate: float, duration_s: float | None,
                    progress: Progress | None = None) -> Counter:
    """Send `rate` events per second (for `duration_s`, or until Ctrl+C); flush before returning."""
    producer.check_reachable()
    kinds: Counter = Counter()
    try:
        for due in paced(rate, duration_s):
            if due:
                batch = generator.batch(due)
                producer.send(batch)
                kinds.update(batch.kinds)
            if progress:
                progress.tick()
    except KeyboardInterrupt:
        pass  # stop cleanly: what was queued is still flushed below
    finally:
        producer.flush()
        if progress:
            progress.tick(force=True)
    return kinds


def movielens_ratings(source: str, limit: int | None = None):
    """(user_id, movie_id, rating, epoch seconds) in timestamp order, from a `ratings_source` (silver or CSV)."""
    if "read_csv" in source:
        select = f"SELECT userId, movieId, rating, timestamp FROM {source}"
    else:
        select = f"SELECT user_id, movie_id, rating, epoch(rated_at)::BIGINT FROM {source}"
    sql = f"{select} ORDER BY 4, 1, 2" + (f" LIMIT {int(limit)}" if limit else "")
    with connect() as con:
        return con.execute(sql).fetchall()


def replay_batch(rows, sent_at: datetime) -> Batch:
    """Rating events stamped `sent_at` (the contract bounds event time by broker time, and MovieLens' own times are
    years old); event ids derive from the original rating and its time, so a replay of a replay deduplicates."""
    batch = Batch()
    event_ts = sent_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{sent_at.microsecond // 1000:03d}Z"
    for user, movie, rating, ts in rows:
        event_id = uuid.uuid5(REPLAY_NAMESPACE, f"{user}:{movie}:{ts}")
        batch.topics.append(TOPICS["rating"])
        batch.keys.append(str(user).encode())
        batch.values.append((f'{{"event_id":"{event_id}","event_type":"rating","event_ts":"{event_ts}",'
                             f'"user_id":{user},"movie_id":{movie},"rating":{float(rating)}}}').encode())
        batch.labels.append("rating")
    batch.kinds = {"rating": len(batch)}
    return batch


def replay_movielens(producer: EventProducer, source: str, speedup: float | None, limit: int | None,
                     progress: Progress | None = None) -> int:
    """Publish MovieLens ratings in time order, stamped when sent; with `speedup`, keep their gaps divided by it."""
    producer.check_reachable()
    rows = movielens_ratings(source, limit)
    started = time.monotonic()
    first_ts = rows[0][3] if rows else 0
    i = 0
    try:
        while i < len(rows):
            if speedup:
                # Send everything due by now, then sleep until the next rating is due (at most 1 s at a time).
                elapsed = (time.monotonic() - started) * speedup
                j = i
                while j < len(rows) and rows[j][3] - first_ts <= elapsed:
                    j += 1
                if j == i:
                    time.sleep(min(1.0, (rows[i][3] - first_ts - elapsed) / speedup))
                    continue
            else:
                j = min(i + CHUNK, len(rows))
            producer.send(replay_batch(rows[i:j], datetime.now(UTC)))
            i = j
            if progress:
                progress.tick()
    except KeyboardInterrupt:
        pass
    finally:
        producer.flush()
        if progress:
            progress.tick(force=True)
    return producer.acked["rating"]
