"""Gold's asset checks fail, with their metadata, on data that breaks their rule (real Delta tables, real DuckDB,
a real Dagster instance for the check that reads the latest materialization)."""

import dagster as dg
import pyarrow as pa
from deltalake import write_deltalake

from reco_assets.gold.assets import recommendations_cover_every_user, recommendations_exclude_rated
from reco_assets.gold.hybrid import hybrid_excludes_seen
from reco_assets.gold.stream import rank_violations
from reco_assets.lakehouse import LakehouseResource

RATINGS = pa.table({"user_id": pa.array([1, 1, 2], pa.int32()), "movie_id": pa.array([1, 2, 1], pa.int32()),
                    "rating": [4.0, 0.5, 5.0]})


def lists(*rows: tuple[int, int, int]) -> pa.Table:
    """(user_id, rank, movie_id) rows of a recommendations table."""
    users, ranks, movies = zip(*rows, strict=True)
    return pa.table({"user_id": pa.array(users, pa.int32()), "rank": pa.array(ranks, pa.int32()),
                     "movie_id": pa.array(movies, pa.int32()), "score": [1.0] * len(rows)})


def lakehouse_with(tmp_path, **tables: pa.Table) -> LakehouseResource:
    lakehouse = LakehouseResource(data_dir=str(tmp_path))
    write_deltalake(lakehouse.table("silver.ratings").uri, RATINGS)
    for name, rows in tables.items():
        write_deltalake(lakehouse.table(f"gold.{name}").uri, rows)
    return lakehouse


def outcome(result: dg.AssetCheckResult) -> tuple[bool, dict]:
    return result.passed, {key: value.value for key, value in result.metadata.items()}


GOOD = lists((1, 1, 3), (1, 2, 4), (2, 1, 2), (2, 2, 3))


def test_recommendations_of_a_rated_movie_fail(tmp_path):
    assert outcome(recommendations_exclude_rated(lakehouse=lakehouse_with(tmp_path, recommendations=GOOD)))[0]
    bad = lists((1, 1, 3), (1, 2, 1), (2, 1, 1), (2, 2, 3))  # user 1 rated movie 1, so did user 2
    assert outcome(recommendations_exclude_rated(lakehouse=lakehouse_with(tmp_path / "bad", recommendations=bad))) == (
        False, {"recommendations_already_rated": 2})


def test_a_user_without_a_full_list_fails(tmp_path):
    assert outcome(recommendations_cover_every_user(lakehouse=lakehouse_with(tmp_path, recommendations=GOOD)))[0]
    short = lists((1, 1, 3), (1, 2, 4), (2, 1, 2))  # user 2 has one movie of two
    assert outcome(recommendations_cover_every_user(
        lakehouse=lakehouse_with(tmp_path / "short", recommendations=short))) == (
        False, {"users_without_full_list": 1})
    missing = lists((1, 1, 3), (1, 2, 4))  # user 2 has none
    assert outcome(recommendations_cover_every_user(
        lakehouse=lakehouse_with(tmp_path / "missing", recommendations=missing))) == (
        False, {"users_without_full_list": 1})


def test_hybrid_recommendations_of_a_rated_movie_fail(tmp_path):
    with dg.instance_for_test() as instance:
        instance.report_runless_asset_event(dg.AssetMaterialization("gold_hybrid_recommendations"))
        context = dg.build_asset_check_context(instance=instance)
        good = lakehouse_with(tmp_path, hybrid_recommendations=GOOD)
        assert outcome(hybrid_excludes_seen(context, lakehouse=good))[0]
        bad = lakehouse_with(tmp_path / "bad", hybrid_recommendations=lists((1, 1, 2), (2, 1, 3)))
        assert outcome(hybrid_excludes_seen(context, lakehouse=bad)) == (False, {"recommendations_already_seen": 1})


def trending(*rows: tuple[str, int, dict[str, int]]) -> pa.Table:
    """(hour, rank, genre ranks) rows of gold.trending."""
    hours, ranks, genres = zip(*rows, strict=True)
    return pa.table({"hour": list(hours), "rank": pa.array(ranks, pa.int32()),
                     "movie_id": pa.array(range(len(rows)), pa.int32()),
                     "genre_ranks": pa.array([list(g.items()) for g in genres], pa.map_(pa.string(), pa.int32()))})


def test_trending_ranks_that_are_not_one_to_n_fail(tmp_path, spark):
    lakehouse = LakehouseResource(data_dir=str(tmp_path))
    table = lakehouse.table("gold.trending")
    hours = ["2026-11-23-12:00", "2026-11-23-13:00"]
    write_deltalake(table.uri, trending(
        ("2026-11-23-12", 1, {"Drama": 1, "Comedy": 1}), ("2026-11-23-12", 2, {"Drama": 2}),
        ("2026-11-23-13", 1, {"Drama": 1}), ("2026-11-23-13", 2, {"Drama": 2}),
        ("2026-11-23-14", 1, {"Drama": 1}), ("2026-11-23-14", 1, {"Drama": 1})), partition_by=["hour"])
    assert rank_violations(spark, table, 0, hours) == {"hours_with_broken_ranks": 0,
                                                      "hour_genres_with_broken_ranks": 0}
    write_deltalake(table.uri, trending(
        ("2026-11-23-12", 1, {"Drama": 1}), ("2026-11-23-12", 1, {"Drama": 2}),  # two firsts overall
        ("2026-11-23-13", 2, {"Drama": 1, "Comedy": 2}), ("2026-11-23-13", 3, {"Drama": 1})),  # no 1; Drama twice 1
        mode="overwrite", partition_by=["hour"])
    assert rank_violations(spark, table, 1, hours) == {"hours_with_broken_ranks": 2,
                                                      "hour_genres_with_broken_ranks": 2}
