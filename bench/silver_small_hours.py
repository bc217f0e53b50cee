"""A silver hour rebuilt in memory (`rebuild_in_memory`: the contract check by Arrow for records of the common form
and one Spark query for the rest, the duplicate rules in memory, one delta-rs commit) against the same hour rebuilt
by Spark jobs (`materialize_hour`'s path for large hours: local checkpoint, duplicate search, Spark's Delta commit),
alternating in one process, for hours of several sizes. The dedupe window holds `--history-hours` ×
`--history-events` accepted events, and the hour replays 0.5 % of them (as `bench/silver_events.py` builds it).
Both ways must give the same rows; the ratio says where the RECO_SILVER_IN_MEMORY_RECORDS threshold belongs.

    .venv/bin/python bench/silver_small_hours.py [--sizes 3000,30000,100000,300000] [--history-hours 24]
                                                 [--history-events 100000] [--repeat 3] [--connect] [--out FILE]

With `--connect`, both ways run as a client of a Spark Connect server the script starts (as `make run` runs them).
"""

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
from dagster_pyspark.resources import spark_session_from_config
from report import write_results  # a script beside this one
from silver_events import HOUR, build_history, build_hour  # a script beside this one; puts the project on the path

from reco_assets.lakehouse import LakehouseResource
from reco_assets.resources import spark_config
from reco_assets.services import ConnectServer, free_port
from reco_assets.silver import events as silver_events

WAYS = {"in memory": str(sys.maxsize), "by Spark jobs": "-1"}  # RECO_SILVER_IN_MEMORY_RECORDS for each way


def hour_rows(lakehouse: LakehouseResource, version: int) -> pa.Table:
    """The hour's rows at `version`, in the order of their Kafka coordinates."""
    rows = lakehouse.table("silver.event_outcomes").arrow([HOUR], version)
    return rows.sort_by([(c, "ascending") for c in ("topic", "partition", "offset")]).combine_chunks()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="3000,30000,100000,300000")
    parser.add_argument("--history-hours", type=int, default=24)
    parser.add_argument("--history-events", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--connect", action="store_true", help="run over a Spark Connect server started for it")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="reco-silver-small-"))
    lakehouse = LakehouseResource(data_dir=str(work))
    server = None
    if args.connect:
        (work / "connect").mkdir()
        server = ConnectServer(work / "connect", port=free_port())
        server.up(log=lambda message: print(message, file=sys.stderr))
        os.environ["SPARK_REMOTE"] = server.url
    spark = spark_session_from_config(spark_config(remote=args.connect))
    lines, problems = [], []
    try:
        build_history(spark, lakehouse, args.history_hours, args.history_events)
        history = args.history_hours * args.history_events
        for size in (int(s) for s in args.sizes.split(",")):
            build_hour(spark, lakehouse, size, 0.005, history)
            times, rows = {way: [] for way in WAYS}, {}
            for limit in WAYS.values():  # warm-up, both ways
                os.environ[silver_events.IN_MEMORY_RECORDS_SETTING] = limit
                silver_events.materialize_hour(HOUR, lakehouse, spark)
            for round_ in range(args.repeat):
                for way in (list(WAYS) if round_ % 2 == 0 else list(reversed(WAYS))):
                    os.environ[silver_events.IN_MEMORY_RECORDS_SETTING] = WAYS[way]
                    t0 = time.perf_counter()
                    counts = silver_events.materialize_hour(HOUR, lakehouse, spark)
                    times[way].append(time.perf_counter() - t0)
                    rows[way] = hour_rows(lakehouse, counts["version"])
                    print(f"  {size:,} events, pass {round_ + 1}, {way}: {times[way][-1]:.2f} s", flush=True)
            same = rows["in memory"].equals(rows["by Spark jobs"])
            if not same:
                problems.append(f"{size:,} events: the two ways wrote different rows")
            memory, jobs = (min(times[w]) for w in WAYS)
            median = statistics.median(times["by Spark jobs"]) / statistics.median(times["in memory"])
            line = (f"- hour of {size:,} events (best of {args.repeat}): in memory {memory:.2f} s "
                    f"({size / memory:,.0f} ev/s), by Spark jobs {jobs:.2f} s ({size / jobs:,.0f} ev/s) → in memory "
                    f"**{jobs / memory:.2f}×** as fast (medians {median:.2f}×; "
                    f"rows {'identical' if same else 'DIFFERENT'}; all passes: "
                    f"{ {w: [round(t, 2) for t in ts] for w, ts in times.items()} }; the Python process's peak so far "
                    f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB)")
            print(line, flush=True)
            lines.append(line)
    finally:
        spark.stop()
        if server is not None:
            server.down(log=lambda message: print(message, file=sys.stderr))
        shutil.rmtree(work, ignore_errors=True)
    if args.out:
        write_results(args.out, "silver hours rebuilt in memory or by Spark jobs", lines,
                      f"2 cores, {'Spark Connect' if args.connect else 'local Spark'}; window "
                      f"{args.history_hours} h × {args.history_events:,} events")
    for problem in problems:
        print(problem, file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
