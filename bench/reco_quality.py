"""Recommendation quality under both evaluation protocols, over seeds: every model's nDCG@K as a ratio against the
popularity baselines scored in the same run, on the same test users.

The evaluation's own code (`reco_assets.gold.evaluation.evaluate`) on MovieLens CSVs (default: the bundled sample),
read the way the silver assets read them, in local Spark. No stream events.

    .venv/bin/python bench/reco_quality.py [--seeds 1 2 3] [--movielens DIR] [--protocols per_user_chronological ...]
    .venv/bin/python bench/reco_quality.py --ablation   # the ranker without each generator, then each feature group
    .venv/bin/python bench/reco_quality.py --cost       # the ranker with fewer trees or candidates

The ablation retrains only the ranker, once per variant, on the same split as the full ranker, and prints each
variant's nDCG@K against popularity's from the same script.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dagster_pyspark.resources import spark_session_from_config  # noqa: E402

from reco_assets.bronze.movielens import BUNDLED_SAMPLE  # noqa: E402
from reco_assets.gold import als, evaluation, ranker, splits  # noqa: E402
from reco_assets.gold.assets import ModelConfig  # noqa: E402
from reco_assets.gold.candidates import TrainingWindow  # noqa: E402
from reco_assets.gold.ranker import FEATURES, GENERATORS, RankerConfig  # noqa: E402
from reco_assets.gold.ranking import ranking_metrics  # noqa: E402
from reco_assets.resources import spark_config  # noqa: E402
from reco_assets.silver import transforms  # noqa: E402


def split_of(protocol: str, ratings, config: ModelConfig) -> splits.Split:
    if protocol == splits.PER_USER:
        return splits.per_user_chronological(ratings, None, config.holdout_fraction)
    return splits.global_temporal(ratings, None, config.temporal_cutoff_quantile)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--movielens", default=str(BUNDLED_SAMPLE), help="a folder with MovieLens's CSV files")
    parser.add_argument("--protocols", nargs="+", default=list(splits.PROTOCOLS), choices=splits.PROTOCOLS)
    parser.add_argument("--ablation", action="store_true", help="ablate the ranker instead of running every model")
    parser.add_argument("--cost", action="store_true", help="the ranker with fewer trees or candidates instead")
    args = parser.parse_args()

    spark = spark_session_from_config(spark_config(remote=False))
    spark.sparkContext.setLogLevel("ERROR")

    def read(name: str):
        return getattr(transforms, name)(transforms.read_movielens_csv(spark, args.movielens, name))

    ratings = read("ratings").cache()
    movies, tags = read("movies").cache(), read("tags").cache()
    print(f"{ratings.count():,} ratings, {movies.count():,} movies, {tags.count():,} tags from {args.movielens}")
    if args.ablation or args.cost:
        for protocol in args.protocols:
            ablate(ratings, movies, tags, protocol, COST_VARIANTS if args.cost else None)
        spark.stop()
        return
    results: dict[tuple[str, str], list[dict]] = {}
    for seed in args.seeds:
        config = ModelConfig(seed=seed, report_rmse=False)
        for protocol in args.protocols:
            started = time.monotonic()
            split = split_of(protocol, ratings, config)
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


# Each generator alone, ranked by its own score; the ranker without one generator; without one group of features.
GROUPS = {"EASE scores": ("ease_recent", "ease", "ease_recent_rank", "ease_rank"),
          "recent EASE": ("ease_recent", "ease_recent_rank"),
          "popularity": ("popularity", "popularity_rank"), "trend": ("trend", "trend_rank", "trend_year"),
          "year gap": ("year_gap",), "age": ("age_days",), "content": ("content",), "activity": ("activity",)}
ALONE = {"popular": "popularity", "trending": "trend", "ease": "ease", "ease_recent": "ease_recent"}


class OwnScore:
    """Orders candidates by their one feature: a generator alone, without the trees."""

    @staticmethod
    def predict_proba(features: np.ndarray) -> np.ndarray:
        return np.column_stack([-features[:, 0], features[:, 0]])


# What the ranker's cost scales with: its trees (fit and prediction) and the candidates per generator (features,
# prediction). Fewer trees take a larger learning rate, so that their sum of steps stays 15.
COST_VARIANTS = {
    "ranker, 300 trees, 30 candidates per generator (the default)": RankerConfig(),
    "50 candidates per generator (the default until 2026-12-02)": RankerConfig(candidates_per_generator=50),
    "100 trees, learning rate 0.15": RankerConfig(trees=100, learning_rate=0.15),
    "50 trees, learning rate 0.3": RankerConfig(trees=50, learning_rate=0.3),
    "20 candidates per generator": RankerConfig(candidates_per_generator=20),
}


def ablate(ratings, movies, tags, protocol: str, only: dict[str, RankerConfig] | None = None) -> None:
    """The ranker's parts one by one; with `only`, just those ranker variants (the first is the baseline)."""
    config = ModelConfig(report_rmse=False)
    k = config.eval_k
    split = split_of(protocol, ratings, config)
    test_users = evaluation.evaluated_users(split, als.interactions(split.train, split.events))
    users = evaluation.collect_users(evaluation.sample_users(test_users, config.max_test_users)[0])
    window = TrainingWindow.collect(split.train, split.events)
    history, _ = window.history()
    queries = ranker.Queries.of(users)
    relevant = [np.asarray(r, np.int64) for r in users["relevant"]]
    catalog = ranker.Catalog.collect(movies, splits.training_tags(split, tags))
    years, content = catalog.years(), catalog.content()
    print(f"\n{split.description}: {len(users)} users\n")
    print(f"| variant | nDCG@{k} | recall@{k} | ÷ {'the default ranker' if only else 'popularity'} | seconds |")
    print("|---|---:|---:|---:|---:|")
    baseline = None

    def report(name: str, recommended: np.ndarray, started: float) -> None:
        nonlocal baseline
        found = ranking_metrics(recommended, relevant, k)
        ndcg = float(found["ndcg"].mean())
        baseline = baseline or ndcg
        print(f"| {name} | {ndcg:.4f} | {found['recall'].mean():.4f} | {ndcg / baseline:.3f} | "
              f"{time.monotonic() - started:.0f} |", flush=True)

    if only:
        for name, variant in only.items():
            started = time.monotonic()
            report(name, evaluation.hybrid_top_k(variant, split, movies, tags, users, k), started)
        return
    for generator, feature in ALONE.items():
        started = time.monotonic()
        alone = RankerConfig(generators=[generator], features=[feature], candidates_per_generator=k)
        found = ranker.candidates(alone, ranker.Generators(alone, history), queries, years, content)
        report(f"{generator} alone, by its own score", ranker.top_k(OwnScore, found, len(users), k), started)
    variants = {"ranker, all generators and features": RankerConfig()}
    for generator in GENERATORS:
        variants[f"ranker without {generator}"] = RankerConfig(generators=[g for g in GENERATORS if g != generator])
    for group, names in GROUPS.items():
        variants[f"ranker without {group} features"] = RankerConfig(features=[f for f in FEATURES if f not in names])
    for name, variant in variants.items():
        started = time.monotonic()
        report(name, evaluation.hybrid_top_k(variant, split, movies, tags, users, k), started)
    learned = ranker.learn(RankerConfig(), window, catalog)
    drops = ranker.importances(learned, k)
    print(f"\nthe full ranker's permutation importances (nDCG@{k} drop on "
          f"{min(len(learned.relevant), ranker.IMPORTANCE_USERS)} validation users when a feature is shuffled)\n")
    print("| feature | nDCG drop |\n|---|---:|")
    for feature, drop in sorted(drops.items(), key=lambda item: -item[1]):
        print(f"| {feature} | {drop:.4f} |")


if __name__ == "__main__":
    main()
