"""The read-only catalog connection: real DuckDB over a real Delta table (written with `deltalake`)."""

import duckdb
import pyarrow as pa
import pytest
from deltalake import write_deltalake

from reco_assets.lakehouse import duck


@pytest.fixture
def catalog(tmp_path):
    """A catalog with a view over a Delta table and one over a CSV file, both below `lake/`."""
    lake = tmp_path / "lake"
    write_deltalake(str(lake / "t"), pa.table({"a": [1, 2, 3]}))
    (lake / "f.csv").write_text("b\n7\n")
    (tmp_path / "outside.csv").write_text("secret\n1\n")
    with duck.connect(str(tmp_path / "w.duckdb")) as con:
        con.execute("CREATE SCHEMA g")
        con.execute(f"CREATE VIEW g.t AS SELECT * FROM delta_scan('{lake / 't'}')")
        con.execute(f"CREATE VIEW g.f AS SELECT * FROM read_csv('{lake / 'f.csv'}')")
    with duck.connect_read_only(str(tmp_path / "w.duckdb"), [str(lake)]) as con:
        yield con, tmp_path


def run(con, sql):
    duck.check_read_only(con, sql)
    return con.execute(sql).fetchall()


def test_views_over_delta_and_files_read(catalog):
    con, _ = catalog
    assert run(con, "SELECT sum(a) FROM g.t") == [(6,)]
    assert run(con, "WITH x AS (SELECT * FROM g.f) SELECT b FROM x") == [(7,)]
    assert run(con, "SELECT count(*) FROM range(4)") == [(4,)]
    assert run(con, "EXPLAIN ANALYZE SELECT * FROM g.t")


def test_the_connection_itself_refuses_files_and_settings(catalog):
    """Even a statement that got past the check could not read a file outside the lakehouse or change a setting."""
    con, tmp_path = catalog
    with pytest.raises(duckdb.PermissionException):
        con.execute(f"SELECT * FROM read_csv('{tmp_path / 'outside.csv'}')").fetchall()
    with pytest.raises(duckdb.InvalidInputException, match="locked"):
        con.execute("SET enable_external_access = true")
    with pytest.raises(duckdb.PermissionException):
        con.execute("LOAD httpfs")


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT * FROM read_csv('{tmp}/outside.csv')", "read_csv() reads outside"),
        ("SELECT * FROM '{tmp}/lake/f.csv'", "is a file, not a view"),
        ("SELECT * FROM g.t WHERE a IN (SELECT * FROM glob('/etc/*'))", "glob() reads outside"),
        ("COPY g.t TO '{tmp}/lake/t/x.parquet'", "COPY does not run here"),
        ("SET threads = 1", "SET does not run here"),
        ("SELECT 1; DROP VIEW g.t", "one statement at a time"),
        ("PRAGMA version", "pragma_version() reads outside"),
    ],
)
def test_refusals_name_the_reason(catalog, sql, message):
    con, tmp_path = catalog
    with pytest.raises(duck.RefusedQuery) as refused:
        duck.check_read_only(con, sql.format(tmp=tmp_path))
    assert message in str(refused.value)
    assert not (tmp_path / "lake" / "t" / "x.parquet").exists()
