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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["recommend", "abc"], "'abc' is not an integer id"),
        (["recommend", "0"], "0 is not a valid id"),
        (["similar", "99999999"], "movie 99999999 is not in silver.movies"),
        (["sql", "SELEC 1"], "syntax error"),
        (["sql", "DROP VIEW silver.movies"], "read-only"),
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
