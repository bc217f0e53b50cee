"""The stream's gold assets, materialized for real (local Spark, a Dagster instance) over silver hours laid out
on disk as silver_events writes them: 25 hours of a designed history with known trend scores."""

import math
from datetime import UTC, datetime, timedelta

import dagster as dg
import duckdb
import pandas as pd
import pytest
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.test_utils import create_test_daemon_workspace_context, freeze_time
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._daemon.freshness import FreshnessDaemon

from reco_assets.gold import trending
from reco_assets.gold.trending import EVENT_WEIGHTS
from reco_assets.lakehouse import LakehouseResource
from reco_assets.lakehouse.hours import hour_key
from reco_assets.silver.events import recent_events
from reco_assets_tests.conftest import materialize, write_silver_events

H0 = datetime(2026, 11, 20, 0, tzinfo=UTC)
TARGET = H0 + timedelta(hours=24)
MOVIES = pd.DataFrame({
    "movie_id": [1, 2, 3, 4],
    "title": ["Steady", "Riser", "No Genre", "Newcomer"],
    "year": [2001, 2002, 2003, 2004],
    "genres": [["Comedy"], ["Comedy", "Drama"], [], ["Drama"]],
})


def event(n: int, hour: datetime, minute: int, movie: int, kind: str = "view", user: int = 1, rating=None,
          watch=None) -> dict:
    at = hour + timedelta(minutes=minute, seconds=n % 60)
    return {"event_id": f"{hour:%H}-{movie}-{n}", "event_type": kind, "event_ts": at, "user_id": user,
            "movie_id": movie, "rating": rating, "watch_seconds": watch, "received_at": at}


def designed_history() -> list[dict]:
    """Movie 1 steady at 10 views an hour, movie 2 at 1 an hour then 8 events; 4, 3 and unknown 99 new."""
    rows = []
    for h in range(24):
        hour = H0 + timedelta(hours=h)
        rows += [event(i, hour, i, 1, user=i, watch=60) for i in range(10)]
        rows.append(event(100, hour, 30, 2))
    rows += [event(i, TARGET, 5, 1, user=i, watch=60) for i in range(10)]
    rows += [event(i, TARGET, 10, 2, user=10 + i, watch=100) for i in range(5)]
    rows += [event(5 + i, TARGET, 10, 2, kind="click", user=10 + i) for i in range(2)]
    rows.append(event(7, TARGET, 11, 2, kind="rating", user=12, rating=4.0))
    rows += [event(i, TARGET, 20, 4, kind="rating", user=20 + i, rating=r) for i, r in enumerate([2.5, 5.0, 3.5])]
    rows.append(event(0, TARGET, 21, 3, user=30, watch=10))
    rows += [event(i, TARGET, 59, 99, kind="click", user=40 + i) for i in range(2)]
    return rows


@pytest.fixture(scope="module")
def stream_gold(tmp_path_factory, spark, dagster_instance):
    data_dir = tmp_path_factory.mktemp("stream_gold")
    lakehouse = LakehouseResource(data_dir=str(data_dir))
    lakehouse.table("silver.movies").overwrite(
        spark.createDataFrame(MOVIES, "movie_id INT, title STRING, year INT, genres ARRAY<STRING>"))
    events = pd.DataFrame(designed_history())
    schema = ("event_id STRING, event_type STRING, event_ts TIMESTAMP, user_id INT, movie_id INT, rating DOUBLE, "
              "watch_seconds INT, received_at TIMESTAMP")
    write_silver_events(lakehouse, spark.createDataFrame(events, schema))
    result = materialize(["gold_trending", "gold_genre_minute_stats"], data_dir, dagster_instance,
                         partition_key=hour_key(TARGET))
    now = materialize(["gold_trending_now"], data_dir, dagster_instance,
                      run_config={"ops": {"gold_trending_now": {"config": {"top_n": 3}}}})
    return {"data_dir": data_dir, "result": result, "now": now, "events": events}


def query(data_dir, sql: str) -> list[tuple]:
    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as con:
        return con.execute(sql).fetchall()


def z(x: float, history: list[float]) -> float:
    mean = sum(history) / 24
    variance = sum(v * v for v in history) / 24 - mean * mean
    return (x - mean) / math.sqrt(max(variance, mean) + 1)


def test_trend_scores_and_ranks_of_the_hour(stream_gold):
    assert stream_gold["result"].success
    checks = {e.check_name: e.passed for e in stream_gold["result"].get_asset_check_evaluations()}
    assert checks == {"ranks_dense_and_unique": True}
    got = query(stream_gold["data_dir"], "SELECT movie_id, rank, trend_score, events, views, clicks, ratings, "
                "unique_users, avg_rating, watch_seconds FROM gold.trending ORDER BY rank")
    expected_scores = {2: z(8, [1] * 24), 4: z(3, [0] * 24), 99: z(2, [0] * 24), 3: z(1, [0] * 24),
                       1: z(10, [10] * 24)}
    assert [r[0] for r in got] == [2, 4, 99, 3, 1] and [r[1] for r in got] == [1, 2, 3, 4, 5]
    for movie_id, _, score, *_ in got:
        assert score == pytest.approx(expected_scores[movie_id], abs=1e-4)
    assert got[0][3:] == (8, 5, 2, 1, 5, 4.0, 500)
    assert got[1][3:] == (3, 0, 0, 3, 3, 3.667, 0)
    # Only the target hour was materialized: the 24 hours before it are its baseline, not outputs.
    assert query(stream_gold["data_dir"], "SELECT DISTINCT hour FROM gold.trending") == [("2026-11-21-00",)]


