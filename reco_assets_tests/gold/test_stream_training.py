"""ALS retrained with the stream: synthetic silver events, laid out as silver_events writes them, change what is
recommended — for a user known only from the stream, for a MovieLens user who watched a movie since, and for a
user who arrived after the model was trained (cold start)."""

import uuid
from datetime import UTC, datetime, timedelta

import duckdb
import pandas as pd
import pytest

from reco_assets.contracts import TOPICS
from reco_assets.lakehouse import LakehouseResource
from reco_assets.lakehouse.tables import EVENT_COLUMNS
from reco_assets.silver.event_contract import OUTPUT_TYPES
from reco_assets_tests.conftest import SMALL_EVALUATION_HYBRID, copy_tables, materialize, write_silver_events

pytestmark = pytest.mark.integration

HOUR = datetime(2026, 11, 23, 12, tzinfo=UTC)
STREAM_USER, LATE_USER, MOVIELENS_USER = 900_001, 900_002, 1
# Toy Story, Toy Story 2, Finding Nemo, Monsters Inc., The Incredibles, Up, Ratatouille, WALL·E, Shrek,
# The Lion King, Aladdin, Beauty and the Beast.
ANIMATED = [1, 3114, 6377, 4886, 8961, 68954, 50872, 60069, 4306, 364, 588, 595]
CLICKED = 2355  # A Bug's Life: clicked twice, never viewed, so still recommendable
SCHEMA = (", ".join(f"{column} {OUTPUT_TYPES[column]}" for column in EVENT_COLUMNS)
          + ", topic STRING, partition INT, offset BIGINT, received_at TIMESTAMP")
# The served models are the defaults but for ALS's size.
SMALL_ALS = {"ops": {"als_model_and_evaluation": {"config": {"rank": 16, "max_iter": 5, "report_rmse": False,
                                                             "global_temporal": False,
                                                             "hybrid": SMALL_EVALUATION_HYBRID}}}}


def event(n: int, hour: datetime, kind: str, user: int, movie: int, **fields) -> dict:
    at = hour + timedelta(minutes=n % 60, seconds=n // 60)
    return {column: None for column in EVENT_COLUMNS} | {
        "event_id": str(uuid.UUID(int=user * 10_000 + n)), "event_type": kind, "event_ts": at, "user_id": user,
        "movie_id": movie, "topic": TOPICS[kind], "partition": 0, "offset": n, "received_at": at,
    } | fields


def write_hour(spark, data_dir, hour: datetime, rows: list[dict]) -> None:
    write_silver_events(LakehouseResource(data_dir=str(data_dir)), spark.createDataFrame(pd.DataFrame(rows), SCHEMA))


TABLES = {"recommendations": "gold.recommendations", "hybrid": "gold.hybrid_recommendations",
          "movies": "silver.movies"}


def query(data_dir, sql: str, *params) -> list[tuple]:
    """Run `sql` with {recommendations}, {hybrid} and {movies} standing for the tables of `data_dir`."""
    lakehouse = LakehouseResource(data_dir=str(data_dir))
    tables = {name: lakehouse.table(table).duckdb() for name, table in TABLES.items()}
    with duckdb.connect() as con:
        return con.execute(sql.format(**tables), params).fetchall()


@pytest.fixture(scope="module")
def stream_trained(batch_graph, spark, dagster_instance, tmp_path_factory):
    """Silver from the batch graph plus one hour of events; ALS, its lists and the hybrid rebuilt on them."""
    _, batch_dir = batch_graph
    data_dir = tmp_path_factory.mktemp("stream_trained")
    copy_tables(batch_dir, data_dir, "silver.movies", "silver.ratings", "silver.tags")
    watched = query(batch_dir, "SELECT movie_id FROM {recommendations} WHERE user_id = ? AND rank = 1",
                    MOVIELENS_USER)[0][0]
    rows = [event(i, HOUR, "view", STREAM_USER, movie, device_type="smart_tv", watch_seconds=5400)
            for i, movie in enumerate(ANIMATED)]
    rows += [event(20, HOUR, "rating", STREAM_USER, ANIMATED[0], rating=5.0),
             event(21, HOUR, "click", STREAM_USER, CLICKED, click_type="trailer"),
             event(22, HOUR, "click", STREAM_USER, CLICKED, click_type="poster"),
             event(30, HOUR, "view", MOVIELENS_USER, watched, device_type="desktop", watch_seconds=6000)]
    write_hour(spark, data_dir, HOUR, rows)
    result = materialize(["als_model", "gold_reco_evaluation", "gold_recommendations", "gold_hybrid_recommendations"],
                         data_dir, dagster_instance, run_config=SMALL_ALS)
    return {"data_dir": data_dir, "result": result, "watched": watched, "events": len(rows)}


def materialization(result, asset: str) -> dict:
    events = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset]
    return {key: getattr(value, "value", value) for key, value in events[-1].materialization.metadata.items()}


