"""Benchmark: Spark ALS training with native BLAS (OpenBLAS, installed by the set-up) against pure-Java BLAS.

Trains the project's default ALS (ALSConfig) twice per mode on the bundled sample's ratings, or on the
silver ratings of a data directory given with --ratings, each mode in a fresh JVM, and prints warm
training times and the ratio java / native.

    .venv/bin/python bench/als_blas.py --ratings /path/to/lakehouse/silver/ratings   # a Delta table
"""

import argparse
import json
import subprocess
import sys
import time

JAVA_ONLY = "-Ddev.ludovic.netlib.blas.nativeLib=libnone.so -Ddev.ludovic.netlib.lapack.nativeLib=libnone.so"


def train(mode: str, ratings: str | None) -> dict:
    from dagster_pyspark.resources import spark_session_from_config

    from reco_assets.gold.als import ALSConfig
    from reco_assets.resources import spark_config

    config = spark_config()
    if mode == "java":
        config["spark.driver.extraJavaOptions"] = JAVA_ONLY
    spark = spark_session_from_config(config)
    spark.sparkContext.setLogLevel("ERROR")
    if ratings:
        df = spark.read.format("delta").load(ratings)
    else:
        from reco_assets.bronze.movielens import BUNDLED_SAMPLE
        from reco_assets.silver import transforms

        df = transforms.ratings(transforms.read_movielens_csv(spark, BUNDLED_SAMPLE, "ratings"))
    df = df.cache()
    n = df.count()
    times = []
    for _ in range(3):
        started = time.perf_counter()
        ALSConfig().als().fit(df).userFactors.count()
        times.append(time.perf_counter() - started)
    blas = spark._jvm.dev.ludovic.netlib.blas.BLAS.getInstance().getClass().getName()
    return {"mode": mode, "ratings": n, "seconds": times, "blas": blas}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ratings", help="a silver ratings Parquet folder (default: the bundled sample)")
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(train(args.mode, args.ratings)))
        return
    results = {}
    for mode in ("native", "java"):
        cmd = [sys.executable, __file__, "--mode", mode] + (["--ratings", args.ratings] if args.ratings else [])
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results[mode] = json.loads(out.strip().splitlines()[-1])
        warm = min(results[mode]["seconds"][1:])
        print(f"{mode:6s} {results[mode]['blas']:40s} warm fit {warm:6.1f} s on {results[mode]['ratings']:,} ratings")
    ratio = min(results["java"]["seconds"][1:]) / min(results["native"]["seconds"][1:])
    print(f"native BLAS speed-up: {ratio:.2f}x")


if __name__ == "__main__":
    main()
