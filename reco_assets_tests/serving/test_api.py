"""The HTTP API for real: `reco-assets serve` in its own process over a copy of the materialized sample graph, real
requests, the answers checked against the Delta tables they come from."""

import functools
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from deltalake import DeltaTable

from reco_assets.bronze.movielens import BUNDLED_SAMPLE
from reco_assets.events.generator import EventGenerator, load_population
from reco_assets.events.producer import EventProducer
from reco_assets.lakehouse import LakehouseResource
from reco_assets_tests.conftest import Api, free_port, materialize, write_silver_events

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def served(batch_graph, kafka, tmp_path_factory):
    """The API over a copy of the batch graph's data directory (the tests re-materialize some of its tables)."""
    data_dir = tmp_path_factory.mktemp("served") / "data"
    shutil.copytree(batch_graph[1], data_dir, ignore=shutil.ignore_patterns("dagster_home"))
    api = Api(data_dir, kafka.bootstrap_servers, data_dir.parent / "serve.log", "--refresh", "0.2")
    yield api
    api.stop()


@functools.cache
def versioned_rows(data_dir: Path, name: str, version: int) -> pd.DataFrame:
    return DeltaTable(LakehouseResource(data_dir=str(data_dir)).table(name).uri, version=version).to_pandas()


def table_rows(data_dir: Path, name: str, version: int | None = None) -> pd.DataFrame:
    if version is None:
        version = DeltaTable(LakehouseResource(data_dir=str(data_dir)).table(name).uri).version()
    return versioned_rows(data_dir, name, version)


def expected_list(data_dir: Path, name: str, key: str, value: int, k: int, version: int | None = None) -> list[int]:
    rows = table_rows(data_dir, name, version)
    return rows[rows[key] == value].sort_values("rank")["movie_id" if key == "user_id" else "similar_movie_id"] \
        .head(k).tolist()


def test_recommendations_are_the_users_rows_of_the_model_table(served):
    for model, table in (("als", "gold.recommendations"), ("hybrid", "gold.hybrid_recommendations")):
        status, body = served.get(f"/users/1/recommendations?k=7&model={model}")
        assert status == 200 and body["source"] == model and body["table"] == table
        assert [m["movie_id"] for m in body["movies"]] == expected_list(served.data_dir, table, "user_id", 1, 7)
        assert [m["rank"] for m in body["movies"]] == list(range(1, 8))
        assert all(m["title"] and m["score"] is not None for m in body["movies"])
        assert body["table_version"] == DeltaTable(
            LakehouseResource(data_dir=str(served.data_dir)).table(table).uri).version()
        assert body["about"]["model_version"].startswith(f"{model}-")
        columns = {"als": ["rank", "movie_id", "title", "year", "score"],
                   "hybrid": ["rank", "movie_id", "title", "reason", "score"]}[model]  # the CLI's columns too
        assert all(list(m) == columns for m in body["movies"])
    assert served.get("/users/1/recommendations")[1]["source"] == "als" and \
        len(served.get("/users/1/recommendations")[1]["movies"]) == 10


def test_a_user_without_history_gets_the_popular_movies(served):
    status, body = served.get("/users/999999/recommendations?k=3")
    popular = table_rows(served.data_dir, "gold.popular_movies").sort_values("rank")["movie_id"].head(3).tolist()
    assert status == 200 and body["source"] == "popular" and "no history" in body["note"]
    assert [m["movie_id"] for m in body["movies"]] == popular
    assert list(body["movies"][0]) == ["rank", "movie_id", "title", "year", "num_ratings"]


def test_similar_movies_and_an_unknown_movie(served):
    status, body = served.get("/movies/1/similar?k=5")
    assert status == 200 and body["about"]["title"] == "Toy Story"
    assert [m["movie_id"] for m in body["movies"]] == expected_list(served.data_dir, "gold.similar_movies",
                                                                   "movie_id", 1, 5)
    status, body = served.get("/movies/999999/similar")
    assert status == 404 and body["detail"] == "movie 999999 is not in silver.movies"


@pytest.mark.parametrize("path", [
    "/users/abc/recommendations", "/users/0/recommendations", "/users/-3/recommendations",
    "/users/99999999999/recommendations", "/users/1/recommendations?k=0", "/users/1/recommendations?k=101",
    "/users/1/recommendations?k=ten", "/users/1/recommendations?model=svd", "/movies/1.5/similar", "/trending?genre=",
    "/trending?limit=0",
])
def test_malformed_input_gets_a_422_with_the_reason(served, path):
    status, body = served.get(path)
    assert status == 422, body
    assert body["detail"][0]["msg"] and body["detail"][0]["loc"][0] in ("path", "query")