def test_als_trains_on_the_stream(stream_trained):
    result = stream_trained["result"]
    assert result.success
    assert all(e.passed for e in result.get_asset_check_evaluations())
    info = materialization(result, "als_model")
    assert info["stream_events"] == stream_trained["events"]
    # 12 animated views (one also rated), one clicked movie, one view by a MovieLens user: 14 new pairs.
    assert info["interactions"] == info["ratings"] + 14
    assert info["users"] == 611, "the stream-only user has factors"


def family_films(data_dir, table: str, user: int) -> list[bool]:
    """Whether each of the user's recommendations in `table`, best first, is an Animation or Children movie."""
    return [family for (family,) in query(
        data_dir,
        f"SELECT list_contains(m.genres, 'Animation') OR list_contains(m.genres, 'Children') "
        f"FROM {{{table}}} r JOIN {{movies}} m USING (movie_id) WHERE r.user_id = ? ORDER BY r.rank", user)]


def test_a_stream_only_user_is_served_and_the_hybrid_follows_what_they_watched(stream_trained):
    data_dir = stream_trained["data_dir"]
    als_top, hybrid_top = (family_films(data_dir, table, STREAM_USER)[:10] for table in ("recommendations", "hybrid"))
    assert len(als_top) == len(hybrid_top) == 10
    # Implicit ALS tuned for top-K (alpha 0.1) recommends a 12-movie user mostly popular films; the content
    # signal, whose profile is built from the streamed views, pulls the family films up.
    assert sum(hybrid_top) >= 3 and sum(hybrid_top) > sum(als_top), (als_top, hybrid_top)


def test_movies_viewed_in_the_stream_are_never_recommended_again(stream_trained):
    data_dir, watched = stream_trained["data_dir"], stream_trained["watched"]
    for table in ("recommendations", "hybrid"):
        lists = query(data_dir, f"SELECT user_id, list(movie_id) FROM {{{table}}} "
                                "WHERE user_id IN (?, ?) GROUP BY user_id", MOVIELENS_USER, STREAM_USER)
        assert len(lists) == 2 and all(len(movies) == 20 for _, movies in lists), (table, lists)
        by_user = dict(lists)
        assert watched not in by_user[MOVIELENS_USER], table
        assert not set(by_user[STREAM_USER]) & set(ANIMATED), table


def test_anyone_s_list_follows_the_stream_s_trend(stream_trained):
    hybrid = materialization(stream_trained["result"], "gold_hybrid_recommendations")
    assert hybrid["trend_source"].startswith("stream events as of 2026-11-23T12:")
    assert hybrid["users_hybrid"] == 611
    assert hybrid["recommended_as_of"] == (HOUR + timedelta(minutes=30)).timestamp()  # the latest event
    sources = query(stream_trained["data_dir"], "SELECT DISTINCT source FROM {hybrid} "
                                                "WHERE user_id = ?", STREAM_USER)
    assert sources == [("hybrid",)]
    anyone = [m for (m,) in query(stream_trained["data_dir"], "SELECT movie_id FROM {hybrid} WHERE user_id IS NULL "
                                                              "ORDER BY rank")]
    streamed = {*ANIMATED, CLICKED, stream_trained["watched"]}
    assert set(anyone[:5]) <= streamed, "the movies of the stream's last hour lead"


def test_a_user_newer_than_als_is_ranked_from_their_first_views(stream_trained, spark, dagster_instance):
    data_dir = stream_trained["data_dir"]
    anyone = [m for (m,) in query(data_dir, "SELECT movie_id FROM {hybrid} "
                                            "WHERE user_id IS NULL ORDER BY rank")]
    later = HOUR + timedelta(hours=1)
    write_hour(spark, data_dir, later, [event(i, later, "view", LATE_USER, movie, device_type="mobile")
                                        for i, movie in enumerate(anyone[:2])])
    result = materialize(["gold_hybrid_recommendations"], data_dir, dagster_instance)
    assert result.success and all(e.passed for e in result.get_asset_check_evaluations())
    assert materialization(result, "gold_hybrid_recommendations")["users_hybrid"] == 612
    rows = query(data_dir, "SELECT movie_id, source, ease_score FROM {hybrid} WHERE user_id = ? ORDER BY rank",
                 LATE_USER)
    assert len(rows) == 20 and {source for _, source, _ in rows} == {"hybrid"}
    assert not {movie for movie, *_ in rows} & set(anyone[:2]), "what they viewed is never recommended"
    anyone_now = [m for (m,) in query(data_dir, "SELECT movie_id FROM {hybrid} WHERE user_id IS NULL ORDER BY rank")]
    assert [movie for movie, *_ in rows] != [m for m in anyone_now if m not in anyone[:2]][:20], (
        "their two views shape the list: it is not anyone's list without them")
    assert sum(ease is not None for *_, ease in rows) >= 10, "EASE scores most of their picks from the two views"
