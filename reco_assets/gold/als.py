"""Spark MLlib ALS: training data (ratings and the stream), the chronological hold-out split, distributed top-K."""

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field
from pyspark.ml.evaluation import RegressionEvaluator
from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from reco_assets.gold import trending
from reco_assets.gold.ranking import ItemIndex, kept_ranks, ranking_metrics, top_k
from reco_assets.lakehouse import LakehouseResource
from reco_assets.silver.events import read_events

RECOMMENDATION_SCHEMA = "user_id INT, rank INT, movie_id INT, score FLOAT"
METRIC_NAMES = ("precision", "recall", "ndcg", "map")
EVALUATION_ROW_SCHEMA = "user_id INT, precision DOUBLE, recall DOUBLE, ndcg DOUBLE, map DOUBLE, recommended ARRAY<INT>"

# What ALS learns from is a per-(user, movie) signal in stars (confidence = 1 + alpha × signal): the latest
# explicit rating (MovieLens or streamed), plus the stream's implicit events — a view (the movie's page opened
# or played) is worth 2.5 stars, the middle of the scale; a click (trailer, poster, title, a recommendation)
# 1 star. The implicit part of a pair is capped at 5 stars, so repeated clicks never outweigh a rating.
IMPLICIT_WEIGHTS = {"view": 2.5, "click": 1.0}
IMPLICIT_CAP = 5.0
# Events that mean the user has seen the movie (never recommend it again); a click is interest, not a watch.
SEEN_EVENT_TYPES = ("view", "rating")


class ALSConfig(dg.Config):
    """ALS hyper-parameters; the defaults were tuned on ml-latest-small (docs/recommendation-quality.md)."""

    rank: int = Field(default=64, description="number of latent factors")
    reg_param: float = Field(default=0.1, description="L2 regularisation (scaled by each user's/item's count)")
    max_iter: int = Field(
        default=6,
        description="ALS iterations (6 train 40 % faster than 10 for 0.7 % of nDCG@10 on the sample, over 4 seeds)",
    )
    implicit_prefs: bool = Field(default=True, description="implicit-feedback ALS (ratings as confidence)")
    alpha: float = Field(default=0.1, description="confidence scale for implicit feedback")
    seed: int = Field(default=42, description="random seed, for reproducible factors")
    num_blocks: int = Field(
        default=4,
        description="user and item blocks of ALS (Spark's default is 10; on 2 cores 4 trains about 10 % faster, "
                    "a cluster wants at least one per core)",
    )

    def als(self, **overrides) -> ALS:
        params = dict(
            rank=self.rank,
            regParam=self.reg_param,
            maxIter=self.max_iter,
            numUserBlocks=self.num_blocks,
            numItemBlocks=self.num_blocks,
            implicitPrefs=self.implicit_prefs,
            alpha=self.alpha,
            seed=self.seed,
            userCol="user_id",
            itemCol="movie_id",
            ratingCol="rating",
            coldStartStrategy="drop",
            nonnegative=False,
        )
        params.update(overrides)
        return ALS(**params)

    def fingerprint(self) -> str:
        """The ALS settings' hash (an evaluation setting beside them in a run's config does not change it)."""
        settings = self.model_dump(include=set(ALSConfig.model_fields))
        return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]


def chronological_split(ratings: DataFrame, holdout_fraction: float) -> DataFrame:
    """The ratings with `is_test`: each user's latest ratings (a share, at least one) are held out; users with one
    rating stay in train. Cache it and filter both sides from it: each side on its own would sort again."""
    by_user = Window.partitionBy("user_id")
    latest_first = by_user.orderBy(F.col("rated_at").desc(), F.col("movie_id").desc())
    return (
        ratings.withColumn("n", F.count(F.lit(1)).over(by_user))
        .withColumn("pos", F.row_number().over(latest_first))
        .withColumn(
            "is_test",
            (F.col("n") >= 2) & (F.col("pos") <= F.greatest(F.lit(1), F.floor(F.col("n") * holdout_fraction))),
        )
        .drop("n", "pos")
    )


def feature_matrix(pdf: pd.DataFrame) -> np.ndarray:
    """The `features` arrays of a pandas frame (factor rows) as one [rows, rank] float32 matrix."""
    if not len(pdf):
        return np.empty((0, 0), np.float32)
    return np.vstack(pdf["features"].to_numpy()).astype(np.float32, copy=False)