def test_no_request_runs_sql_of_its_own(served):
    """Values are bound parameters: a quote is part of a genre name, not SQL."""
    status, body = served.get("/trending?genre=" + urllib.request.quote("x' OR 1=1 --"))
    assert status == 404 and body["detail"].startswith("no genre \"x' OR 1=1 --\"; genres: Action, Adventure")
    paths = served.get("/openapi.json")[1]["paths"]
    assert set(paths) == {"/users/{user_id}/recommendations", "/movies/{movie_id}/similar", "/trending", "/stats",
                          "/health"}
    assert all(set(methods) == {"get"} for methods in paths.values())
    with urllib.request.urlopen(served.base + "/docs", timeout=10) as docs:
        assert docs.status == 200 and b"swagger" in docs.read().lower()


def test_health_says_when_records_wait_and_trending_is_not_updated(served, kafka):
    """Records in Kafka that this lakehouse's bronze does not hold, and no gold.trending_now: 503, and why."""
    producer = EventProducer(kafka.client_config())
    producer.send(EventGenerator(load_population("/nonexistent", BUNDLED_SAMPLE), seed=3).batch(10))
    producer.flush()
    status, body = served.get("/health")
    assert status == 503 and body["status"] == "unavailable" and len(body["problems"]) == 1, body
    waiting = body["kafka"]["records_waiting"]
    assert waiting >= 10 and body["problems"][0] == (
        f"{waiting} records wait in Kafka and gold.trending_now was last updated never: are the sensor and its "
        "runs on?")
    assert body["tables"]["gold.recommendations"]["version"] == 0 and body["tables"]["gold.trending_now"] == {
        "version": None}
    assert body["kafka"]["reachable"] and body["spark_connect"]["used"] is False


def test_an_empty_lakehouse_answers_503_with_what_to_materialize(kafka, tmp_path):
    api = Api(tmp_path / "data", "127.0.0.1:1", tmp_path / "serve.log", "--refresh", "0.2")  # no tables, no broker
    try:
        status, body = api.get("/users/1/recommendations")
        assert status == 503 and body["detail"] == ("gold.recommendations is not materialized yet: materialize "
                                                    "gold_recommendations (the MovieLens batch graph)")
        assert api.get("/users/1/recommendations?model=hybrid")[1]["detail"].endswith(
            "materialize gold_hybrid_recommendations")
        assert api.get("/stats")[0] == 503 and api.get("/trending")[0] == 503
        status, body = api.get("/health")
        assert status == 503 and body["status"] == "unavailable"
        assert any(p.startswith("Kafka: Kafka at 127.0.0.1:1 did not answer") for p in body["problems"])
        assert "silver.movies is not materialized yet: materialize silver_movies (the MovieLens batch graph)" in \
            body["problems"]
    finally:
        api.stop()


def worker_pids(serve: subprocess.Popen) -> list[str]:
    """The worker processes `serve --workers` spawned."""
    return subprocess.run(["pgrep", "-P", str(serve.pid), "-f", "multiprocessing.spawn"], capture_output=True,
                          text=True).stdout.split()


def test_worker_processes_answer_alike_and_stop_on_ctrl_c(served, kafka, tmp_path):
    """`serve --workers 2`: two worker processes, each with its own copy, give the same answers as one; SIGINT to
    the process group, as Ctrl+C sends it, stops them all."""
    api = Api(served.data_dir, kafka.bootstrap_servers, tmp_path / "serve.log", "--workers", "2")
    try:
        workers = worker_pids(api.process)
        assert len(workers) == 2, (tmp_path / "serve.log").read_text()
        deadline = time.monotonic() + 60  # both answer before the requests, so that both serve some
        while (tmp_path / "serve.log").read_text().count("answers\n") < 2:
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.1)
        expected = served.get("/users/1/recommendations?k=5")[1]["movies"]
        answers = [api.get("/users/1/recommendations?k=5") for _ in range(40)]
        assert all(status == 200 and body["movies"] == expected for status, body in answers)
        group = [api.process.pid, *map(int, workers)]
        for pid in group:
            os.kill(pid, signal.SIGINT)
        assert api.process.wait(timeout=10) == 0  # a clean stop, not a crash of its workers
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
        assert "Traceback" not in (tmp_path / "serve.log").read_text()
    finally:
        if api.process.poll() is None:
            api.stop()


