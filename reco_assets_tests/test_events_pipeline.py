"""Kafka → sensor → bronze_events → silver_events, for real: a live broker, local Spark, a Dagster instance."""

import json
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import dagster as dg
import duckdb
import pytest
from confluent_kafka import TopicPartition

from reco_assets.bronze import events as bronze_events_module
from reco_assets.bronze.events import range_rows
from reco_assets.bronze.movielens import BUNDLED_SAMPLE
from reco_assets.cli import main
from reco_assets.contracts import check_event
from reco_assets.definitions import defs
from reco_assets.events.generator import Batch, EventGenerator, load_population
from reco_assets.events.producer import EventProducer
from reco_assets.kafka.client import EVENT_TOPICS, KafkaResource, KafkaSetupError, ensure_topics
from reco_assets.lakehouse import LakehouseResource
from reco_assets.lakehouse.hours import hour_value, previous_hour
from reco_assets.sensors import GOLD_REFRESH_ASSETS, LIVE_ASSETS, events_job, kafka_events_sensor
from reco_assets_tests.conftest import materialize, running_broker

pytestmark = pytest.mark.integration
HOURLY_CHECKS = {"offset_ranges_meet_neighbours": True, "event_id_unique": True, "reconciles_with_bronze": True,
                 "ranks_dense_and_unique": True}
CHECKED_ASSET = {"offset_ranges_meet_neighbours": "bronze_events", "event_id_unique": "silver_events",
                 "reconciles_with_bronze": "silver_events", "ranks_dense_and_unique": "gold_trending"}


@pytest.fixture(scope="module")
def kafka_broker(tmp_path_factory):
    """A broker of this module's own: the tests count every record in the topics."""
    yield from running_broker(tmp_path_factory)


@pytest.fixture(scope="module")
def kafka(kafka_broker) -> KafkaResource:
    return KafkaResource(bootstrap_servers=kafka_broker.bootstrap_servers, request_timeout_s=3.0)


def produce(kafka, batch: Batch) -> None:
    producer = EventProducer(kafka.client_config())
    producer.send(batch)
    producer.flush()
    assert sum(producer.acked.values()) == len(batch)


def tick(instance, kafka, cursor, data_dir):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={
        "kafka": kafka, "lakehouse": LakehouseResource(data_dir=str(data_dir))})
    return kafka_events_sensor(context)


def hourly_job(data_dir, kafka):
    """The project's events_hourly_job over this data dir and broker (runs of it are what the sensor retries)."""
    return dg.Definitions(
        assets=[*defs.assets], asset_checks=[*defs.asset_checks], jobs=[events_job],
        resources={**defs.resources, "lakehouse": LakehouseResource(data_dir=str(data_dir)), "kafka": kafka},
    ).resolve_job_def(events_job.name)


def run_requested(result, data_dir, instance, kafka) -> list[str]:
    """Run each request as the daemon would: events_hourly_job, the request's partition, assets (a live run
    selects LIVE_ASSETS, a gold refresh GOLD_REFRESH_ASSETS of the hour its tags name) and tags. Every check of the
    assets run passes."""
    hours = []
    job = hourly_job(data_dir, kafka)
    for request in result.run_requests:
        outcome = job.execute_in_process(instance=instance, partition_key=request.partition_key,
                                         asset_selection=request.asset_selection, tags=request.tags)
        assert outcome.success
        materialized = {e.asset_key for e in outcome.get_asset_materialization_events()}
        if request.tags["reco/hour_state"] == "live":
            assert materialized == set(LIVE_ASSETS)
        if request.tags["reco/hour_state"] == "gold":
            assert materialized == set(GOLD_REFRESH_ASSETS)
            assert {e.partition for e in outcome.get_asset_materialization_events()} == {
                request.tags["dagster/asset_partition_range_start"]}
        checks = {e.check_name: e.passed for e in outcome.get_asset_check_evaluations()}
        assert checks == {name: True for name, asset in CHECKED_ASSET.items() if dg.AssetKey(asset) in materialized}, \
            checks
        hours.append(request.partition_key or request.tags["dagster/asset_partition_range_start"])
    return hours


