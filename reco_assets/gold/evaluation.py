"""Offline evaluation: two protocols, each scoring ALS, the hybrid and two popularity baselines on one test set.

- `per_user_chronological`: each user's latest ratings are held out; every user is recommended to at their own
  last training moment.
- `global_temporal`: one cut T (a quantile of rating time); everything before T trains (ratings, events, tags),
  the ratings at or after T of users known before it are the test, and everyone is recommended to at T.

Design and figures: docs/recommendation-quality.md.
"""

import time
from dataclasses import dataclass
from datetime import UTC, datetime

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from reco_assets.gold import als, candidates, hybrid, ranker
from reco_assets.gold.hybrid import HybridWeights
from reco_assets.gold.ranker import RankerConfig
from reco_assets.gold.ranking import ItemIndex, locate

PER_USER = "per_user_chronological"
GLOBAL = "global_temporal"
PROTOCOLS = (PER_USER, GLOBAL)
MODELS = ("als", "hybrid", "ranker", "popularity", "recent_popularity")
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
    hybrid: HybridWeights = Field(
        default_factory=HybridWeights,
        description="the hybrid's weights for the evaluation (gold_hybrid_recommendations has the served ones)",
    )
    ranker: RankerConfig = Field(default_factory=RankerConfig, description="the learned ranker's candidates and trees")
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


@dataclass(frozen=True)
class Split:
    """One protocol's data: `train` and `test` ratings (user_id, movie_id, rating, rated_at), the stream `events`
    that train (or None), `cutoffs` (user_id, as_of): when each evaluated user is recommended to, and the one `cut`
    of a global split."""

    protocol: str
    train: DataFrame
    test: DataFrame
    events: DataFrame | None
    cutoffs: DataFrame
    cut: datetime | None
    description: str
    cached: tuple[DataFrame, ...] = ()  # what evaluate unpersists when it is done with the split


def per_user_chronological(ratings: DataFrame, events: DataFrame | None, holdout_fraction: float) -> Split:
    """Each user's latest ratings (a share, at least one) are the test; users with one rating only train. Stream
    events train, except on held-out (user, movie) pairs."""
    split = als.chronological_split(ratings, holdout_fraction).cache()
    train = split.where(~F.col("is_test")).drop("is_test")
    test = split.where(F.col("is_test")).drop("is_test")
    held_out = test.select("user_id", "movie_id")
    return Split(
        PER_USER, train, test,
        events.join(held_out, ["user_id", "movie_id"], "left_anti") if events is not None else None,
        train.groupBy("user_id").agg(F.max("rated_at").alias("as_of")), None,
        f"per-user chronological hold-out, latest {holdout_fraction:.0%} (at least one)", (split,),
    )


def temporal_cut(ratings: DataFrame, quantile: float):
    """The earliest rating time with at least `quantile` of the ratings at or before it (Spark's percentile_approx,
    to within a millionth of the ratings)."""
    seconds = ratings.select(F.col("rated_at").cast("double").alias("s"))
    cut = seconds.agg(F.percentile_approx("s", quantile, 1_000_000)).first()[0]
    return ratings.where(F.col("rated_at").cast("double") >= cut).agg(F.min("rated_at")).first()[0].astimezone(UTC)


