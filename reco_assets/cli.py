"""`reco-assets`: query the lakehouse through the DuckDB catalog."""

import argparse
import csv
import json
import os
import sys
from pathlib import Path

import duckdb
from tabulate import tabulate

from reco_assets.catalog import with_lock_retry
from reco_assets.resources import DEFAULT_DATA_DIR


class CliError(Exception):
    """A problem the user can fix; printed as one line."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise CliError(f"{message} (see `{self.prog} --help`)")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer id") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a valid id (ids start at 1)")
    return value


def connect(data_dir: str) -> duckdb.DuckDBPyConnection:
    path = Path(data_dir).expanduser() / "warehouse.duckdb"
    if not path.is_file():
        raise CliError(f"no catalog at {path}: materialize the assets first (`make run`, then Materialize all)")
    return with_lock_retry(lambda: duckdb.connect(str(path), read_only=True))


def emit(columns: list[str], rows: list[tuple], fmt: str) -> None:
    if fmt == "json":
        print(json.dumps([dict(zip(columns, row, strict=True)) for row in rows], default=str, indent=2))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
    else:
        print(tabulate(rows, headers=columns, tablefmt="simple", floatfmt=".4f"))


def query(con: duckdb.DuckDBPyConnection, sql: str, params=()) -> tuple[list[str], list[tuple]]:
    cursor = con.execute(sql, params)
    return [d[0] for d in cursor.description], cursor.fetchall()


def cmd_sql(con, args) -> None:
    emit(*query(con, args.query), args.format)


def cmd_recommend(con, args) -> None:
    columns, rows = query(
        con,
        "SELECT rank, movie_id, title, year, round(score, 4) AS score, model_version AS source "
        "FROM gold.recommendations WHERE user_id = ? ORDER BY rank LIMIT ?",
        (args.user_id, args.k),
    )
    if not rows:
        has_history = query(con, "SELECT count(*) FROM silver.ratings WHERE user_id = ?", (args.user_id,))[1][0][0]
        reason = "no ALS recommendations yet" if has_history else "no history"
        print(f"user {args.user_id} has {reason}: popular movies (cold-start fallback)", file=sys.stderr)
        columns, rows = query(
            con,
            "SELECT row_number() OVER (ORDER BY p.rank) AS rank, p.movie_id, p.title, p.year, "
            "p.num_ratings AS score, 'popular' AS source FROM gold.popular_movies p "
            "WHERE p.movie_id NOT IN (SELECT movie_id FROM silver.ratings WHERE user_id = ?) "
            "ORDER BY p.rank LIMIT ?",
            (args.user_id, args.k),
        )
    emit(columns, rows, args.format)


def cmd_similar(con, args) -> None:
    found = query(con, "SELECT title FROM silver.movies WHERE movie_id = ?", (args.movie_id,))[1]
    if not found:
        raise CliError(f"movie {args.movie_id} is not in silver.movies")
    columns, rows = query(
        con,
        "SELECT rank, similar_movie_id AS movie_id, similar_title AS title, round(score, 4) AS cosine "
        "FROM gold.similar_movies WHERE movie_id = ? ORDER BY rank LIMIT ?",
        (args.movie_id, args.k),
    )
    if not rows:
        print(f"movie {args.movie_id} ({found[0][0]}) has no ALS factors (no ratings yet)", file=sys.stderr)
    emit(columns, rows, args.format)


def build_parser() -> Parser:
    parser = Parser(prog="reco-assets", description=__doc__)
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("RECO_DATA_DIR", DEFAULT_DATA_DIR),
        help="the data directory (default: $RECO_DATA_DIR or ./data)",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    def add(name: str, handler, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--format", choices=["table", "csv", "json"], default="table")
        sub.set_defaults(handler=handler)
        return sub

    add("sql", cmd_sql, "run a read-only SQL query against the catalog").add_argument("query")
    recommend = add("recommend", cmd_recommend, "top movies for a user (popular movies for a new user)")
    recommend.add_argument("user_id", type=positive_int)
    recommend.add_argument("--k", type=positive_int, default=10)
    similar = add("similar", cmd_similar, "movies most similar to a movie")
    similar.add_argument("movie_id", type=positive_int)
    similar.add_argument("--k", type=positive_int, default=10)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        with connect(args.data_dir) as con:
            args.handler(con, args)
    except CliError as exc:
        print(f"reco-assets: error: {exc}", file=sys.stderr)
        return 2
    except duckdb.Error as exc:
        print(f"reco-assets: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
