"""Gold: ALS recommendations, similar movies, the popularity baseline, the hybrid and the offline evaluation."""

import math
import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import numpy as np
import pandas as pd
from dagster_pyspark import LazyPySparkResource
from pydantic import Field
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from reco_assets.gold import als, evaluation, hybrid, splits
from reco_assets.gold.ranking import ItemIndex
from reco_assets.lakehouse import LakehouseResource
from reco_assets.lakehouse.duck import scalar
from reco_assets.lakehouse.metadata import commit_metadata
from reco_assets.silver import silver_movies, silver_ratings, silver_tags
from reco_assets.silver.events import silver_events

GOLD_KINDS = {"spark", "delta"}


def _read(spark, lakehouse: LakehouseResource, layer: str, table: str) -> DataFrame:
    return lakehouse.table(f"{layer}.{table}").read(spark)


def _join_movies(df: DataFrame, movies: DataFrame, on: str = "movie_id", **columns: str) -> DataFrame:
    """Left-join movie attributes as new columns: `title="title"` adds silver.movies.title as `title`."""
    attributes = movies.select(F.col("movie_id").alias(on), *[F.col(src).alias(dst) for dst, src in columns.items()])
    return df.join(F.broadcast(attributes), on, "left")


class ModelConfig(als.ALSConfig, evaluation.EvaluationConfig):
    """The ALS settings, how they are evaluated, and whether a model that loses to popularity is served."""

    require_beating_popularity: bool = Field(
        default=True,
        description="train and serve the model only when ALS beats popularity on the per-user hold-out (nDCG@K); "
                    "false serves it anyway",
    )


MODEL_GATE = dg.AssetCheckSpec(
    "als_beats_popularity", asset="gold_reco_evaluation", blocking=True,
    description="ALS beats the popularity baseline on nDCG@K of the per-user hold-out; when it does not, no new "
                "model is trained or served and the previous one stays",
)
EVALUATION_COLUMNS = {
    "protocol": "STRING", "model": "STRING", "k": "INT", "precision": "DOUBLE", "recall": "DOUBLE", "ndcg": "DOUBLE",
    "map": "DOUBLE", "coverage": "DOUBLE", "novelty": "DOUBLE", "rmse": "DOUBLE", "users": "INT",
    "model_version": "STRING", "cutoff": "TIMESTAMP", "evaluated_at": "TIMESTAMP",
}
# Metadata keys of a protocol's metrics: the per-user protocol's keep the names they had before the global one came.
METADATA_PREFIX = {splits.PER_USER: "", splits.GLOBAL: "temporal_"}


