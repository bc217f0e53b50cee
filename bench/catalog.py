"""How the DuckDB catalog should read Delta tables: `delta_scan` views (the extension reads the current snapshot at
query time) against views over the file list of a snapshot taken by the `deltalake` package (plain Parquet reads,
re-pointed after every commit), on the query of `reco-assets recommend`.

Builds gold.recommendations shaped like the 25M graph's (`--users` × 20 rows, default 162,541 users), committed
`--versions` times, then measures, each in a fresh process `--repeat` times (median):
- cold: open the catalog read-only, (load the extension,) run one user's recommendations, as the CLI does;
- warm: the same query again and again on one open connection, as a server would (median of 200);
and, for the file-list catalog, what keeping it current costs per commit (listing the snapshot's files with
`deltalake` and re-creating the view).

    .venv/bin/python bench/catalog.py [--users 162541] [--versions 10] [--repeat 15] [--out FILE]
"""

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from report import write_results  # noqa: E402

QUERY = ("SELECT rank, movie_id, title, year, round(score, 4) AS score, model_version FROM gold.recommendations "
         "WHERE user_id = ? ORDER BY rank LIMIT 10")

PROBE = """
import json, sys, time
t0 = time.perf_counter()
import duckdb
con = duckdb.connect(sys.argv[1], read_only=True, config={"autoinstall_known_extensions": False,
                                                          "autoload_known_extensions": sys.argv[2] == "delta"})
rows = con.execute(sys.argv[3], [4242]).fetchall()
cold = time.perf_counter() - t0
warm = []
for user in range(1, 201):
    t = time.perf_counter()
    con.execute(sys.argv[3], [user * 97 % 150000 + 1]).fetchall()
    warm.append(time.perf_counter() - t)
warm.sort()
print(json.dumps({"cold": cold, "warm_p50": warm[100], "warm_p99": warm[197], "rows": len(rows)}))
"""


def build(work: Path, users: int, versions: int) -> str:
    from dagster_pyspark.resources import spark_session_from_config
    from pyspark.sql import functions as F

    from reco_assets.lakehouse import LakehouseResource
    from reco_assets.resources import spark_config

    spark = spark_session_from_config(spark_config(remote=False))
    table = LakehouseResource(data_dir=str(work)).table("gold.recommendations")
    rows = spark.range(users * 20).select(
        (F.col("id") / 20 + 1).cast("int").alias("user_id"), (F.col("id") % 20 + 1).cast("int").alias("rank"),
        (F.col("id") * 7919 % 60000).cast("int").alias("movie_id"), F.rand(1).cast("float").alias("score"),
        F.lit("A movie title").alias("title"), F.lit(2001).alias("year"))
    for version in range(versions):
        table.overwrite(rows.withColumn("model_version", F.lit(f"v{version}")).orderBy("user_id", "rank"))
    spark.stop()
    return table.uri


def probe(warehouse: Path, kind: str, repeat: int) -> dict:
    runs = [json.loads(subprocess.run([sys.executable, "-c", PROBE, str(warehouse), kind, QUERY], check=True,
                                      capture_output=True, text=True).stdout) for _ in range(repeat)]
    return {key: statistics.median(r[key] for r in runs) for key in ("cold", "warm_p50", "warm_p99")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=162_541)
    parser.add_argument("--versions", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import duckdb
    from deltalake import DeltaTable

    from reco_assets.lakehouse import duck

    work = Path(tempfile.mkdtemp(prefix="reco-catalog-bench-"))
    try:
        uri = build(work, args.users, args.versions)
        delta_catalog, files_catalog = work / "delta_scan.duckdb", work / "file_list.duckdb"
        with duck.connect(str(delta_catalog)) as con:
            con.execute("CREATE SCHEMA gold")
            con.execute(f"CREATE VIEW gold.recommendations AS SELECT * FROM delta_scan('{uri}')")
        refresh = []
        for _ in range(args.repeat):  # what the file-list catalog costs after each commit
            t = time.perf_counter()
            files = DeltaTable(uri).file_uris()
            with duckdb.connect(str(files_catalog)) as con:
                con.execute("CREATE SCHEMA IF NOT EXISTS gold")
                con.execute(f"CREATE OR REPLACE VIEW gold.recommendations AS SELECT * FROM read_parquet("
                            f"[{', '.join(duck.sql_string(f) for f in files)}])")
            refresh.append(time.perf_counter() - t)
        results = {"delta_scan": probe(delta_catalog, "delta", args.repeat),
                   "file_list": probe(files_catalog, "parquet", args.repeat)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    d, f = results["delta_scan"], results["file_list"]
    lines = [
        f"- gold.recommendations of {args.users:,} users × 20 rows, {args.versions} versions; medians of "
        f"{args.repeat} fresh processes",
        f"- cold (open the catalog, first query, as `reco-assets recommend`): delta_scan {d['cold'] * 1000:.0f} ms, "
        f"file list {f['cold'] * 1000:.0f} ms → delta_scan costs **{d['cold'] / f['cold']:.2f}×**",
        f"- warm query on an open connection: delta_scan p50 {d['warm_p50'] * 1000:.1f} ms (p99 "
        f"{d['warm_p99'] * 1000:.1f}), file list p50 {f['warm_p50'] * 1000:.1f} ms (p99 {f['warm_p99'] * 1000:.1f})"
        f" → **{d['warm_p50'] / f['warm_p50']:.2f}×**",
        f"- keeping the file-list view current: {statistics.median(refresh) * 1000:.0f} ms per commit (list the "
        "snapshot with deltalake, re-create the view under the catalog's write lock); delta_scan views: none",
    ]
    print("\n".join(lines))
    if args.out:
        write_results(args.out, "DuckDB catalog over Delta", lines, "2 cores")


if __name__ == "__main__":
    main()
