"""What bronze's write costs, part by part, on the same rows: plain Parquet, a new Delta table, and bronze's own
replace of an hour in a table that already holds others; no broker, so only the writes are timed.

The rows are one hour of generated events shaped as bronze.events (topic, partition, offset, timestamp, key, value,
hour), held by Spark (a local checkpoint), so every write reads them the same way. Each write's cost is its time
less the time of reading the rows into a `noop` sink, and is printed as a ratio to plain Parquet's cost (the
baseline, in the same script). After a cold first round the writes alternate, best of `--rounds` each:

  noop             the rows read, nothing written
  parquet          into a new folder, partitioned by hour (Spark's Parquet writer, the floor of any Delta write)
  parquet, lean    the same without page checksums, column statistics or dictionaries
  delta, new       into a new Delta table with bronze.events' partitioning and properties
  bronze replace   `Table.replace_hours` of bronze.events (replaceWhere of the hour, one commit, the DuckDB views),
                   into a table that already holds `--hours` other hours
  bronze replace, 10 rows   the same with 10 rows, in the next hour: the replace's fixed cost
  bronze append, 10 rows    10 rows added to an hour by Spark (a blind append: no file list of the table to rebuild)
  ranges commit    bronze.event_ranges' replace of the hour (delta-rs), the run's second commit

    .venv/bin/python bench/delta_write.py [--events 1000000] [--hours 24] [--out bench/results/delta_write.md]
"""

import argparse
import itertools
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
from dagster_pyspark.resources import spark_session_from_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reco_assets.bronze.events import range_rows  # noqa: E402
from reco_assets.bronze.movielens import BUNDLED_SAMPLE  # noqa: E402
from reco_assets.events.generator import EventGenerator, load_population  # noqa: E402
from reco_assets.kafka.client import EVENT_TOPICS, TOPIC_PARTITIONS  # noqa: E402
from reco_assets.lakehouse import LakehouseResource  # noqa: E402
from reco_assets.lakehouse.hours import HOUR_COLUMN, hour_key, hour_start, hour_value  # noqa: E402
from reco_assets.resources import spark_config  # noqa: E402

LEAN_PARQUET = {"parquet.page.write-checksum.enabled": "false", "parquet.column.statistics.enabled": "false",
                "parquet.enable.dictionary": "false"}


