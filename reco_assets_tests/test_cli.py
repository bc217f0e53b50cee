"""`reco-assets` against the catalog of the materialized batch graph."""

import csv
import io
import json

import pytest

from reco_assets.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cli(batch_graph):
    _, data_dir = batch_graph

    def run(capsys, *args):
        code = main(["--data-dir", str(data_dir), *args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_recommend_known_user_with_titles(cli, capsys):
    code, out, _ = cli(capsys, "recommend", "1", "--k", "5", "--format", "json")
    rows = json.loads(out)
    assert code == 0 and [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    assert all(r["title"] and r["source"].startswith("als-") for r in rows)


def test_recommend_new_user_falls_back_to_popular(cli, capsys):
    code, out, err = cli(capsys, "recommend", "999999", "--k", "3", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0
    assert "no history" in err and "cold-start fallback" in err
    assert [r["movie_id"] for r in rows] == ["356", "318", "296"]
    assert {r["source"] for r in rows} == {"popular"}


def test_similar_movies(cli, capsys):
    code, out, _ = cli(capsys, "similar", "1", "--k", "4")
    assert code == 0
    assert len(out.strip().splitlines()) == 2 + 4  # header, rule, four rows


def test_sql_table_output(cli, capsys):
    code, out, _ = cli(capsys, "sql", "SELECT count(*) AS ratings FROM silver.ratings")
    assert code == 0 and "100836" in out


def test_trending_without_events_falls_back_to_popular_movies_of_the_genre(cli, capsys):
    code, out, err = cli(capsys, "trending", "--genre", "Comedy", "--limit", "3", "--format", "json")
    rows = json.loads(out)
    assert code == 0 and "nothing is trending" in err and "popular movies (fallback)" in err
    assert [r["rank"] for r in rows] == [1, 2, 3] and {r["source"] for r in rows} == {"popular"}
    code, out, _ = cli(capsys, "sql", "SELECT p.movie_id FROM gold.popular_movies p JOIN silver.movies m "
                       "USING (movie_id) WHERE list_contains(m.genres, 'Comedy') ORDER BY p.rank LIMIT 3",
                       "--format", "json")
    assert [r["movie_id"] for r in rows] == [r["movie_id"] for r in json.loads(out)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["recommend", "abc"], "'abc' is not an integer id"),
        (["recommend", "0"], "0 is not a valid id"),
        (["similar", "99999999"], "movie 99999999 is not in silver.movies"),
        (["sql", "SELEC 1"], "syntax error"),
        (["sql", "DROP VIEW silver.movies"], "read-only"),
        (["trending", "--genre", "Nope"], "no genre 'Nope'; genres: Action, Adventure"),
        (["stats"], "no events in the lakehouse yet"),
    ],
)
def test_errors_are_one_line(cli, capsys, args, message):
    code, out, err = cli(capsys, *args)
    assert code != 0 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err


def test_missing_catalog_is_explained(tmp_path, capsys):
    code = main(["--data-dir", str(tmp_path), "sql", "SELECT 1"])
    err = capsys.readouterr().err
    assert code == 2 and "no catalog at" in err and "materialize the assets first" in err