def global_temporal(ratings: DataFrame, events: DataFrame | None, quantile: float) -> Split:
    """Everything before the cut T trains (ratings and stream events); the ratings at or after T of users with a
    training rating are the test, all recommended to at T."""
    cut = temporal_cut(ratings, quantile)
    train = ratings.where(F.col("rated_at") < F.lit(cut))
    known = train.select("user_id").distinct()
    test = ratings.where(F.col("rated_at") >= F.lit(cut)).join(known, "user_id")
    return Split(
        GLOBAL, train, test,
        events.where(F.col("event_ts") < F.lit(cut)) if events is not None else None,
        known.withColumn("as_of", F.lit(cut)), cut,
        f"global temporal split at {cut:%Y-%m-%d %H:%M} UTC (the {quantile:.0%} quantile of rating time)",
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


def training_tags(split: Split, tags: DataFrame) -> DataFrame:
    """The tags (user_id, movie_id, tag, tagged_at) the split may describe movies with: none on a test (user, movie)
    pair, and under a global split none from its cut on."""
    kept = tags.join(split.test.select("user_id", "movie_id"), ["user_id", "movie_id"], "left_anti")
    return kept if split.cut is None else kept.where(F.col("tagged_at") < F.lit(split.cut))


def ranker_rows(split: Split) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The split's (training interactions: user_id, movie_id, at, seen; test rows: id, as_of seconds, exclude,
    relevant, by id)."""
    interactions = candidates.timed_interactions(split.train, split.events).cache()
    rows = (
        interactions.groupBy(F.col("user_id").alias("id"))
        .agg(F.collect_list(F.when(F.col("seen"), F.col("movie_id"))).alias("exclude"))
        .join(split.test.groupBy(F.col("user_id").alias("id")).agg(F.collect_list("movie_id").alias("relevant")), "id")
        .join(split.cutoffs.select(F.col("user_id").alias("id"), F.col("as_of").cast("double").alias("as_of")), "id")
        .orderBy("id").toPandas()
    )
    pairs = interactions.toPandas()
    interactions.unpersist()
    return pairs, rows


def ranker_top_k(config: RankerConfig, split: Split, years: pd.Series, tags: DataFrame, movies: DataFrame,
                 content: hybrid.ContentIndex, users: pd.DataFrame, k: int) -> np.ndarray:
    """[users, k]: the ranker's best k movie ids for the split's test rows `users` (id, as_of seconds, exclude).

    It learns from each user's latest `validation_fraction` of the split's training window (features from the rest
    of that window), then ranks the test users' candidates drawn from the whole training window.
    """
    validation = per_user_chronological(split.train, split.events, config.validation_fraction)
    pairs, rows = ranker_rows(validation)
    fit_content = hybrid.content_index(movies, training_tags(validation, training_tags(split, tags)))
    history = candidates.History.of(pairs["user_id"], pairs["movie_id"], pairs["at"])
    training = ranker.candidates(config, history, ranker.Queries.of(rows), years, fit_content)
    model = ranker.fit(config, training, [np.asarray(r, np.int64) for r in rows["relevant"]])
    for frame in validation.cached:
        frame.unpersist()
    pairs = candidates.timed_interactions(split.train, split.events).toPandas()
    history = candidates.History.of(pairs["user_id"], pairs["movie_id"], pairs["at"])
    scored = ranker.candidates(config, history, ranker.Queries.of(users), years, content)
    return ranker.top_k(model, scored, len(users), k)


def evaluate(config: EvaluationConfig, als_config: als.ALSConfig, split: Split, movies: DataFrame,
             tags: DataFrame, seconds: dict[str, float]) -> list[dict]:
    """Train ALS on the split and score it, the hybrid, popularity and recent popularity on the same test users;
    one row per model with the split's protocol. `seconds` receives the time of each stage.

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
    queries = (
        als.user_histories(train)
        .join(split.test.groupBy(F.col("user_id").alias("id")).agg(F.collect_list("movie_id").alias("relevant")),
              "id")
        .join(split.cutoffs.withColumnRenamed("user_id", "id"), "id")
        .cache()
    )
    item_users = als.item_users(train).cache()
    train_users = train.select("user_id").distinct().count()
    lap("split")

    def summary(per_user: DataFrame) -> dict:
        return als.summarize(per_user, catalog_size, item_users, train_users)

    model = als_config.als().fit(train)
    lap("als_fit")
    # One top-N pass serves both: ALS's own list is the head of the candidates that the hybrid re-ranks.
    content = hybrid.content_index(movies, training_tags(split, tags))
    als_candidates = hybrid.candidate_signals(
        queries.join(model.userFactors, "id"), als.item_index(model.itemFactors), content,
        max(config.hybrid.candidates, k),
    ).cache()
    als_lists = hybrid.ranked_lists(als_candidates.where(F.col("als_rank") <= k).withColumnRenamed("als_rank", "rank"))
    metrics = {"als": summary(als.evaluate_lists(als_lists.join(queries.select("id", "relevant"), "id"), k))}
    lap("als_candidates")
    counts = item_users.toPandas()
    popularity = ItemIndex(counts["movie_id"].to_numpy(), counts["users"].to_numpy(np.float32)[:, None])
    pop_queries = queries.withColumn("features", F.array(F.lit(1.0).cast("float")))
    metrics["popularity"] = summary(als.evaluate_top_k(pop_queries, popularity, k))
    lap("popularity")
    users = queries.select("id", "exclude", "relevant", day_number("as_of"),
                           F.col("as_of").cast("double").alias("as_of")).toPandas()
    daily = split.train.groupBy("movie_id", day_number("rated_at")).agg(F.count(F.lit(1)).alias("ratings"))
    recent = recent_popularity_top_k(users, daily.toPandas(), config.recent_popularity_days, k)
    metrics["recent_popularity"] = summary(spark.createDataFrame(
        als.evaluation_frame(users["id"].to_numpy(np.int32), recent, list(users["relevant"]), k),
        als.EVALUATION_ROW_SCHEMA))
    lap("recent_popularity")
    metrics["hybrid"] = summary(hybrid.evaluate(als_candidates, queries, split.train, config.hybrid, k))
    lap("hybrid")
    years = movies.select("movie_id", "year").toPandas().set_index("movie_id")["year"].astype(np.float64)
    ranked = ranker_top_k(config.ranker, split, years, tags, movies, content, users, k)
    metrics["ranker"] = summary(spark.createDataFrame(
        als.evaluation_frame(users["id"].to_numpy(np.int32), ranked, list(users["relevant"]), k),
        als.EVALUATION_ROW_SCHEMA))
    lap("ranker")
    if split.protocol == PER_USER and config.report_rmse:
        rating_model = (
            model if not als_config.implicit_prefs
            else als_config.als(implicitPrefs=False, regParam=0.1, maxIter=config.rmse_max_iter,
                                rank=config.rmse_rank).fit(split.train)
        )
        metrics["als"]["rmse"] = als.rmse(rating_model, split.test)
        lap("rmse")
    for frame in (train, queries, item_users, als_candidates, *split.cached):
        frame.unpersist()
    scored = {name: found["users"] for name, found in metrics.items()}
    if len(set(scored.values())) != 1:
        raise ValueError(f"{split.protocol}: the models scored different numbers of test users: {scored}")
    return [{"protocol": split.protocol, "model": name, **metrics[name]} for name in MODELS]


def best_baseline(rows: list[dict], protocol: str, metric: str = "ndcg") -> dict:
    """The better popularity baseline of a protocol on `metric`."""
    return max((row for row in rows if row["protocol"] == protocol and row["model"] in BASELINES),
               key=lambda row: row[metric])
