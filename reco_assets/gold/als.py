"""Spark MLlib ALS: training, the chronological hold-out split and distributed top-K scoring."""

import hashlib
import json

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field
from pyspark.ml.evaluation import RegressionEvaluator
from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from reco_assets.gold.ranking import ItemIndex, ranking_metrics, top_k

RECOMMENDATION_SCHEMA = "user_id INT, rank INT, movie_id INT, score FLOAT"
METRIC_NAMES = ("precision", "recall", "ndcg", "map")
EVALUATION_ROW_SCHEMA = "user_id INT, precision DOUBLE, recall DOUBLE, ndcg DOUBLE, map DOUBLE, recommended ARRAY<INT>"


class ALSConfig(dg.Config):
    """ALS hyper-parameters; the defaults were tuned on ml-latest-small (docs/recommendation-quality.md)."""

    rank: int = Field(default=64, description="number of latent factors")
    reg_param: float = Field(default=0.1, description="L2 regularisation (scaled by each user's/item's count)")
    max_iter: int = Field(default=10, description="ALS iterations")
    implicit_prefs: bool = Field(default=True, description="implicit-feedback ALS (ratings as confidence)")
    alpha: float = Field(default=0.1, description="confidence scale for implicit feedback")
    seed: int = Field(default=42, description="random seed, for reproducible factors")
    holdout_fraction: float = Field(default=0.2, description="share of each user's latest ratings held out")
    eval_k: int = Field(default=10, description="cut-off K of the offline metrics")
    report_rmse: bool = Field(
        default=True,
        description="report RMSE on the hold-out (for implicit ALS, of an explicit twin: same rank, reg 0.1)",
    )

    def als(self, **overrides) -> ALS:
        params = dict(
            rank=self.rank,
            regParam=self.reg_param,
            maxIter=self.max_iter,
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
        return hashlib.sha1(json.dumps(self.model_dump(), sort_keys=True).encode()).hexdigest()[:8]


def chronological_split(ratings: DataFrame, holdout_fraction: float) -> tuple[DataFrame, DataFrame]:
    """Hold out each user's latest ratings (a share, at least one); users with one rating stay in train."""
    by_user = Window.partitionBy("user_id")
    latest_first = by_user.orderBy(F.col("rated_at").desc(), F.col("movie_id").desc())
    marked = (
        ratings.withColumn("n", F.count(F.lit(1)).over(by_user))
        .withColumn("pos", F.row_number().over(latest_first))
        .withColumn(
            "is_test",
            (F.col("n") >= 2) & (F.col("pos") <= F.greatest(F.lit(1), F.floor(F.col("n") * holdout_fraction))),
        )
        .drop("n", "pos")
    )
    return marked.where(~F.col("is_test")).drop("is_test"), marked.where(F.col("is_test")).drop("is_test")


def item_index(factors: DataFrame) -> ItemIndex:
    """Collect (id, features) factors to the driver as a candidate index."""
    pdf = factors.select("id", "features").toPandas()
    vectors = np.vstack(pdf["features"].to_numpy()) if len(pdf) else np.empty((0, 0), np.float32)
    return ItemIndex(pdf["id"].to_numpy(), vectors)


def _query_vectors(pdf: pd.DataFrame) -> np.ndarray:
    return np.vstack(pdf["features"].to_numpy()) if len(pdf) else np.empty((0, 0))


def recommend_top_k(spark: SparkSession, queries: DataFrame, index: ItemIndex, k: int) -> DataFrame:
    """Top-k candidates per query row (id, features, exclude), in Spark tasks with numpy BLAS.

    The candidate index is broadcast once; each task scores its users in blocks.
    """
    shared = spark.sparkContext.broadcast(index)

    def score(batches):
        for pdf in batches:
            rows_ids, rows_rank, rows_item, rows_score = [], [], [], []
            vectors = _query_vectors(pdf)
            ids = pdf["id"].to_numpy()
            for rows, items, scores in top_k(shared.value, vectors, list(pdf["exclude"]), k):
                valid = np.isfinite(scores)
                n, width = items.shape
                rows_ids.append(np.repeat(ids[rows], width)[valid.ravel()])
                rows_rank.append(np.tile(np.arange(1, width + 1), n)[valid.ravel()])
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


def evaluate_top_k(spark: SparkSession, queries: DataFrame, index: ItemIndex, k: int) -> DataFrame:
    """Per-user precision, recall, nDCG and MAP at k for query rows (id, features, exclude, relevant)."""
    shared = spark.sparkContext.broadcast(index)

    def score(batches):
        for pdf in batches:
            vectors = _query_vectors(pdf)
            relevant = list(pdf["relevant"])
            out = []
            for rows, items, scores in top_k(shared.value, vectors, list(pdf["exclude"]), k):
                for offset, (user_items, user_scores) in enumerate(zip(items, scores, strict=True)):
                    i = rows.start + offset
                    recommended = user_items[np.isfinite(user_scores)].tolist()
                    metrics = ranking_metrics(recommended, set(relevant[i].tolist()), k)
                    out.append({"user_id": int(pdf["id"].iat[i]), **metrics, "recommended": recommended})
            if out:
                yield pd.DataFrame(out)

    return queries.select("id", "features", "exclude", "relevant").mapInPandas(score, EVALUATION_ROW_SCHEMA)


def seen_by_user(ratings: DataFrame, column: str = "exclude") -> DataFrame:
    return ratings.groupBy(F.col("user_id").alias("id")).agg(F.collect_list("movie_id").alias(column))


def summarize(per_user: DataFrame, catalog_size: int) -> dict[str, float]:
    """Mean metrics over users, and the share of the catalog recommended to anyone (coverage)."""
    per_user = per_user.cache()
    aggregates = per_user.agg(*[F.avg(m).alias(m) for m in METRIC_NAMES], F.count(F.lit(1)).alias("users")).first()
    distinct_items = per_user.select(F.explode("recommended")).distinct().count()
    per_user.unpersist()
    summary = {m: float(aggregates[m] or 0.0) for m in METRIC_NAMES}
    summary["users"] = int(aggregates["users"])
    summary["coverage"] = distinct_items / catalog_size if catalog_size else 0.0
    return summary


def rmse(model: ALSModel, test: DataFrame) -> float:
    """RMSE of the model's rating predictions on the hold-out (users and items it knows)."""
    predictions = model.transform(test)
    evaluator = RegressionEvaluator(metricName="rmse", labelCol="rating", predictionCol="prediction")
    return float(evaluator.evaluate(predictions))
