"""Offline evaluation: under each protocol of gold/splits.py, ALS, the hybrid (the learned ranker) and two popularity
baselines, popularity and recent popularity, scored on one test set.

Design and figures: docs/recommendation-quality.md.
"""

import time

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from reco_assets.gold import als, candidates, ranker
from reco_assets.gold.ranker import RankerConfig
from reco_assets.gold.ranking import ItemIndex, locate
from reco_assets.gold.splits import PER_USER, Split, training_tags

MODELS = ("als", "hybrid", "popularity", "recent_popularity")
BASELINES = ("popularity", "recent_popularity")


class EvaluationConfig(dg.Config):
    """How the models are evaluated: the two protocols' splits, the cut-off K and the recent-popularity window."""

    eval_k: int = Field(default=10, ge=1, description="cut-off K of the offline metrics")
    holdout_fraction: float = Field(default=0.2, gt=0, lt=1, description="per-user protocol: share of each user's "
                                                                         "latest ratings held out")
    global_temporal: bool = Field(default=True, description="also evaluate under the global temporal split")
    temporal_cutoff_quantile: float = Field(
        default=0.8, gt=0, lt=1, description="global protocol: the cut T is this quantile of the ratings' time")
    recent_popularity_days: float = Field(
        default=28.0, gt=0, description="recent popularity: the most-rated movies of this many days before the cut")
    max_test_users: int = Field(
        default=20_000, ge=1, description="test users each protocol scores: when there are more, the same fixed "
                                          "sample for every model (the users whose id hashes lowest)")
    hybrid: RankerConfig = Field(
        default_factory=RankerConfig,
        description="the hybrid's candidates and ranker for the evaluation (gold_hybrid_recommendations has the "
                    "served ones)",
    )
    report_rmse: bool = Field(
        default=True,
        description="per-user protocol: report RMSE on the hold-out (for implicit ALS, of an explicit twin with "
                    "reg 0.1)",
    )
    rmse_max_iter: int = Field(default=5, description="iterations of the explicit twin trained for RMSE")
    rmse_rank: int = Field(
        default=10,
        description="rank of the explicit twin (its RMSE on the sample is flat in the rank: 0.926 at 10, 0.928 at "
                    "64; its cost grows with the rank's square)",
    )


def day_number(column: str) -> Column:
    """Whole UTC days since the epoch of a timestamp column, as `day`."""
    return F.floor(F.col(column).cast("double") / candidates.DAY_SECONDS).alias("day")


def recent_popularity_top_k(queries: pd.DataFrame, daily: pd.DataFrame, window_days: float, k: int) -> np.ndarray:
    """[users, k] movie ids (-1 where fewer) for query rows (exclude, day): the movies most rated in the window
    before each user's day, never one they have seen. `daily`: movie_id, day, ratings (training ratings per
    movie and day)."""
    ids = np.unique(daily["movie_id"].to_numpy(np.int64))
    positions, _ = locate(ids, daily["movie_id"].to_numpy(np.int64))
    unique_days, day_of_user = np.unique(queries["day"].to_numpy(np.float64), return_inverse=True)
    excluded = queries["exclude"].map(len).to_numpy()
    lengths = np.zeros(len(unique_days), np.int64)
    np.maximum.at(lengths, day_of_user, excluded + k)
    lists = candidates.recent_popularity_lists(daily["day"].to_numpy(np.float64), positions, len(ids), unique_days,
                                               window_days, lengths, daily["ratings"].to_numpy())
    recommended = np.full((len(queries), k), -1, np.int64)
    for row, (day, seen) in enumerate(zip(day_of_user, queries["exclude"], strict=True)):
        ranked = ids[lists[day]]
        best = ranked[~np.isin(ranked, np.asarray(seen, np.int64))][:k]
        recommended[row, :len(best)] = best
    return recommended


def evaluated_users(split: Split, train: DataFrame) -> DataFrame:
    """One row per test user with a training history: id, exclude (the movies seen in `train`, the split's
    `als.interactions`), relevant (their test movies), as_of (when they are recommended to)."""
    relevant = split.test.groupBy(F.col("user_id").alias("id")).agg(F.collect_list("movie_id").alias("relevant"))
    return als.seen_movies(train).join(relevant, "id").join(split.cutoffs.withColumnRenamed("user_id", "id"), "id")


def sample_users(queries: DataFrame, n: int) -> tuple[DataFrame, int]:
    """At most n of the test users (rows by `id`): when there are more, those whose id hashes lowest, the same users
    in every run and for every model. Returns them and how many test users there are.

    One pass: the users' hashes (8 bytes each) come to the driver, which counts them and finds the n-th lowest."""
    hashed = F.xxhash64("id")
    hashes = queries.select(hashed.alias("hash")).toPandas()["hash"].to_numpy(np.int64)
    if len(hashes) <= n:
        return queries, len(hashes)
    return queries.where(hashed <= int(np.partition(hashes, n - 1)[n - 1])), len(hashes)