def rows(data_dir, table: str, columns: str, group_by: str = "") -> list[tuple]:
    """Rows of silver.events or silver.events_rejected (`table`: events, events_rejected), straight from Delta."""
    source = LakehouseResource(data_dir=str(data_dir)).table("silver.event_outcomes").duckdb(f"silver.{table}")
    with duckdb.connect() as con:
        return con.execute(f"SELECT {columns} FROM {source} {group_by} ORDER BY ALL").fetchall()


def expected_outcome(sent: list[tuple[str, bytes]]):
    """What silver and the dead letter must hold, from the Python contract check of every sent record."""
    valid_ids, rejected = [], Counter()
    broker_time = datetime.now(UTC)  # the records were just sent: within seconds of their broker time
    for topic, value in sent:
        problem = check_event(topic, value, broker_time)
        if problem is None:
            valid_ids.append(json.loads(value)["event_id"])
        else:
            rejected[(topic, value, problem.reason)] += 1
    return Counter(valid_ids), rejected


@pytest.fixture(scope="module")
def stream(kafka, tmp_path_factory, dagster_instance):
    """3000 generated events (10 % malformed of every kind, duplicates included), ticked and materialized."""
    generator = EventGenerator(load_population("/nonexistent", BUNDLED_SAMPLE), invalid_rate=0.1, seed=7)
    batch = generator.batch(3000)
    produce(kafka, batch)
    data_dir = tmp_path_factory.mktemp("events_data")
    with pytest.MonkeyPatch.context() as patch:  # live runs off: the hour's run materializes every asset
        patch.setattr("reco_assets.sensors.OPEN_HOUR_GOLD_REFRESH_S", 0.0)
        result = tick(dagster_instance, kafka, None, data_dir)
    hours = run_requested(result, data_dir, dagster_instance, kafka)
    return {"batch": batch, "data_dir": data_dir, "hours": hours, "cursor": result.cursor, "kafka": kafka,
            "first_tick": result}


def test_silver_holds_exactly_the_valid_unique_events_and_the_dead_letter_the_rest(stream):
    batch, data_dir = stream["batch"], stream["data_dir"]
    assert stream["hours"], "the sensor requested no run"
    assert batch.kinds.get("invalid:duplicate", 0) > 0 and len([k for k in batch.kinds if "invalid" in k]) == 11
    valid, rejected = expected_outcome(list(zip(batch.topics, batch.values, strict=True)))
    silver_ids = [r[0] for r in rows(data_dir, "events", "event_id")]
    assert Counter(silver_ids) == Counter(set(valid))
    dead = rows(data_dir, "events_rejected", "topic, value, reason")
    assert Counter((t, bytes(v), r) for t, v, r in dead if r != "duplicate") == rejected
    assert sum(1 for *_, r in dead if r == "duplicate") == sum(valid.values()) - len(valid)
    reasons = {r for *_, r in dead}
    assert {"not_json", "not_utf8", "not_object", "missing_field", "unknown_field", "wrong_type", "invalid_value",
            "out_of_range", "duplicate"} <= reasons
    # Typed columns: UTC timestamps and the per-type fields.
    typed = rows(data_dir, "events", "event_type, count(*), count(device_type), count(click_type), count(rating)",
                 "GROUP BY event_type")
    for event_type, n, devices, clicks, ratings in typed:
        assert (devices, clicks, ratings) == {"view": (n, 0, 0), "click": (0, n, 0), "rating": (0, 0, n)}[event_type]


def test_the_catalog_views_answer(stream):
    with duckdb.connect(str(stream["data_dir"] / "warehouse.duckdb"), read_only=True) as con:
        bronze = con.execute("SELECT count(*) FROM bronze.events").fetchone()[0]
        silver = con.execute("SELECT count(*) FROM silver.events").fetchone()[0]
        rejected = con.execute("SELECT count(*) FROM silver.events_rejected").fetchone()[0]
    assert bronze == len(stream["batch"]) and silver + rejected == bronze


