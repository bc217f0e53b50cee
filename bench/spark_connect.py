"""Benchmark: a fresh-process, Dagster-style Spark run with its own local Spark against the same over a warm Spark
Connect server (`reco_assets.services.spark_connect`).

Each run is a new interpreter, as every Dagster run is: it imports the project's resources (and so Dagster), gets its
session from dagster-pyspark's builder with `spark_config()`, and runs a small query (ratings per movie of the bundled
MovieLens sample, top 10). Local runs start `local[*]` themselves; Connect runs set `SPARK_REMOTE`. The modes
alternate; the figure is the ratio of the median wall times of the whole process.

    .venv/bin/python bench/spark_connect.py --runs 3              # starts (and stops) its own server
    .venv/bin/python bench/spark_connect.py --remote sc://127.0.0.1:15002   # or use a running one
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

RATINGS = "ratings.csv"


def run_once() -> dict:
    """The child: what one Dagster run process does with Spark."""
    started = time.perf_counter()
    from dagster_pyspark.resources import spark_session_from_config

    from reco_assets.bronze.movielens import BUNDLED_SAMPLE
    from reco_assets.resources import spark_config

    imported = time.perf_counter()
    spark = spark_session_from_config(spark_config())
    session = time.perf_counter()
    top = (spark.read.option("header", True).csv(str(BUNDLED_SAMPLE / RATINGS))
           .groupBy("movieId").count().orderBy("count", ascending=False).limit(10).collect())
    done = time.perf_counter()
    return {"import_s": imported - started, "session_s": session - imported, "query_s": done - session,
            "top_movie": top[0]["movieId"], "mode": "connect" if "SPARK_REMOTE" in os.environ else "local"}


def child(remote: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED")}
    if remote:
        env["SPARK_REMOTE"] = remote
    started = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--child"], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"the {'connect' if remote else 'local'} run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1]) | {"wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs per mode (default 3)")
    parser.add_argument("--remote", help="an sc:// URL of a running server (default: start one for the benchmark)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_once()))
        return

    from reco_assets.services import ConnectServer, free_port

    server, remote = None, args.remote
    with tempfile.TemporaryDirectory(prefix="bench-connect-") as home:
        try:
            if remote is None:
                server = ConnectServer(home, port=free_port())
                started = time.perf_counter()
                server.up(log=lambda message: print(message, file=sys.stderr))
                print(f"server start (to a query answered over sc://): {time.perf_counter() - started:.1f} s")
                remote = server.url
            results = {"local": [], "connect": []}
            child(remote)  # warm the server's first-query paths (and the OS file cache) once, not counted
            for _ in range(args.runs):
                results["local"].append(child(None))
                results["connect"].append(child(remote))
        finally:
            if server is not None:
                server.down(log=lambda message: print(message, file=sys.stderr))

    print(f"\n{args.runs} fresh-process runs per mode, medians in seconds (wall = the whole process):\n")
    print("| mode | wall | imports | session | query |")
    print("|---|---|---|---|---|")
    medians = {}
    for mode, runs in results.items():
        m = {key: statistics.median(r[key] for r in runs) for key in ("wall_s", "import_s", "session_s", "query_s")}
        medians[mode] = m
        print(f"| {mode} | {m['wall_s']:.2f} | {m['import_s']:.2f} | {m['session_s']:.2f} | {m['query_s']:.2f} |")
    assert {r["top_movie"] for runs in results.values() for r in runs} == {results["local"][0]["top_movie"]}
    print(f"\nwall time local / connect: {medians['local']['wall_s'] / medians['connect']['wall_s']:.1f}x "
          f"(all runs: local {[round(r['wall_s'], 2) for r in results['local']]}, "
          f"connect {[round(r['wall_s'], 2) for r in results['connect']]})")


if __name__ == "__main__":
    main()