def _evaluation_metadata(rows: list[dict], evaluated: list[splits.Split], k: int) -> dict:
    """Per protocol: its split, users, each model's metrics, and nDCG ratios against popularity, the better
    popularity baseline and ALS."""
    metadata = {}
    for split in evaluated:
        prefix = METADATA_PREFIX[split.protocol]
        by_model = {row["model"]: row for row in rows if row["protocol"] == split.protocol}
        metadata[f"{prefix}split"] = split.description
        metadata[f"{prefix}users_evaluated"] = dg.MetadataValue.int(by_model["als"]["users"])
        metadata[f"{prefix}test_users"] = dg.MetadataValue.int(by_model["als"]["test_users"])
        for model, row in by_model.items():
            for metric in als.METRIC_NAMES:
                metadata[f"{prefix}{model}_{metric}_at_{k}"] = dg.MetadataValue.float(round(row[metric], 5))
            for metric in ("coverage", "novelty"):
                metadata[f"{prefix}{model}_{metric}"] = dg.MetadataValue.float(round(row[metric], 5))
        best = evaluation.best_baseline(rows, split.protocol)
        for model, baseline in (("als", "popularity"), ("hybrid", "popularity"), ("hybrid", "als"),
                                ("als", "best_popularity"), ("hybrid", "best_popularity")):
            denominator = best["ndcg"] if baseline == "best_popularity" else by_model[baseline]["ndcg"]
            ratio = by_model[model]["ndcg"] / denominator if denominator else float("nan")
            metadata[f"{prefix}ndcg_ratio_{model}_vs_{baseline}"] = dg.MetadataValue.float(round(ratio, 3))
    return metadata


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "als_model",
            group_name="gold",
            kinds={"spark", "mllib"},
            # Trained only once its settings passed the evaluation's gate (als_beats_popularity).
            deps=[silver_ratings, silver_events, "gold_reco_evaluation"],
            skippable=True,
            description=(
                "Spark MLlib ALS model trained on all silver ratings plus the streamed ratings, views and clicks "
                "of every silver_events hour: its user and item factors in gold.als_factors, with the versions of "
                "the silver tables it trained on. Not retrained when its settings lose to popularity."
            ),
        ),
        dg.AssetSpec(
            "gold_reco_evaluation",
            group_name="gold",
            kinds=GOLD_KINDS,
            deps=[silver_ratings, silver_movies, silver_tags, silver_events],
            description=(
                "Offline evaluation of ALS, the hybrid (the learned ranker), popularity and recent popularity "
                "under two protocols, a per-user chronological hold-out and a global temporal split: precision, "
                "recall, nDCG and MAP at K, catalog coverage, novelty, RMSE."
            ),
        ),
    ],
    check_specs=[MODEL_GATE],
    can_subset=False,
)
def als_model_and_evaluation(
    context: dg.AssetExecutionContext, config: ModelConfig, lakehouse: LakehouseResource, pyspark: LazyPySparkResource
):
    """Evaluate the ALS settings on a hold-out; when ALS beats popularity, train the served model with them on every
    rating and event. When it does not, the gate fails the run and the previous model stays in gold.als_factors."""
    spark = pyspark.spark_session
    ratings_table = lakehouse.table("silver.ratings")
    ratings, ratings_version = ratings_table.pinned(spark)
    ratings = ratings.select("user_id", "movie_id", "rating", "rated_at").cache()
    events, events_version = als.read_silver_events(spark, lakehouse)
    trained_at = datetime.now(UTC)
    version = f"als-{trained_at:%Y%m%dT%H%M%SZ}-{config.fingerprint()}"
    versions = {"als": version, "hybrid": f"hybrid-{trained_at:%Y%m%dT%H%M%SZ}-{config.hybrid.fingerprint()}"}

    started = time.monotonic()
    stage_seconds: dict[str, float] = {}
    movies, tags = _read(spark, lakehouse, "silver", "movies"), _read(spark, lakehouse, "silver", "tags")
    evaluated = [splits.per_user_chronological(ratings, events, config.holdout_fraction)]
    if config.global_temporal:
        evaluated.append(splits.global_temporal(ratings, events, config.temporal_cutoff_quantile))
    rows = [row for split in evaluated
            for row in evaluation.evaluate(config, config, split, movies, tags, stage_seconds)]
    context.log.info(f"evaluation stages (seconds): {stage_seconds}")
    cuts = {split.protocol: split.cut for split in evaluated}
    for row in rows:
        row.update(k=config.eval_k, model_version=versions.get(row["model"]),
                   cutoff=cuts[row["protocol"]], evaluated_at=trained_at)
    # NULL, not NaN, where a metric has no value (RMSE of a baseline, say)
    records = [tuple(None if isinstance(value := row.get(name), float) and math.isnan(value) else value
                     for name in EVALUATION_COLUMNS) for row in rows]
    eval_table = lakehouse.table("gold.reco_evaluation")
    eval_commit = eval_table.overwrite(spark.createDataFrame(
        records, schema=", ".join(f"{name} {kind}" for name, kind in EVALUATION_COLUMNS.items())
    ).coalesce(1), context.log)
    metrics = _evaluation_metadata(rows, evaluated, config.eval_k)
    by_model = {row["model"]: row for row in rows if row["protocol"] == splits.PER_USER}
    als_row = by_model["als"]
    beats = by_model["als"]["ndcg"] > by_model["popularity"]["ndcg"]
    gate = dg.AssetCheckResult(
        check_name=MODEL_GATE.name,
        passed=beats,
        # A warning does not block: with the override, the losing model is trained and served, and the UI says so.
        severity=dg.AssetCheckSeverity.ERROR if config.require_beating_popularity else dg.AssetCheckSeverity.WARN,
        description=None if beats else (
            f"ALS ({by_model['als']['ndcg']:.4f}) does not beat popularity ({by_model['popularity']['ndcg']:.4f}) on "
            f"nDCG@{config.eval_k} of the per-user hold-out: " + (
                "the previous model stays served" if config.require_beating_popularity
                else "served anyway (require_beating_popularity is false)")),
        metadata={"als_ndcg": metrics[f"als_ndcg_at_{config.eval_k}"],
                  "popularity_ndcg": metrics[f"popularity_ndcg_at_{config.eval_k}"],
                  "ratio": metrics["ndcg_ratio_als_vs_popularity"], "model_version": version},
    )
    yield dg.MaterializeResult(
        asset_key="gold_reco_evaluation",
        metadata={
            **metrics,
            "als_rmse": dg.MetadataValue.float(round(als_row.get("rmse", float("nan")), 5)),
            "hybrid_ranker": dg.MetadataValue.json(config.hybrid.model_dump()),
            "model_version": version,
            "delta_version": dg.MetadataValue.int(eval_commit.version),
            "path": dg.MetadataValue.path(eval_table.uri),
            "summary": dg.MetadataValue.md(
                pd.DataFrame(rows).drop(columns=["evaluated_at", "model_version", "cutoff"]).to_markdown(index=False)),
            "seconds": round(time.monotonic() - started, 2),
            "stage_seconds": dg.MetadataValue.json(stage_seconds),
        },
        check_results=[gate],
    )
    if not beats and config.require_beating_popularity:
        context.log.error(f"{gate.description}; als_model is not retrained")
        return

    started = time.monotonic()
    training = als.interactions(ratings, events).cache()
    model = config.als().fit(training)
    trained_on = {"silver.ratings": ratings_version, "silver.event_outcomes": events_version}
    info = {
        "model_version": version,
        "trained_at": trained_at.isoformat(timespec="seconds"),
        "params": config.model_dump(),
        "trained_on_versions": trained_on,
        "ratings": ratings.count(),
        "interactions": training.count(),
        "stream_events": events.count() if events is not None else 0,
        "users": model.userFactors.count(),
        "items": model.itemFactors.count(),
    }
    factors = lakehouse.table("gold.als_factors")
    commit = factors.overwrite(als.factors_table(model, info), context.log)
    for frame in (ratings, training):
        frame.unpersist()
    yield dg.MaterializeResult(
        asset_key="als_model",
        metadata={
            "model_version": version,
            "delta_version": dg.MetadataValue.int(commit.version),
            "table": factors.name,
            "path": dg.MetadataValue.path(factors.uri),
            "silver_ratings_version": dg.MetadataValue.int(ratings_version),
            "silver_events_version": (dg.MetadataValue.int(events_version) if events_version is not None
                                      else "no events"),
            "params": dg.MetadataValue.json(config.model_dump()),
            "ratings": dg.MetadataValue.int(info["ratings"]),
            "interactions": dg.MetadataValue.int(info["interactions"]),
            "stream_events": dg.MetadataValue.int(info["stream_events"]),
            "users": dg.MetadataValue.int(info["users"]),
            "items": dg.MetadataValue.int(info["items"]),
            "train_seconds": round(time.monotonic() - started, 2),
        },
    )