def test_gold_trending_counts_every_silver_event(stream):
    """The stream's gold tables agree with silver: per hour, per genre minute, and the decayed top now."""
    with duckdb.connect(str(stream["data_dir"] / "warehouse.duckdb"), read_only=True) as con:
        per_hour = con.execute("SELECT hour, count(*) FROM silver.events GROUP BY hour ORDER BY hour").fetchall()
        assert con.execute("SELECT hour, sum(events) FROM gold.trending GROUP BY hour ORDER BY hour").fetchall() \
            == per_hour
        movies = con.execute("SELECT count(DISTINCT movie_id) FROM silver.events").fetchone()[0]
        assert con.execute("SELECT count(*) FROM gold.trending_now WHERE genre IS NULL").fetchone()[0] \
            == min(20, movies)
        movies_per_hour = con.execute("SELECT hour, count(DISTINCT movie_id) FROM silver.events GROUP BY hour "
                                      "ORDER BY hour").fetchall()
        assert con.execute("SELECT hour, max(rank) FROM gold.trending GROUP BY hour ORDER BY hour").fetchall() \
            == movies_per_hour
        top = con.execute("SELECT movie_id, events FROM gold.trending_now WHERE genre IS NULL ORDER BY rank "
                          "LIMIT 1").fetchone()
        assert top[1] == con.execute("SELECT count(*) FROM silver.events WHERE movie_id = ?", [top[0]]).fetchone()[0]