def popularity_top_k(queries: DataFrame, item_users: DataFrame, k: int) -> DataFrame:
    """The popularity baseline's per-user metrics (EVALUATION_ROW_SCHEMA) for query rows (id, exclude, relevant):
    movies by training users (`als.item_users`), through ALS's top-K with a one-dimensional factor per movie."""
    counts = item_users.toPandas()
    popularity = ItemIndex(counts["movie_id"].to_numpy(), counts["users"].to_numpy(np.float32)[:, None])
    return als.evaluate_top_k(queries.withColumn("features", F.array(F.lit(1.0).cast("float"))), popularity, k)


def collect_users(queries: DataFrame) -> pd.DataFrame:
    """The `evaluated_users` on the driver, by id, with as_of in epoch seconds and its day."""
    return queries.select("id", "exclude", "relevant", day_number("as_of"),
                          F.col("as_of").cast("double").alias("as_of")).orderBy("id").toPandas()


def hybrid_top_k(config: RankerConfig, split: Split, movies: DataFrame, tags: DataFrame, users: pd.DataFrame,
                 k: int) -> np.ndarray:
    """[users, k]: the hybrid's best k movie ids for the split's test rows `users` (id, as_of seconds, exclude).

    The split's training window is collected once. The ranker learns from a validation slice of it (ranker.learn),
    then ranks the test users' candidates drawn from the whole window; content vectors use the split's
    `training_tags` only.
    """
    window = candidates.TrainingWindow.collect(split.train, split.events)
    catalog = ranker.Catalog.collect(movies, training_tags(split, tags))
    learned = ranker.learn(config, window, catalog)
    history, _ = window.history()
    ranked = ranker.ranked_passes(config, ranker.Generators(config, history), ranker.Queries.of(users),
                                  catalog.years(), catalog.content(),
                                  lambda rows, scored: ranker.top_k(learned.model, scored, len(rows), k))
    return np.concatenate(ranked or [np.empty((0, k), np.int64)])


def evaluate(config: EvaluationConfig, als_config: als.ALSConfig, split: Split, movies: DataFrame,
             tags: DataFrame, seconds: dict[str, float]) -> list[dict]:
    """Train ALS on the split and score it, the hybrid, popularity and recent popularity on the same test users (at
    most `max_test_users`, a fixed sample); one row per model with the split's protocol and its number of test users.
    `seconds` receives the time of each stage.

    The content vectors use `training_tags` only. The four models must score the same users, or it fails.
    """
    spark = split.train.sparkSession
    clock = [time.monotonic()]

    def lap(stage: str) -> None:
        now = time.monotonic()
        seconds[f"{split.protocol}/{stage}"] = round(now - clock[0], 1)
        clock[0] = now

    k = config.eval_k
    catalog_size = movies.count()
    train = als.interactions(split.train, split.events).cache()
    test_users = evaluated_users(split, train).cache()
    queries, test_user_count = sample_users(test_users, config.max_test_users)
    item_users = als.item_users(train).cache()
    train_users = train.select("user_id").distinct().count()
    lap("split")

    def summary(per_user: DataFrame) -> dict:
        return als.summarize(per_user, catalog_size, item_users, train_users)

    model = als_config.als().fit(train)
    lap("als_fit")
    metrics = {"als": summary(als.evaluate_top_k(queries.join(model.userFactors, "id"),
                                                 als.item_index(model.itemFactors), k))}
    lap("als_top_k")
    metrics["popularity"] = summary(popularity_top_k(queries, item_users, k))
    lap("popularity")
    users = collect_users(queries)
    daily = split.train.groupBy("movie_id", day_number("rated_at")).agg(F.count(F.lit(1)).alias("ratings"))
    recent = recent_popularity_top_k(users, daily.toPandas(), config.recent_popularity_days, k)
    metrics["recent_popularity"] = summary(spark.createDataFrame(
        als.evaluation_frame(users["id"].to_numpy(np.int32), recent, list(users["relevant"]), k),
        als.EVALUATION_ROW_SCHEMA))
    lap("recent_popularity")
    ranked = hybrid_top_k(config.hybrid, split, movies, tags, users, k)
    metrics["hybrid"] = summary(spark.createDataFrame(
        als.evaluation_frame(users["id"].to_numpy(np.int32), ranked, list(users["relevant"]), k),
        als.EVALUATION_ROW_SCHEMA))
    lap("hybrid")
    if split.protocol == PER_USER and config.report_rmse:
        rating_model = (
            model if not als_config.implicit_prefs
            else als_config.als(implicitPrefs=False, regParam=0.1, maxIter=config.rmse_max_iter,
                                rank=config.rmse_rank).fit(split.train)
        )
        metrics["als"]["rmse"] = als.rmse(rating_model, split.test)
        lap("rmse")
    for frame in (train, test_users, item_users, *split.cached):
        frame.unpersist()
    scored = {name: found["users"] for name, found in metrics.items()}
    if len(set(scored.values())) != 1:
        raise ValueError(f"{split.protocol}: the models scored different numbers of test users: {scored}")
    return [{"protocol": split.protocol, "model": name, **metrics[name], "test_users": test_user_count}
            for name in MODELS]


def best_baseline(rows: list[dict], protocol: str, metric: str = "ndcg") -> dict:
    """The better popularity baseline of a protocol on `metric`."""
    return max((row for row in rows if row["protocol"] == protocol and row["model"] in BASELINES),
               key=lambda row: row[metric])