class RecommendationsConfig(dg.Config):
    k: int = Field(default=20, description="movies recommended per user")


# Retrained daily (daily_als_retrain, 03:00 UTC): the UI warns when a day's retrain was missed, or its model was
# not served (the model gate), and fails after two.
RETRAIN_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=48), warn_window=timedelta(hours=26))


@dg.asset(group_name="gold", kinds=GOLD_KINDS, deps=["als_model", silver_ratings, silver_movies, silver_events],
          freshness_policy=RETRAIN_FRESHNESS)
def gold_recommendations(
    context: dg.AssetExecutionContext, config: RecommendationsConfig, lakehouse: LakehouseResource,
    pyspark: LazyPySparkResource,
) -> dg.MaterializeResult:
    """Top-K movies per user by the ALS model, never one the user has rated or viewed."""
    started = time.monotonic()
    spark = pyspark.spark_session
    model = als.load_factors(spark, lakehouse)
    info = model.info
    events, _ = als.read_silver_events(spark, lakehouse)
    seen = als.seen_movies(als.interactions(_read(spark, lakehouse, "silver", "ratings"), events))
    queries = model.users.join(seen, "id", "left").withColumn(
        "exclude", F.coalesce("exclude", F.array().cast("array<int>"))
    )
    # cached: the sorted write samples its input first, which would score every user twice
    recommendations = als.recommend_top_k(queries, als.item_index(model.items), config.k).cache()
    df = (
        _join_movies(recommendations, _read(spark, lakehouse, "silver", "movies"), title="title", year="year")
        .withColumn("model_version", F.lit(info["model_version"]))
        .select("user_id", "rank", "movie_id", "score", "title", "year", "model_version")
        .orderBy("user_id", "rank")
    )
    table = lakehouse.table("gold.recommendations")
    commit = table.overwrite(df, context.log)
    recommendations.unpersist()
    return dg.MaterializeResult(
        metadata=commit_metadata(table, commit, df, started, k=config.k, model_version=info["model_version"])
    )


class SimilarMoviesConfig(dg.Config):
    n: int = Field(default=20, description="neighbours kept per movie")
    min_ratings: int = Field(default=10, description="a neighbour needs at least this many ratings")