def test_ranks_within_each_genre(stream_gold):
    got = query(stream_gold["data_dir"], "SELECT g, r, movie_id FROM (SELECT movie_id, unnest(map_keys(genre_ranks)) "
                "AS g, unnest(map_values(genre_ranks)) AS r FROM gold.trending) ORDER BY g, r")
    assert got == [("(unknown)", 1, 99), ("(unknown)", 2, 3), ("Comedy", 1, 2), ("Comedy", 2, 1),
                   ("Drama", 1, 2), ("Drama", 2, 4)]


def test_genre_minute_windows(stream_gold):
    got = query(stream_gold["data_dir"], "SELECT genre, strftime(window_start, '%H:%M'), events, views, clicks, "
                "ratings, unique_users, avg_rating, min_rating, max_rating, watch_seconds "
                "FROM gold.genre_minute_stats WHERE genre = 'Drama' ORDER BY window_start")
    assert got == [
        ("Drama", "00:10", 7, 5, 2, 0, 5, None, None, None, 500),
        ("Drama", "00:11", 1, 0, 0, 1, 1, 4.0, 4.0, 4.0, 0),
        ("Drama", "00:20", 3, 0, 0, 3, 3, 3.667, 2.5, 5.0, 0),
    ]
    comedy_views = query(stream_gold["data_dir"], "SELECT sum(views) FROM gold.genre_minute_stats "
                         "WHERE genre = 'Comedy'")[0][0]
    assert comedy_views == 10 + 5  # movie 1's ten views and movie 2's five, each genre counted once


def test_trending_now_decays_by_age(stream_gold):
    assert stream_gold["now"].success
    events = stream_gold["events"]
    as_of = events["received_at"].max()
    since = as_of - timedelta(hours=24)
    recent = events[events["received_at"] > since]
    age_h = (as_of - recent["received_at"]).dt.total_seconds() / 3600
    weights = recent["event_type"].map(EVENT_WEIGHTS) * (2.0 ** -age_h)
    expected = weights.groupby(recent["movie_id"]).sum().sort_values(ascending=False)
    got = query(stream_gold["data_dir"], "SELECT movie_id, rank, trend_score, as_of FROM gold.trending_now "
                "WHERE genre IS NULL ORDER BY rank")
    assert [r[0] for r in got] == list(expected.index[:3])
    for movie_id, _, score, _ in got:
        assert score == pytest.approx(expected[movie_id], rel=1e-5)
    assert got[0][3] == as_of
    drama = query(stream_gold["data_dir"], "SELECT rank, movie_id FROM gold.trending_now WHERE genre = 'Drama' "
                  "ORDER BY rank")
    assert [m for _, m in drama] == [m for m in expected.index if m in (2, 4)]


def test_trending_now_agrees_with_the_spark_scores(stream_gold, spark):
    """gold_trending_now (DuckDB on the files) gives the numbers of trending.decayed_scores (Spark, which the hybrid
    ranker's stream features use) for the same events."""
    events, as_of = recent_events(spark, LakehouseResource(data_dir=str(stream_gold["data_dir"])), 24.0)
    columns = ["trend_score", "events", "views", "clicks", "ratings", "unique_users", "last_event_at"]
    expected = {r["movie_id"]: tuple(r[c] for c in columns)
                for r in trending.decayed_scores(events, as_of, 1.0).collect()}
    got = query(stream_gold["data_dir"], f"SELECT movie_id, {', '.join(columns)} FROM gold.trending_now "
                "WHERE genre IS NULL")
    assert len(got) == 3
    for movie_id, *values, last_event_at in got:
        assert (*values, last_event_at.astimezone(UTC)) == (*expected[movie_id][:-1],
                                                            expected[movie_id][-1].replace(tzinfo=UTC))


def test_trending_now_freshness_as_the_daemon_evaluates_it(stream_gold, dagster_instance):
    """The freshness policy of gold_trending_now: fresh after a run, warn after 1 minute, fail after 5."""
    key = dg.AssetKey("gold_trending_now")
    updated = dagster_instance.get_latest_materialization_event(key).timestamp
    origin = InProcessCodeLocationOrigin(LoadableTargetOrigin(module_name="reco_assets.definitions"),
                                         location_name="reco_assets")
    states = []
    with create_test_daemon_workspace_context(InProcessWorkspaceLoadTarget(origin), dagster_instance) as workspace:
        for minutes in (0.5, 3, 6):
            with freeze_time(updated + minutes * 60):
                list(FreshnessDaemon().run_iteration(workspace))
            states.append(dagster_instance.get_freshness_state_records([key])[key].freshness_state.value)
    assert states == ["PASS", "WARN", "FAIL"]