def item_index(factors: DataFrame) -> ItemIndex:
    """Collect (id, features) factors to the driver as a candidate index."""
    pdf = factors.select("id", "features").toPandas()
    return ItemIndex(pdf["id"].to_numpy(), feature_matrix(pdf))


def recommend_top_k(queries: DataFrame, index: ItemIndex, k: int) -> DataFrame:
    """Top-k candidates per query row (id, features, exclude), in Spark tasks with numpy BLAS.

    The candidate index travels in the task closure, not in a SparkContext broadcast, so Spark Connect works too
    (classic PySpark broadcasts a pickled function over 1 MB by itself). Each task scores its users in blocks.
    """

    def score(batches):
        for pdf in batches:
            rows_ids, rows_rank, rows_item, rows_score = [], [], [], []
            vectors = feature_matrix(pdf)
            ids = pdf["id"].to_numpy()
            for rows, items, scores in top_k(index, vectors, list(pdf["exclude"]), k):
                valid = np.isfinite(scores)
                width = items.shape[1]
                rows_ids.append(np.repeat(ids[rows], width)[valid.ravel()])
                rows_rank.append(kept_ranks(valid))
                rows_item.append(items[valid])
                rows_score.append(scores[valid])
            if rows_ids:
                yield pd.DataFrame(
                    {
                        "user_id": np.concatenate(rows_ids).astype(np.int32),
                        "rank": np.concatenate(rows_rank).astype(np.int32),
                        "movie_id": np.concatenate(rows_item).astype(np.int32),
                        "score": np.concatenate(rows_score).astype(np.float32),
                    }
                )

    return queries.select("id", "features", "exclude").mapInPandas(score, RECOMMENDATION_SCHEMA)


def evaluation_frame(users: np.ndarray, recommended: np.ndarray, relevant: Sequence, k: int) -> pd.DataFrame:
    """EVALUATION_ROW_SCHEMA rows: users' metrics for their `recommended` ids [users, width] (negative: none)."""
    lists = [row[row >= 0] for row in recommended[:, :k]]
    return pd.DataFrame({"user_id": users, **ranking_metrics(recommended, relevant, k), "recommended": lists})


def evaluate_top_k(queries: DataFrame, index: ItemIndex, k: int) -> DataFrame:
    """Per-user precision, recall, nDCG and MAP at k for query rows (id, features, exclude, relevant)."""

    def score(batches):
        for pdf in batches:
            for rows, items, scores in top_k(index, feature_matrix(pdf), list(pdf["exclude"]), k):
                yield evaluation_frame(pdf["id"].to_numpy()[rows], np.where(np.isfinite(scores), items, -1),
                                        list(pdf["relevant"].iloc[rows]), k)

    return queries.select("id", "features", "exclude", "relevant").mapInPandas(score, EVALUATION_ROW_SCHEMA)


def read_silver_events(spark, lakehouse: LakehouseResource) -> tuple[DataFrame | None, int | None]:
    """Every silver event so far, pinned to the current version of silver.event_outcomes (every action reads the
    same snapshot while the sensor's runs commit new hours), and that version; (None, None) before the first."""
    version = lakehouse.table("silver.event_outcomes").version()
    return (None, None) if version is None else (read_events(spark, lakehouse, version=version), version)


def interactions(ratings: DataFrame, events: DataFrame | None) -> DataFrame:
    """user_id, movie_id, rating, seen: the signal ALS learns from, one row per pair (see IMPLICIT_WEIGHTS), and
    whether the user has seen the movie (rated or viewed it, SEEN_EVENT_TYPES).

    Without events it is the ratings as they are, all seen.
    """
    pair = ["user_id", "movie_id"]
    if events is None:
        return ratings.select(*pair, "rating", F.lit(True).alias("seen"))
    explicit = ratings.select(*pair, "rating", F.col("rated_at").alias("at")).unionByName(
        events.where(F.col("event_type") == "rating").select(
            *pair, F.col("rating").cast("float"), F.col("event_ts").alias("at")
        )
    )
    latest_first = Window.partitionBy(*pair).orderBy(F.col("at").desc(), F.col("rating").desc())
    latest = explicit.withColumn("_n", F.row_number().over(latest_first)).where(F.col("_n") == 1)
    implicit = events.groupBy(*pair).agg(
        F.least(F.sum(trending.event_weight(F.col("event_type"), IMPLICIT_WEIGHTS)), F.lit(IMPLICIT_CAP)).alias(
            "implicit"
        ),
        F.max(F.col("event_type").isin(*SEEN_EVENT_TYPES)).alias("seen_in_stream"),
    )
    return (
        latest.select(*pair, F.col("rating").alias("explicit"))
        .join(implicit, pair, "full")
        .select(*pair, (F.coalesce("explicit", F.lit(0.0)) + F.coalesce("implicit", F.lit(0.0))).cast("float")
                .alias("rating"),
                (F.col("explicit").isNotNull() | F.coalesce("seen_in_stream", F.lit(False))).alias("seen"))
    )


