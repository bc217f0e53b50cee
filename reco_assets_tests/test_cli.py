"""`reco-assets` against the catalog of the materialized batch graph."""

import csv
import io
import json
import subprocess
import sys

import pytest

from reco_assets.cli import main
from reco_assets.lakehouse import LakehouseResource, duck

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
        (["stats"], "silver.events is not materialized yet: materialize silver_events"),
    ],
)
def test_errors_are_one_line(cli, capsys, args, message):
    code, out, err = cli(capsys, *args)
    assert code != 0 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err


def test_sql_reads_the_catalogs_views_over_delta_tables_and_landed_files(cli, capsys):
    code, out, _ = cli(capsys, "sql", "WITH r AS (SELECT count(*) AS n FROM bronze.movielens_ratings) "
                       "SELECT n, (SELECT count(*) FROM silver.ratings) AS silver FROM r", "--format", "json")
    assert code == 0 and json.loads(out) == [{"n": 100836, "silver": 100836}]
    for read in ("DESCRIBE gold.recommendations", "SHOW ALL TABLES", "EXPLAIN SELECT * FROM gold.popular_movies",
                 "SUMMARIZE silver.movies", "FROM gold.popular_movies LIMIT 1"):
        code, out, err = cli(capsys, "sql", read)
        assert code == 0 and out and not err, (read, err)


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ("SELECT column0 FROM read_csv('/etc/passwd', header=false, sep=':')", "read_csv() reads outside"),
        ("SELECT * FROM read_text('{lakehouse}/bronze/movielens/_manifest.json')", "read_text() reads outside"),
        ("SELECT * FROM '{lakehouse}/bronze/movielens/_manifest.json'", "is a file, not a view"),
        ("SELECT (SELECT count(*) FROM read_parquet('{lakehouse}/gold/popular_movies/*.parquet'))",
         "read_parquet() reads outside"),
        ("COPY (SELECT 42 AS x) TO '{tmp}/x.csv'", "COPY does not run here"),
        ("COPY (SELECT 42 AS x) TO '{lakehouse}/gold/popular_movies/x.parquet'", "COPY does not run here"),
        ("EXPLAIN COPY (SELECT 42 AS x) TO '{tmp}/x.csv'", "COPY does not run here"),
        ("ATTACH '{tmp}/other.duckdb' (READ_WRITE)", "ATTACH does not run here"),
        ("INSTALL httpfs", "INSTALL does not run here"),
        ("LOAD httpfs", "LOAD does not run here"),
        ("SET enable_external_access = true", "SET does not run here"),
        ("PRAGMA threads = 1", "PRAGMA does not run here"),
        ("EXPORT DATABASE '{tmp}/export'", "EXPORT does not run here"),
        ("CALL pragma_version()", "CALL does not run here"),
        ("SELECT 1; SELECT 2", "one statement at a time, got 2"),
        ("SELECT * FROM query('SELECT 1')", "query() reads outside"),
    ],
)
def test_sql_refuses_anything_but_reading_the_catalog(cli, capsys, batch_graph, tmp_path, statement, message):
    lakehouse = batch_graph[1].resolve() / "lakehouse"
    before = sorted(p for p in lakehouse.rglob("*"))
    code, out, err = cli(capsys, "sql", statement.format(lakehouse=lakehouse, tmp=tmp_path))
    assert code == 2 and out == "", out
    assert err.startswith("reco-assets: error: ") and len(err.strip().splitlines()) == 1 and message in err, err
    assert list(tmp_path.iterdir()) == [] and sorted(p for p in lakehouse.rglob("*")) == before


READER = """
import sys, io, contextlib
from reco_assets.cli import main
from reco_assets.lakehouse import LakehouseResource, duck
answers = []
for _ in range(int(sys.argv[2])):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["--data-dir", sys.argv[1], "sql", "SELECT count(*) AS n FROM gold.popular_movies", "--format",
                     "csv"])
    answers.append(f"{code}:{out.getvalue().split()[-1] if code == 0 else ''}")
print(" ".join(answers))
"""


def test_a_reader_gets_answers_while_the_pipeline_rebuilds_the_catalog(batch_graph):
    """Another process queries through the CLI while duckdb_catalog's rebuild (one writer) runs over and over:
    every query answers, from a whole catalog."""
    _, data_dir = batch_graph
    expected = duckdb_count(data_dir, "gold.popular_movies")
    reader = subprocess.Popen([sys.executable, "-c", READER, str(data_dir), "15"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    lakehouse = LakehouseResource(data_dir=str(data_dir))
    rebuilds = 0
    while reader.poll() is None and rebuilds < 50:
        created, missing = lakehouse.refresh_catalog()
        assert "gold.popular_movies" in created and "gold.popular_movies" not in missing
        rebuilds += 1
    out, err = reader.communicate(timeout=300)
    assert reader.returncode == 0, err[-2000:]
    assert out.split() == [f"0:{expected}"] * 15, (out, err[-2000:])
    assert rebuilds >= 2


def duckdb_count(data_dir, view: str) -> int:
    with duck.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as con:
        return con.execute(f"SELECT count(*) FROM {view}").fetchone()[0]


def test_missing_catalog_is_explained(tmp_path, capsys):
    code = main(["--data-dir", str(tmp_path), "sql", "SELECT 1"])
    err = capsys.readouterr().err
    assert code == 2 and "no catalog at" in err and "materialize the assets first" in err
