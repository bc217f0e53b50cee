"""`reco-assets`: query the lakehouse, serve it over HTTP, run the local Kafka broker and Spark Connect server,
produce events."""

import argparse
import os
import sys
import warnings

import duckdb

from reco_assets.cli import events, query, services
from reco_assets.cli.common import CliError, Parser, connect
from reco_assets.lakehouse import DEFAULT_DATA_DIR


def build_parser() -> Parser:
    parser = Parser(prog="reco-assets", description=__doc__)
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("RECO_DATA_DIR", DEFAULT_DATA_DIR),
        help="the data directory (default: $RECO_DATA_DIR or ./data)",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    def add(name: str, handler, help_text: str, catalog: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if catalog:
            sub.add_argument("--format", choices=["table", "csv", "json"], default="table")
        sub.set_defaults(handler=handler, catalog=catalog)
        return sub

    for commands_of in (query, services, events):
        commands_of.register(add)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Dagster marks some of the asset options the project uses as beta; a CLI user cannot act on that.
    warnings.filterwarnings("ignore", message=r".* is currently in beta")
    try:
        args = build_parser().parse_args(argv)
        if args.catalog:
            with connect(args.data_dir) as con:
                args.handler(con, args)
        else:
            args.handler(args)
    except CliError as exc:
        print(f"reco-assets: error: {exc}", file=sys.stderr)
        return 2
    except duckdb.Error as exc:
        print(f"reco-assets: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
