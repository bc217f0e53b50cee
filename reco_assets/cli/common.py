"""What every command shares: one-line errors, argument types, output formats and the read-only catalog."""

import argparse
import csv
import json
import sys

import duckdb
from tabulate import tabulate

from reco_assets.lakehouse import LakehouseResource, duck, storage


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


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be greater than 0")
    return value


def connect(data_dir: str) -> duckdb.DuckDBPyConnection:
    """The catalog, read-only: its views read the lakehouse (local or on S3), and nothing else."""
    lakehouse = LakehouseResource(data_dir=data_dir)
    if not lakehouse.warehouse_path.is_file():
        raise CliError(f"no catalog at {lakehouse.warehouse_path}: materialize the assets first (`make run`, then "
                       "Materialize all)")
    try:
        storage.check(lakehouse.location)
    except storage.StorageError as error:
        raise CliError(str(error)) from None
    return duck.connect_read_only(str(lakehouse.warehouse_path), [storage.s3_uri(lakehouse.location)])


def emit(columns: list[str], rows: list[tuple], fmt: str) -> None:
    if fmt == "json":
        print(json.dumps([dict(zip(columns, row, strict=True)) for row in rows], default=str, indent=2))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
    else:
        print(tabulate(rows, headers=columns, tablefmt="simple", floatfmt=".4f"))