@dg.asset(group_name="gold", kinds=GOLD_KINDS, deps=["als_model", silver_ratings, silver_movies])
def gold_similar_movies(
    context: dg.AssetExecutionContext, config: SimilarMoviesConfig, lakehouse: LakehouseResource,
    pyspark: LazyPySparkResource,
) -> dg.MaterializeResult:
    """Top-N neighbours per movie by cosine similarity of the ALS item factors."""
    started = time.monotonic()
    spark = pyspark.spark_session
    model = als.load_factors(spark, lakehouse)
    info = model.info
    factors = als.item_index(model.items)
    ids = factors.ids
    unit = factors.vectors / np.maximum(np.linalg.norm(factors.vectors, axis=1, keepdims=True), 1e-12)
    counts = _read(spark, lakehouse, "silver", "ratings").groupBy("movie_id").count()
    rated = counts.where(F.col("count") >= config.min_ratings).select("movie_id").toPandas()["movie_id"].to_numpy()
    candidates = np.isin(ids, rated)
    queries = spark.createDataFrame(
        pd.DataFrame({"id": ids, "features": list(unit), "exclude": [[movie_id] for movie_id in ids]}),
        "id INT, features ARRAY<FLOAT>, exclude ARRAY<INT>",
    ).repartition(int(spark.conf.get("spark.sql.shuffle.partitions")))  # a local frame is one task under Connect
    neighbours = als.recommend_top_k(queries, ItemIndex(ids[candidates], unit[candidates]), config.n).select(
        F.col("user_id").alias("movie_id"), "rank", F.col("movie_id").alias("similar_movie_id"), "score"
    ).cache()  # the sorted write samples its input first
    movies = _read(spark, lakehouse, "silver", "movies")
    df = (
        _join_movies(
            _join_movies(neighbours, movies, title="title"), movies, on="similar_movie_id", similar_title="title"
        )
        .withColumn("model_version", F.lit(info["model_version"]))
        .select("movie_id", "rank", "similar_movie_id", "score", "title", "similar_title", "model_version")
        .orderBy("movie_id", "rank")
    )
    table = lakehouse.table("gold.similar_movies")
    commit = table.overwrite(df, context.log)
    neighbours.unpersist()
    return dg.MaterializeResult(
        metadata=commit_metadata(table, commit, df, started, n=config.n, min_ratings=config.min_ratings)
    )


@dg.asset(group_name="gold", kinds=GOLD_KINDS, deps=[silver_ratings, silver_movies])
def gold_popular_movies(context: dg.AssetExecutionContext, lakehouse: LakehouseResource,
                        pyspark: LazyPySparkResource) -> dg.MaterializeResult:
    """The popularity baseline and cold-start fallback: movies ranked by number of ratings."""
    started = time.monotonic()
    spark = pyspark.spark_session
    popularity = (
        _read(spark, lakehouse, "silver", "ratings")
        .groupBy("movie_id")
        .agg(F.count(F.lit(1)).alias("num_ratings"), F.round(F.avg("rating"), 3).alias("avg_rating"))
    )
    by_popularity = Window.orderBy(F.col("num_ratings").desc(), F.col("avg_rating").desc(), "movie_id")
    ranked = popularity.withColumn("rank", F.row_number().over(by_popularity))
    df = (
        _join_movies(ranked, _read(spark, lakehouse, "silver", "movies"), title="title", year="year")
        .select("rank", "movie_id", "num_ratings", "avg_rating", "title", "year")
        .orderBy("rank")
        .coalesce(1)
    )
    table = lakehouse.table("gold.popular_movies")
    return dg.MaterializeResult(metadata=commit_metadata(table, table.overwrite(df, context.log), df, started))


@dg.asset_check(asset=gold_recommendations, blocking=True, description="no user is recommended a movie they rated")
def recommendations_exclude_rated(lakehouse: LakehouseResource) -> dg.AssetCheckResult:
    already_rated = scalar(
        f"SELECT count(*) FROM {lakehouse.table('gold.recommendations').duckdb()} r "
        f"SEMI JOIN {lakehouse.table('silver.ratings').duckdb()} s USING (user_id, movie_id)")
    return dg.AssetCheckResult(passed=already_rated == 0, metadata={"recommendations_already_rated": already_rated})


@dg.asset_check(asset=gold_recommendations, description="every user with ratings has a full list of K movies")
def recommendations_cover_every_user(lakehouse: LakehouseResource) -> dg.AssetCheckResult:
    short = scalar(
        f"WITH users AS (SELECT DISTINCT user_id FROM {lakehouse.table('silver.ratings').duckdb()}), "
        f"lists AS (SELECT user_id, count(*) AS n FROM {lakehouse.table('gold.recommendations').duckdb()} "
        "GROUP BY user_id), k AS (SELECT max(n) AS k FROM lists) "
        "SELECT count(*) FROM users LEFT JOIN lists USING (user_id), k WHERE coalesce(n, 0) < k.k")
    return dg.AssetCheckResult(passed=short == 0, metadata={"users_without_full_list": short})


gold_assets = [
    als_model_and_evaluation,
    gold_recommendations,
    gold_similar_movies,
    gold_popular_movies,
    hybrid.gold_hybrid_recommendations,
]
gold_checks = [
    recommendations_exclude_rated,
    recommendations_cover_every_user,
    hybrid.hybrid_excludes_seen,
]
