"""Recommendation quality under both evaluation protocols, over seeds: every model's nDCG@K as a ratio against the
popularity baselines scored in the same run, on the same test users.

The evaluation's own code (`reco_assets.gold.evaluation.evaluate`) on MovieLens CSVs (default: the bundled sample),
read the way the silver assets read them, in local Spark. No stream events.

    .venv/bin/python bench/reco_quality.py [--seeds 1 2 3] [--movielens DIR] [--protocols per_user_chronological ...]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dagster_pyspark.resources import spark_session_from_config  # noqa: E402

from reco_assets.bronze.movielens import BUNDLED_SAMPLE  # noqa: E402
from reco_assets.gold import evaluation  # noqa: E402
from reco_assets.gold.assets import ModelConfig  # noqa: E402
from reco_assets.resources import spark_config  # noqa: E402
from reco_assets.silver import transforms  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--movielens", default=str(BUNDLED_SAMPLE), help="a folder with MovieLens's CSV files")
    parser.add_argument("--protocols", nargs="+", default=list(evaluation.PROTOCOLS), choices=evaluation.PROTOCOLS)
    args = parser.parse_args()

    spark = spark_session_from_config(spark_config(remote=False))
    spark.sparkContext.setLogLevel("ERROR")

    def read(name: str):
        return getattr(transforms, name)(transforms.read_movielens_csv(spark, args.movielens, name))

    ratings = read("ratings").cache()
    movies, tags = read("movies").cache(), read("tags").cache()
    print(f"{ratings.count():,} ratings, {movies.count():,} movies, {tags.count():,} tags from {args.movielens}")
    results: dict[tuple[str, str], list[dict]] = {}
    for seed in args.seeds:
        config = ModelConfig(seed=seed, report_rmse=False)
        for protocol in args.protocols:
            started = time.monotonic()
            split = (evaluation.per_user_chronological(ratings, None, config.holdout_fraction)
                     if protocol == evaluation.PER_USER
                     else evaluation.global_temporal(ratings, None, config.temporal_cutoff_quantile))
            rows = evaluation.evaluate(config, config, split, movies, tags, {})
            by_model = {row["model"]: row for row in rows}
            best = evaluation.best_baseline(rows, protocol)
            print(f"seed {seed}, {split.description}: {by_model['als']['users']} users, "
                  f"{time.monotonic() - started:.0f} s")
            for model, row in by_model.items():
                row["vs_popularity"] = row["ndcg"] / by_model["popularity"]["ndcg"]
                row["vs_best_baseline"] = row["ndcg"] / best["ndcg"]
                results.setdefault((protocol, model), []).append(row)
                print(f"  {model:18} nDCG@{config.eval_k} {row['ndcg']:.4f}  recall {row['recall']:.4f}  "
                      f"MAP {row['map']:.4f}  coverage {row['coverage']:.3f}  novelty {row['novelty']:.2f}  "
                      f"÷ popularity {row['vs_popularity']:.3f}  ÷ best baseline ({best['model']}) "
                      f"{row['vs_best_baseline']:.3f}")

    print(f"\nover seeds {args.seeds} (mean, min–max)\n")
    print("| protocol | model | nDCG@10 | ÷ popularity | ÷ better popularity baseline |")
    print("|---|---|---:|---:|---:|")
    for (protocol, model), rows in results.items():
        cells = []
        for key in ("ndcg", "vs_popularity", "vs_best_baseline"):
            values = [row[key] for row in rows]
            cells.append(f"{statistics.mean(values):.3f} ({min(values):.3f}–{max(values):.3f})")
        print(f"| {protocol} | {model} | {' | '.join(cells)} |")
    spark.stop()


if __name__ == "__main__":
    main()
