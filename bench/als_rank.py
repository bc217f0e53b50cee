"""Benchmark: what ALS's rank costs and what it buys. Fit time at ranks 64 (the default), 48 and 32 on synthetic
MovieLens-shaped ratings, the ranks alternating, best of 2 each, as a ratio to rank 64 in the same script; then
ALS's nDCG@10 on the bundled sample under both protocols, over seeds, against popularity's.

    .venv/bin/python bench/als_rank.py [--ratings 5000000] [--seeds 1 2 3 42] [--out bench/results/als_rank.md]
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from batch_graph import generate  # noqa: E402
from dagster_pyspark.resources import spark_session_from_config  # noqa: E402
from report import write_results  # noqa: E402

from reco_assets.bronze.movielens import BUNDLED_SAMPLE  # noqa: E402
from reco_assets.gold import als, evaluation, splits  # noqa: E402
from reco_assets.gold.assets import ModelConfig  # noqa: E402
from reco_assets.resources import spark_config  # noqa: E402
from reco_assets.silver import transforms  # noqa: E402

RANKS = (64, 48, 32)


def read(spark, folder: str, name: str):
    return getattr(transforms, name)(transforms.read_movielens_csv(spark, folder, name))


def ndcg(config: ModelConfig, split: splits.Split, catalog_size: int) -> tuple[float, float]:
    """ALS's and popularity's nDCG@K on the split's test users, by the evaluation's own functions."""
    train = als.interactions(split.train, split.events).cache()
    queries, _ = evaluation.sample_users(evaluation.evaluated_users(split, train), config.max_test_users)
    item_users = als.item_users(train).cache()
    train_users = train.select("user_id").distinct().count()
    model = config.als().fit(train)
    found = [als.summarize(per_user, catalog_size, item_users, train_users)["ndcg"] for per_user in (
        als.evaluate_top_k(queries.join(model.userFactors, "id"), als.item_index(model.itemFactors), config.eval_k),
        evaluation.popularity_top_k(queries, item_users, config.eval_k))]
    for frame in (train, item_users, *split.cached):
        frame.unpersist()
    return found[0], found[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ratings", type=int, default=5_000_000, help="synthetic ratings the fits are timed on")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 42])
    parser.add_argument("--out", type=Path, help="also write the results as Markdown here")
    args = parser.parse_args()

    spark = spark_session_from_config(spark_config(remote=False))
    spark.sparkContext.setLogLevel("ERROR")
    lines = []
    with tempfile.TemporaryDirectory(prefix="als-rank-") as folder:
        generate(args.ratings, Path(folder))
        ratings = read(spark, folder, "ratings").select("user_id", "movie_id", "rating").cache()
        count = ratings.count()
        fits: dict[int, float] = {}
        for round_ in range(2):
            for rank in RANKS if round_ == 0 else reversed(RANKS):
                started = time.perf_counter()
                model = ModelConfig(rank=rank).als().fit(ratings)
                model.userFactors.count()
                seconds = time.perf_counter() - started
                fits[rank] = min(fits.get(rank, float("inf")), seconds)
                print(f"rank {rank}: fit {seconds:.1f} s", flush=True)
        ratings.unpersist()
    lines += [f"| rank | fit on {count:,} synthetic ratings (best of 2, 6 iterations) | ÷ rank 64 |",
              "|---:|---:|---:|",
              *(f"| {rank} | {fits[rank]:.1f} s | {fits[rank] / fits[64]:.2f}× |" for rank in RANKS)]

    sample = read(spark, str(BUNDLED_SAMPLE), "ratings").cache()
    catalog_size = read(spark, str(BUNDLED_SAMPLE), "movies").count()
    lines += ["", f"| rank | protocol | ALS nDCG@10, mean over seeds {args.seeds} (min–max) | ÷ popularity |",
              "|---:|---|---:|---:|"]
    for rank in RANKS:
        for protocol in splits.PROTOCOLS:
            found = []
            for seed in args.seeds:
                config = ModelConfig(rank=rank, seed=seed)
                split = (splits.per_user_chronological(sample, None, config.holdout_fraction)
                         if protocol == splits.PER_USER
                         else splits.global_temporal(sample, None, config.temporal_cutoff_quantile))
                found.append(ndcg(config, split, catalog_size))
            mean = statistics.mean(a for a, _ in found)
            popularity = statistics.mean(p for _, p in found)
            lines.append(f"| {rank} | {protocol} | {mean:.4f} ({min(a for a, _ in found):.4f}–"
                         f"{max(a for a, _ in found):.4f}) | {mean / popularity:.3f} |")
            print(lines[-1], flush=True)
    spark.stop()
    print("\n".join(lines))
    if args.out:
        write_results(args.out, "bench/als_rank.py", lines)


if __name__ == "__main__":
    main()