def test_ctrl_c_while_the_workers_start_stops_them_without_a_traceback(tmp_path):
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen([str(ROOT / ".venv/bin/reco-assets"), "--data-dir", str(tmp_path / "data"),
                                    "serve", "--port", str(free_port()), "--workers", "2"], stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True,
                                   env=os.environ | {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"})
    try:
        workers: list[str] = []
        deadline = time.monotonic() + 60
        while len(workers) < 2:
            assert time.monotonic() < deadline and process.poll() is None, log.read_text()
            workers = worker_pids(process)
            time.sleep(0.05)
        assert "answers" not in log.read_text()  # still importing: the Ctrl+C comes before they serve
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=30) == 0, log.read_text()
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
        assert "Traceback" not in log.read_text()
    finally:
        if process.poll() is None:
            process.kill()


def test_sigterm_to_serve_stops_its_workers(served, kafka, tmp_path):
    api = Api(served.data_dir, kafka.bootstrap_servers, tmp_path / "serve.log", "--workers", "2")
    workers = worker_pids(api.process)
    assert len(workers) == 2
    api.process.terminate()
    assert api.process.wait(timeout=30) == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


def test_a_taken_port_is_refused_with_the_reason(tmp_path):
    """The workers bind with SO_REUSEPORT, which would share a port with another server: a taken one is refused."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([str(ROOT / ".venv/bin/reco-assets"), "--data-dir", str(tmp_path), "serve", "--port",
                               str(port)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"127.0.0.1:{port} is taken by another process (Address already in use)" in done.stderr


def recent_events(movies: list[int], per_movie: list[int]) -> pd.DataFrame:
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = [{"event_id": f"e-{movie}-{i}", "event_type": "view", "event_ts": now - timedelta(minutes=i % 30),
             "user_id": i + 1, "movie_id": movie, "watch_seconds": 60, "received_at": now - timedelta(minutes=i % 30)}
            for movie, n in zip(movies, per_movie, strict=True) for i in range(n)]
    return pd.DataFrame(rows)


def test_answers_stay_whole_while_the_tables_are_replaced(served, spark, dagster_instance):
    """Concurrent requests while gold_recommendations (20, then 5 per user) and gold_trending_now (top 5, then
    top 2) are materialized again: no 5xx, and every answer equals its table at the version it names."""
    lakehouse = LakehouseResource(data_dir=str(served.data_dir))
    schema = "event_id STRING, event_type STRING, event_ts TIMESTAMP, user_id INT, movie_id INT, watch_seconds INT, " \
             "received_at TIMESTAMP"
    write_silver_events(lakehouse, spark.createDataFrame(recent_events([1, 2, 3, 6, 10, 32], [9, 8, 7, 6, 5, 4]),
                                                         schema))
    top = {"ops": {"gold_trending_now": {"config": {"top_n": 5}}}}
    assert materialize(["gold_trending_now"], served.data_dir, dagster_instance, run_config=top).success
    answers, stop = [], threading.Event()

    def load(paths: list[str]) -> None:
        while not stop.is_set():
            for path in paths:
                answers.append((path, *served.get(path)))
                time.sleep(0.02)  # a steady load that leaves the 2 cores to the runs as well

    users = [f"/users/{u}/recommendations?k=10" for u in (1, 2, 3, 4, 5)]
    clients = [threading.Thread(target=load, args=(paths,)) for paths in (
        users, ["/trending?limit=10", *users[::-1]], ["/trending?limit=3", *users[:2]])]
    for client in clients:
        client.start()
    try:
        time.sleep(1)
        assert materialize(["gold_recommendations", "gold_trending_now"], served.data_dir, dagster_instance,
                           run_config={"ops": {"gold_recommendations": {"config": {"k": 5}},
                                               "gold_trending_now": {"config": {"top_n": 2}}}}).success
        time.sleep(1.5)  # the copy follows the logs every 0.2 s
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=60)
    assert Counter(status for _, status, _ in answers) == {200: len(answers)}, Counter(s for _, s, _ in answers)
    print(f"{len(answers)} answers during the refreshes")
    seen = Counter()
    for path, _, body in answers:
        version = body["table_version"]
        if path.startswith("/users/"):
            user = int(path.split("/")[2])
            expected = expected_list(served.data_dir, body["table"], "user_id", user, 10, version)
        else:
            rows = table_rows(served.data_dir, "gold.trending_now", version)
            expected = rows[rows["genre"].isna()].sort_values("rank")["movie_id"].head(
                int(path.rsplit("=", 1)[1])).tolist()
        assert [m["movie_id"] for m in body["movies"]] == expected, (path, version)
        seen[(body["table"], version, len(body["movies"]))] += 1
    # Both versions of both tables answered: the old lists and the new, shorter ones.
    assert {(t, n) for t, _, n in seen} >= {("gold.recommendations", 10), ("gold.recommendations", 5),
                                            ("gold.trending_now", 5), ("gold.trending_now", 2)}, seen


def test_health_is_ok_once_trending_is_fresh(served):
    status, body = served.get("/health")
    assert status == 200 and body["status"] == "ok" and body["problems"] == [], body
    assert {name: body["tables"][name]["version"] for name in ("gold.recommendations", "gold.trending_now")} == {
        "gold.recommendations": 1, "gold.trending_now": 1}
    assert body["freshness"]["trending_now_age_seconds"] < body["freshness"]["stale_after_seconds"]
    assert body["catalog"]["exists"] and body["catalog"]["path"] == str(served.data_dir / "warehouse.duckdb")