def test_cli_trending_and_stats(stream, capsys, monkeypatch):
    data_dir, batch = stream["data_dir"], stream["batch"]
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", stream["kafka"].bootstrap_servers)
    assert main(["--data-dir", str(data_dir), "trending", "--limit", "3", "--format", "json"]) == 0
    out, err = capsys.readouterr()
    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as con:
        top3 = con.execute("SELECT movie_id FROM gold.trending_now WHERE genre IS NULL ORDER BY rank LIMIT 3") \
            .fetchall()
        silver = dict(con.execute("SELECT event_type, count(*) FROM silver.events GROUP BY ALL").fetchall())
    assert [r["movie_id"] for r in json.loads(out)] == [m for (m,) in top3] and "trending overall as of" in err
    assert main(["--data-dir", str(data_dir), "stats", "--format", "json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["total_events"] == sum(silver.values())
    assert {k: stats[f"{k}_events"] for k in silver} == silver
    assert stats["rejected_records"] + stats["total_events"] == len(batch)
    assert stats["freshness_seconds"] >= 0 and stats["kafka_problem"] is None
    assert sum(t["records_in_kafka"] for t in stats["kafka_lag"]) == len(batch)
    assert [t["lag"] for t in stats["kafka_lag"]] == [0, 0, 0]


def observed(result) -> dict:
    (observation,) = result.asset_events
    assert observation.asset_key == dg.AssetKey("kafka_event_topics")
    return {key: value.value for key, value in observation.metadata.items()}


def test_repeated_tick_requests_nothing_new_and_observes_no_lag(stream, dagster_instance, monkeypatch):
    sent = len(stream["batch"])
    first = observed(stream["first_tick"])  # before any run: every record is lag
    assert first["records"] == first["lag"] == sent
    assert sum(first[f"{topic}_lag"] for topic in EVENT_TOPICS) == sent
    monkeypatch.setattr("reco_assets.sensors.OBSERVE_EVERY_S", 0.0)
    result = tick(dagster_instance, stream["kafka"], stream["cursor"], stream["data_dir"])
    assert not result.run_requests
    after = observed(result)
    assert after["records"] == sent and after["lag"] == 0
    assert after["bootstrap_servers"] == stream["kafka"].bootstrap_servers
    monkeypatch.setattr("reco_assets.sensors.OBSERVE_EVERY_S", 30.0)
    assert not tick(dagster_instance, stream["kafka"], result.cursor, stream["data_dir"]).asset_events


def test_a_deleted_hour_is_rebuilt_identically_from_kafka(stream, dagster_instance, spark):
    data_dir, kafka = stream["data_dir"], stream["kafka"]
    lakehouse = LakehouseResource(data_dir=str(data_dir))
    before = {t: rows(data_dir, t, "*") for t in ("events", "events_rejected")}
    for hour in stream["hours"]:
        for table in ("bronze.events", "bronze.event_ranges", "silver.event_outcomes"):
            spark.sql(f"DELETE FROM delta.`{lakehouse.table(table).uri}` WHERE hour = '{hour_value(hour)}'")
    for hour in stream["hours"]:
        assert materialize(events_job.selection, data_dir, dagster_instance, partition_key=hour, kafka=kafka).success
    assert {t: rows(data_dir, t, "*") for t in ("events", "events_rejected")} == before


def test_a_range_of_hours_runs_as_one_run(stream, dagster_instance, spark):
    """What a backfill of several hours does (single-run backfill policy): one run, one Spark session."""
    data_dir, kafka, last = stream["data_dir"], stream["kafka"], stream["hours"][-1]
    first = previous_hour(stream["hours"][0])
    before = rows(data_dir, "events", "*")
    result = hourly_job(data_dir, kafka).execute_in_process(instance=dagster_instance, tags={
        "dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last})
    assert result.success
    assert {e.check_name: e.passed for e in result.get_asset_check_evaluations()} == HOURLY_CHECKS
    materialized = {(e.asset_key.to_user_string(), e.partition) for e in result.get_asset_materialization_events()}
    assert ("bronze_events", first) in materialized and ("silver_events", last) in materialized
    empty = LakehouseResource(data_dir=str(data_dir)).table("bronze.event_ranges").read_hours(spark, [first])
    assert empty.count() == 9 and empty.where("records > 0 OR NOT closed").count() == 0  # 3 topics x 3 partitions
    assert rows(data_dir, "events", "*") == before


def test_offset_ranges_that_do_not_meet_their_neighbour_fail_the_check(stream, dagster_instance, spark):
    """The previous hour's ranges end where this hour's do not start: the check fails and names the gap."""
    data_dir, kafka, hour = stream["data_dir"], stream["kafka"], stream["hours"][0]
    before = previous_hour(hour)
    ranges = LakehouseResource(data_dir=str(data_dir)).table("bronze.event_ranges")
    if not ranges.rows_of_hours([before]):  # the previous hour, landed empty: it ends where this hour starts
        assert materialize("bronze_events", data_dir, dagster_instance, partition_key=before, kafka=kafka).success
    rows = sorted(ranges.rows_of_hours([before]), key=lambda r: (r["topic"], r["partition"]))
    rows[0] = {**rows[0], "end_offset": rows[0]["end_offset"] + 5}
    ranges.replace_hours(range_rows([tuple(r.values()) for r in rows]), [before])
    try:
        result = materialize("bronze_events", data_dir, dagster_instance, partition_key=hour, kafka=kafka)
        (check,) = result.get_asset_check_evaluations()
        problems = check.metadata["problems"].value
        assert not check.passed and check.metadata["neighbours_compared"].value == before
        assert f"{rows[0]['topic']}/{rows[0]['partition']}: start " in problems
        assert f"vs {hour_value(before)}:00 end_offset {rows[0]['end_offset']}" in problems
    finally:
        assert materialize("bronze_events", data_dir, dagster_instance, partition_key=before, kafka=kafka).success
    assert all(check.passed for check in materialize("bronze_events", data_dir, dagster_instance,
                                                     partition_key=hour, kafka=kafka).get_asset_check_evaluations())


def test_broker_outage_skips_with_a_message_then_resumes_without_loss(stream, kafka_broker, dagster_instance,
                                                                       monkeypatch, capsys):
    data_dir, kafka = stream["data_dir"], stream["kafka"]
    monkeypatch.setattr("reco_assets.sensors.OPEN_HOUR_REFRESH_S", 0.0)  # the open hour may be re-run at once
    monkeypatch.setattr("reco_assets.sensors.OPEN_HOUR_GOLD_REFRESH_S", 3600.0)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrap_servers)
    kafka_broker.down()
    try:
        skipped = tick(dagster_instance, kafka, stream["cursor"], stream["data_dir"])
        assert isinstance(skipped, dg.SkipReason)
        assert "did not answer" in skipped.skip_message and "resumes" in skipped.skip_message
        # The stats still answer from the lakehouse, and say why the lag is unknown.
        assert main(["--data-dir", str(data_dir), "stats"]) == 0
        out, err = capsys.readouterr()
        assert "total_events" in out and f"kafka lag unknown: Kafka at {kafka.bootstrap_servers} did not answer" in err
    finally:
        kafka_broker.up()
    more = EventGenerator(load_population("/nonexistent", BUNDLED_SAMPLE), seed=8).batch(500)
    # Copies of events the hour already holds, sent again (to the same topics): the dead letter's, not silver's.
    first = stream["batch"]
    again = [i for i, label in enumerate(first.labels) if label != "invalid"][:20]
    produce(kafka, Batch([first.topics[i] for i in again], [first.keys[i] for i in again],
                         [first.values[i] for i in again], [first.labels[i] for i in again]))
    produce(kafka, more)
    result = tick(dagster_instance, kafka, stream["cursor"], stream["data_dir"])
    # The sensor's live path and the hour's gold refresh, run for real (run_requested checks what each
    # materializes), unless the hour closed.
    states = {r.tags["reco/hour_state"] for r in result.run_requests}
    assert states == {"live", "gold"} or "closed" in states, states
    run_requested(result, data_dir, dagster_instance, kafka)
    expected = set(expected_outcome(list(zip(stream["batch"].topics, stream["batch"].values, strict=True)))[0])
    expected |= {v.decode().split('"event_id":"')[1][:36] for v in more.values}
    assert {r[0] for r in rows(data_dir, "events", "event_id")} == expected
    if "closed" not in states:
        # The live run read only the new records, and added them to what bronze and silver held...
        for key in ("bronze_events", "silver_events"):
            event = dagster_instance.get_latest_materialization_event(dg.AssetKey(key))
            metadata = event.asset_materialization.metadata
            assert metadata["appended"].value is True and metadata["new_records"].value == len(more) + 20, key
        live = hour_rows(data_dir, result.run_requests[0].partition_key)
        # ... and the hour holds exactly what rebuilding it whole gives.
        materialize(["bronze_events", "silver_events", "silver_events_rejected"], data_dir, dagster_instance,
                    partition_key=result.run_requests[0].partition_key, kafka=kafka)
        assert hour_rows(data_dir, result.run_requests[0].partition_key) == live
        assert sum(1 for row in live["silver.event_outcomes"] if "duplicate of" in str(row)) >= len(again)


def hour_rows(data_dir, partition_key: str) -> dict[str, list[tuple]]:
    """Every row of one hour of bronze.events and silver.event_outcomes, sorted."""
    lakehouse = LakehouseResource(data_dir=str(data_dir))
    with duckdb.connect() as con:
        return {name: con.execute(f"SELECT * FROM {lakehouse.table(name).duckdb()} WHERE hour = ? ORDER BY ALL",
                                  [hour_value(partition_key)]).fetchall()
                for name in ("bronze.events", "silver.event_outcomes")}


def test_a_closed_hour_whose_final_run_loses_the_broker_is_retried(stream, kafka_broker, dagster_instance,
                                                                  monkeypatch):
    """The hour closes and the sensor requests its final run; the broker stops while that run's bronze step reads
    Kafka, and the run fails (within seconds: the source's timeouts follow the resource's). Once the broker is back,
    the sensor requests the hour again, after its backoff, and the retry lands it whole."""
    data_dir, kafka, hour = stream["data_dir"], stream["kafka"], stream["hours"][-1]
    monkeypatch.setattr("reco_assets.sensors.RETRY_BASE_S", 0.0)
    real_datetime = datetime

    class HourLater(real_datetime):  # the sensor's clock, past the hour's close
        @classmethod
        def now(cls, tz=None):
            return real_datetime.now(tz) + timedelta(hours=1, minutes=10)

    monkeypatch.setattr("reco_assets.sensors.datetime", HourLater)
    before = rows(data_dir, "events", "*")
    result = tick(dagster_instance, kafka, stream["cursor"], data_dir)
    final = next(r for r in result.run_requests if r.partition_key == hour)
    assert final.tags["reco/hour_state"] == "closed" and "reco/retry" not in final.tags

    read_kafka_ranges = bronze_events_module.read_kafka_ranges

    def broker_stops_now(*args):
        kafka_broker.down()
        return read_kafka_ranges(*args)

    monkeypatch.setattr(bronze_events_module, "read_kafka_ranges", broker_stops_now)
    fast = KafkaResource(bootstrap_servers=kafka.bootstrap_servers, request_timeout_s=1.0)
    started = time.monotonic()
    try:
        failed = hourly_job(data_dir, fast).execute_in_process(
            instance=dagster_instance, partition_key=hour, tags=final.tags, raise_on_error=False)
    finally:
        monkeypatch.setattr(bronze_events_module, "read_kafka_ranges", read_kafka_ranges)
        kafka_broker.up()
    assert not failed.success and time.monotonic() - started < 60
    error = next(e for e in failed.all_events if e.is_step_failure).step_failure_data.error.to_string()
    assert "TimeoutException" in error

    retried = tick(dagster_instance, kafka, result.cursor, data_dir)
    deadline = time.monotonic() + 60
    while isinstance(retried, dg.SkipReason) and time.monotonic() < deadline:  # the broker is still starting
        time.sleep(1)
        retried = tick(dagster_instance, kafka, result.cursor, data_dir)
    retries = [request for request in retried.run_requests if "reco/retry" in request.tags]
    assert [(r.partition_key, r.tags["reco/retry"], r.tags["reco/hour_state"]) for r in retries] == [
        (hour, "1", "closed")]
    landed = hourly_job(data_dir, kafka).execute_in_process(instance=dagster_instance, partition_key=hour,
                                                           tags=retries[0].tags)
    assert landed.success
    checks = {e.check_name: e.passed for e in landed.get_asset_check_evaluations()}
    assert checks == HOURLY_CHECKS
    assert rows(data_dir, "events", "*") == before
    again = tick(dagster_instance, kafka, retried.cursor, data_dir)
    assert not [request for request in again.run_requests if request.partition_key == hour]


def test_an_hour_cut_by_retention_never_replaces_a_complete_bronze_partition(stream, dagster_instance, spark):
    data_dir, kafka, hour = stream["data_dir"], stream["kafka"], stream["hours"][0]
    events = LakehouseResource(data_dir=str(data_dir)).table("bronze.events")
    version = events.version()
    ranges = LakehouseResource(data_dir=str(data_dir)).table("bronze.event_ranges").read_hours(spark, [hour])
    cut = next(r for r in ranges.collect() if r["end_offset"] - r["start_offset"] >= 10)
    # What retention does: the log of one partition now starts inside the hour.
    admin = kafka.admin()  # keep the client alive until its futures resolve
    for future in admin.delete_records([TopicPartition(cut["topic"], cut["partition"],
                                                       cut["start_offset"] + 5)]).values():
        future.result(timeout=30)
    result = materialize("bronze_events", data_dir, dagster_instance, partition_key=hour, kafka=kafka,
                         raise_on_error=False)
    assert not result.success
    error = next(e for e in result.all_events if e.is_step_failure).step_failure_data.error
    failure = error.to_string()
    assert (f"{cut['topic']}/{cut['partition']}: bronze holds offsets [{cut['start_offset']}, {cut['end_offset']})"
            in failure)
    assert "retention deleted the rest" in failure and "The existing partition is kept" in failure
    assert events.version() == version


def test_recreated_topics_are_read_again_from_their_start(stream, dagster_instance, capsys, monkeypatch):
    """Topics deleted and created again under a running sensor (as after a broker reset): new topic ids; the tick
    says so and requests the hours of the new records."""
    kafka = stream["kafka"]
    # The previous test's refused run left the hour failed: let its backoff be over.
    monkeypatch.setattr("reco_assets.sensors.RETRY_BASE_S", 0.0)
    admin = kafka.admin()
    for future in admin.delete_topics(list(EVENT_TOPICS), operation_timeout=30).values():
        future.result(timeout=60)
    deadline = time.monotonic() + 60
    while True:  # a deleted topic's name is free again a moment later
        try:
            ensure_topics(admin)
            break
        except KafkaSetupError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    batch = EventGenerator(load_population("/nonexistent", BUNDLED_SAMPLE), seed=9).batch(60)
    produce(kafka, batch)
    capsys.readouterr()
    result = tick(dagster_instance, kafka, stream["cursor"], stream["data_dir"])
    resets = [line for line in capsys.readouterr().err.splitlines()
              if "WARNING" in line and "reading it again from its start, offset 0" in line]
    assert len(resets) == 9 and all("was recreated (id " in line for line in resets), resets  # 3 topics x 3
    assert sum(int(r.tags["reco/new_records"]) for r in result.run_requests) == 60
    assert all(offset <= 60 for offset in json.loads(result.cursor)["offsets"].values())