def bronze_rows(generator: EventGenerator, n: int, partition_key: str) -> pa.Table:
    """n generated events as bronze.events rows of one hour."""
    batch = generator.batch(n)
    stamp = hour_start(partition_key)
    return pa.table({
        "topic": pa.array(batch.topics, pa.string()),
        "partition": pa.array([i % 3 for i in range(n)], pa.int32()),
        "offset": pa.array(range(n), pa.int64()),
        "timestamp": pa.array([stamp] * n, pa.timestamp("us", tz="UTC")),
        "key": pa.array(batch.keys, pa.binary()),
        "value": pa.array(batch.values, pa.binary()),
        HOUR_COLUMN: pa.array([hour_value(partition_key)] * n, pa.string()),
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--hours", type=int, default=24, help="hours bronze.events holds before the replaced one")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, help="also write the results as Markdown here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="reco-delta-write-"))
    spark = None
    try:
        lakehouse = LakehouseResource(data_dir=str(work))
        events, ranges = lakehouse.table("bronze.events"), lakehouse.table("bronze.event_ranges")
        spark = spark_session_from_config(spark_config(remote=False))
        generator = EventGenerator(load_population(work, BUNDLED_SAMPLE), seed=1)
        now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        key, next_key = hour_key(now), hour_key(now + timedelta(hours=1))  # the 1M rows' hour, the 10 rows'

        def held(rows: pa.Table):
            """The rows in Spark, one partition per Kafka partition, as bronze's read splits them."""
            split = len(EVENT_TOPICS) * TOPIC_PARTITIONS
            return spark.createDataFrame(rows).repartitionByRange(split, "topic", "partition").localCheckpoint(
                eager=True)

        for back in range(args.hours, 0, -1):  # the hours bronze already holds, 20,000 records each
            other = hour_key(now - timedelta(hours=back))
            events.replace_hours(held(bronze_rows(generator, 20_000, other)), [other])
        rows = held(bronze_rows(generator, args.events, key))
        ten = held(bronze_rows(generator, 10, next_key))
        hour_ranges = range_rows([(topic, p, 0, 1000, 1000, True, True, now, "bench", hour_value(key))
                                  for topic in EVENT_TOPICS for p in range(TOPIC_PARTITIONS)])
        spec = events.spec
        attempts = itertools.count()

        def new_path(name: str) -> str:
            return str(work / f"{name}-{next(attempts)}")

        writes = {
            "noop": lambda: rows.write.format("noop").mode("overwrite").save(),
            "parquet": lambda: rows.write.partitionBy(*spec.partition_by).parquet(new_path("parquet")),
            "parquet, lean": lambda: rows.write.partitionBy(*spec.partition_by).options(**LEAN_PARQUET).parquet(
                new_path("lean")),
            "delta, new": lambda: rows.write.format("delta").partitionBy(*spec.partition_by).options(
                **spec.properties).save(new_path("delta")),
            "bronze replace": lambda: events.replace_hours(rows, [key]),
            "bronze replace, 10 rows": lambda: events.replace_hours(ten, [next_key]),
            "bronze append, 10 rows": lambda: events.append_to_hour(ten, next_key),
            "ranges commit": lambda: ranges.replace_hours(hour_ranges, [key]),
        }
        seconds: dict[str, list[float]] = {name: [] for name in writes}
        for round_ in range(args.rounds + 1):  # round 0 warms the JVM and is not counted
            for name in writes if round_ % 2 else reversed(writes):
                started = time.perf_counter()
                writes[name]()
                if round_:
                    seconds[name].append(time.perf_counter() - started)
    finally:
        if spark is not None:
            spark.stop()
        shutil.rmtree(work, ignore_errors=True)

    best = {name: min(times) for name, times in seconds.items()}
    fixed = ("noop", "bronze replace, 10 rows", "bronze append, 10 rows", "ranges commit")
    cost = {name: best[name] if name in fixed else best[name] - best["noop"] for name in best}
    lines = [f"| write ({args.events:,} rows; fixed costs as measured) | best | all | cost | ÷ Parquet's cost |",
             "|---|---:|---|---:|---:|"]
    for name, times in seconds.items():
        ratio = "" if name in fixed else f"{cost[name] / cost['parquet']:.2f}×"
        lines.append(f"| {name} | {best[name]:.2f} s | {', '.join(f'{t:.2f}' for t in times)} | "
                     f"{cost[name]:.2f} s | {ratio} |")
    bronze_extra = best["bronze replace"] + best["ranges commit"] - best["noop"]
    lines.append("")
    lines.append(f"- cost is the time less reading the rows into `noop` ({best['noop']:.2f} s); the 10-row writes "
                 "and the ranges commit are shown whole, as fixed costs")
    state = best["bronze replace, 10 rows"] - best["bronze append, 10 rows"]
    lines.append(f"- replacing rather than appending 10 rows costs {state:.2f} s more: "
                 "the Spark jobs that rebuild the table's state to find the hour's files")
    lines.append(f"- bronze's two commits together cost {bronze_extra:.2f} s over reading the rows, "
                 f"{bronze_extra / cost['parquet']:.2f}× plain Parquet's write of the same rows")
    print("\n".join(lines), flush=True)
    if args.out:
        header = (f"# bronze's write, part by part ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {args.events:,} events, "
                  f"bronze.events holding {args.hours + 1} other hours, best of {args.rounds})\n\n")
        args.out.write_text(header + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
