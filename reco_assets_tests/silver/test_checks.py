"""Silver's asset checks fail, with their metadata, on data that breaks their rule (real Delta tables, real DuckDB)."""

import pyarrow as pa
import pytest
from deltalake import write_deltalake

from reco_assets.lakehouse import LakehouseResource
from reco_assets.silver.assets import ratings_movies_exist, ratings_on_half_star_scale, silver_checks
from reco_assets.silver.events import reconciliation

MOVIES = pa.table({"movie_id": pa.array([1, 2, 3], pa.int32()), "title": ["A", "B", "C"]})
RATINGS = pa.table({"user_id": pa.array([1, 1, 2], pa.int32()), "movie_id": pa.array([1, 2, 1], pa.int32()),
                    "rating": [4.0, 0.5, 5.0]})
LINKS = pa.table({"movie_id": pa.array([1, 2], pa.int32()), "imdb_id": ["0114709", "0113497"]})


def lakehouse_with(tmp_path, **tables: pa.Table) -> LakehouseResource:
    """A lakehouse holding the sample tables, some replaced by `tables` (name -> rows)."""
    lakehouse = LakehouseResource(data_dir=str(tmp_path))
    for name, rows in ({"movies": MOVIES, "ratings": RATINGS, "links": LINKS} | tables).items():
        write_deltalake(lakehouse.table(f"silver.{name}").uri, rows)
    return lakehouse


def outcome(check, lakehouse) -> tuple[bool, dict]:
    result = check(lakehouse=lakehouse)
    return result.passed, {key: value.value for key, value in result.metadata.items()}


def unique_key_check(table: str):
    return next(c for c in silver_checks if next(iter(c.check_keys)).name == f"{table}_unique_key")


def test_every_check_passes_on_clean_tables(tmp_path):
    lakehouse = lakehouse_with(tmp_path)
    assert all(outcome(check, lakehouse)[0] for check in silver_checks)


@pytest.mark.parametrize(("table", "rows"), [
    ("movies", pa.concat_tables([MOVIES, MOVIES.slice(0, 1)])),
    ("ratings", pa.concat_tables([RATINGS, RATINGS.slice(2, 1).set_column(2, "rating", pa.array([3.0]))])),
    ("links", pa.concat_tables([LINKS, LINKS.slice(1, 1)])),
])
def test_unique_keys_fail_on_a_repeated_key(tmp_path, table, rows):
    assert outcome(unique_key_check(table), lakehouse_with(tmp_path, **{table: rows})) == (
        False, {"duplicate_keys": 1})


def test_ratings_off_the_half_star_scale_fail(tmp_path):
    bad = pa.table({"user_id": pa.array([1, 2, 3, 4, 5], pa.int32()), "movie_id": pa.array([1] * 5, pa.int32()),
                    "rating": [4.2, 0.0, 5.5, None, 3.5]})
    assert outcome(ratings_on_half_star_scale, lakehouse_with(tmp_path, ratings=bad)) == (
        False, {"invalid_ratings": 4})


def test_a_rating_of_an_unknown_movie_fails(tmp_path):
    orphan = pa.concat_tables([RATINGS, pa.table({"user_id": pa.array([3], pa.int32()),
                                                  "movie_id": pa.array([99], pa.int32()), "rating": [3.0]})])
    assert outcome(ratings_movies_exist, lakehouse_with(tmp_path, ratings=orphan)) == (
        False, {"ratings_with_unknown_movie": 1})


def test_an_hour_whose_outcomes_do_not_add_up_to_bronze_fails(tmp_path):
    """reconciles_with_bronze counts both tables from their Delta logs, whatever the run itself counted."""
    lakehouse = LakehouseResource(data_dir=str(tmp_path))
    hours = ["2026-11-23-12:00", "2026-11-23-13:00"]
    write_deltalake(lakehouse.table("bronze.events").uri, pa.table(
        {"offset": list(range(5)), "hour": ["2026-11-23-12"] * 3 + ["2026-11-23-13"] * 2}), partition_by=["hour"])
    outcomes = lakehouse.table("silver.event_outcomes").uri
    write_deltalake(outcomes, pa.table({"offset": list(range(5)), "rejected": [False, False, True, False, True],
                                        "hour": ["2026-11-23-12"] * 3 + ["2026-11-23-13"] * 2}),
                    partition_by=["hour", "rejected"])
    assert outcome(lambda lakehouse: reconciliation(lakehouse, hours, 0, 0), lakehouse) == (True, {
        "bronze": 5, "silver": 3, "rejected": 2, "bronze_version": 0, "silver_version": 0, "unbalanced_hours": "none"})
    # A rerun of hour 13 that lost a record: its dead-letter row is gone from version 1.
    write_deltalake(outcomes, pa.table({"offset": [3], "rejected": [False], "hour": ["2026-11-23-13"]}),
                    mode="overwrite", predicate="hour = '2026-11-23-13'", partition_by=["hour", "rejected"])
    assert outcome(lambda lakehouse: reconciliation(lakehouse, hours, 0, 1), lakehouse) == (False, {
        "bronze": 5, "silver": 3, "rejected": 1, "bronze_version": 0, "silver_version": 1,
        "unbalanced_hours": "2026-11-23-13:00 (bronze 2, silver 1, rejected 0)"})