def seen_movies(interactions: DataFrame) -> DataFrame:
    """id, exclude: the movies each user of `interactions` has seen (rated or viewed), never recommended to them."""
    return interactions.groupBy(F.col("user_id").alias("id")).agg(
        F.collect_list(F.when(F.col("seen"), F.col("movie_id"))).alias("exclude"))


def item_users(train: DataFrame) -> DataFrame:
    """movie_id, users: how many users interacted with each movie (the popularity baseline and novelty)."""
    return train.groupBy("movie_id").agg(F.countDistinct("user_id").alias("users"))


def summarize(per_user: DataFrame, catalog_size: int, train_item_users: DataFrame, train_users: int) -> dict:
    """Mean metrics over users, catalog coverage, and novelty.

    Coverage: the share of the catalog recommended to anyone. Novelty: per user, the mean self-information
    -log2(share of training users who interacted with the movie) of the recommended movies; then the mean.
    """
    per_user = per_user.cache()
    aggregates = per_user.agg(*[F.avg(m).alias(m) for m in METRIC_NAMES], F.count(F.lit(1)).alias("users")).first()
    distinct_items = per_user.select(F.explode("recommended")).distinct().count()
    novelty = (
        per_user.select("user_id", F.explode("recommended").alias("movie_id"))
        .join(train_item_users, "movie_id")
        .groupBy("user_id")
        .agg(F.avg(-F.log2(F.col("users") / F.lit(float(train_users)))).alias("novelty"))
        .agg(F.avg("novelty"))
        .first()[0]
    )
    per_user.unpersist()
    summary = {m: float(aggregates[m] or 0.0) for m in METRIC_NAMES}
    summary["users"] = int(aggregates["users"])
    summary["coverage"] = distinct_items / catalog_size if catalog_size else 0.0
    summary["novelty"] = float(novelty or 0.0)
    return summary


@dataclass(frozen=True)
class Factors:
    """A trained model as gold.als_factors keeps it: user and item factors (`id`, `features`) and what it is."""

    users: DataFrame
    items: DataFrame
    info: dict


def factors_table(model: ALSModel, info: dict) -> DataFrame:
    """The rows of gold.als_factors: one per user and per item, with the model's version and description."""
    described = [F.lit(info["model_version"]).alias("model_version"), F.lit(json.dumps(info)).alias("model_info")]
    return (model.userFactors.select(F.lit("user").alias("side"), "id", "features", *described)
            .unionByName(model.itemFactors.select(F.lit("item").alias("side"), "id", "features", *described)))


def load_factors(spark, lakehouse: LakehouseResource) -> Factors:
    """The served model (gold.als_factors), read at one version."""
    table = lakehouse.table("gold.als_factors")
    if not table.exists():
        raise dg.Failure("gold.als_factors does not exist: materialize als_model first")
    factors, _ = table.pinned(spark)
    info = json.loads(factors.select("model_info").first()[0])
    side = F.col("side")
    return Factors(factors.where(side == "user").select("id", "features"),
                   factors.where(side == "item").select("id", "features"), info)


def rmse(model: ALSModel, test: DataFrame) -> float:
    """RMSE of the model's rating predictions on the hold-out (users and items it knows)."""
    predictions = model.transform(test)
    evaluator = RegressionEvaluator(metricName="rmse", labelCol="rating", predictionCol="prediction")
    return float(evaluator.evaluate(predictions))
