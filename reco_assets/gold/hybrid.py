"""The served hybrid (`gold_hybrid_recommendations`): for every user with a history, the learned ranker's order of
candidates from EASE, popular and trending movies (gold/ranker.py), trained at each materialization on a
validation slice of everything so far; for anyone else (user_id NULL), trending and popular movies.
Design and figures: docs/recommendation-quality.md.
"""

import time
from datetime import UTC, datetime

import dagster as dg
import numpy as np
import pandas as pd
from dagster_pyspark import LazyPySparkResource
from pydantic import Field
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from reco_assets.gold import als, candidates, ranker, trending
from reco_assets.gold.ranker import RankerConfig
from reco_assets.lakehouse import LakehouseResource
from reco_assets.lakehouse.duck import scalar
from reco_assets.lakehouse.metadata import commit_metadata
from reco_assets.silver import silver_movies, silver_ratings, silver_tags
from reco_assets.silver.events import recent_events, silver_events

SIGNAL_COLUMNS = ("score", "ease_score", "trend_score", "content_score")
HYBRID_COLUMNS = ["user_id", "rank", "movie_id", "score", "ease_score", "trend_score", "content_score", "title",
                  "source", "model_version"]
RANKED_SCHEMA = ("user_id INT, rank INT, movie_id INT, score FLOAT, ease_score FLOAT, trend_score FLOAT, "
                 "content_score FLOAT")


class HybridConfig(RankerConfig):
    k: int = Field(default=20, ge=1, description="movies recommended per user")
    stream_window_hours: float = Field(default=24.0, description="anyone's list: how far back stream events count")
    stream_half_life_hours: float = Field(default=1.0, description="anyone's list: a stream event's half-life")
    trend_half_life_days: float = Field(
        default=90.0, description="anyone's list: half-life of the ratings' trend when the stream has no events")


def standardise(values: np.ndarray) -> np.ndarray:
    """z-scores; zeros where the values are constant."""
    values = np.asarray(values, dtype=np.float64)
    spread = values.std() if len(values) else 0.0
    return (values - values.mean()) / spread if spread > 0 else np.zeros_like(values)


def cold_start_scores(trend: np.ndarray, popularity: np.ndarray) -> np.ndarray:
    """Trending and popular: the mean of the standardised log1p trend and log1p popularity."""
    return (standardise(np.log1p(trend)) + standardise(np.log1p(popularity))) / 2.0


def served_trend(
    spark, lakehouse: LakehouseResource, ratings: DataFrame, config: HybridConfig
) -> tuple[pd.DataFrame, str]:
    """(movie_id, trend_score now; where it comes from): the stream's decayed events (gold_trending_now's score) when
    silver holds events, else the ratings' decayed popularity as of the latest rating."""
    events, as_of = recent_events(spark, lakehouse, config.stream_window_hours)
    if events is not None:
        trend = trending.decayed_scores(events, as_of, config.stream_half_life_hours).select("movie_id", "trend_score")
        return trend.toPandas(), f"stream events as of {as_of.isoformat()}"
    latest = ratings.agg(F.max("rated_at")).first()[0].astimezone(UTC)
    age_days = (F.lit(latest).cast("double") - F.col("rated_at").cast("double")) / candidates.DAY_SECONDS
    trend = ratings.groupBy("movie_id").agg(
        F.sum(F.pow(F.lit(2.0), -age_days / F.lit(config.trend_half_life_days))).alias("trend_score"))
    return trend.toPandas(), f"ratings as of {latest.isoformat()}"


def anyone_list(item_ids: np.ndarray, popularity: np.ndarray, trend: pd.DataFrame, k: int) -> pd.DataFrame:
    """The list for a user without history (user_id NULL): the best `cold_start_scores` of the interacted movies."""
    trend_score = trend.set_index("movie_id")["trend_score"].reindex(item_ids).fillna(0.0).to_numpy()
    score = cold_start_scores(trend_score, popularity)
    best = np.lexsort((item_ids, -score))[:k]
    return pd.DataFrame({"user_id": None, "rank": np.arange(1, len(best) + 1, dtype=np.int32),
                         "movie_id": item_ids[best].astype(np.int32), "score": score[best].astype(np.float32),
                         "trend_score": trend_score[best].astype(np.float32)})


def ranked_rows(model, scored: ranker.Candidates, users: np.ndarray, features: list[str], k: int) -> pd.DataFrame:
    """RANKED_SCHEMA rows of each user's best k candidates; a signal is NaN where it has no value (EASE does not model
    the movie, or the ranker does not use that feature)."""
    picked, rank, probability = ranker.best(model, scored, k)

    def feature(name: str) -> np.ndarray:
        return scored.features[picked, features.index(name)] if name in features else np.full(len(picked), np.nan)

    return pd.DataFrame({
        "user_id": users[scored.row[picked]].astype(np.int32), "rank": (rank + 1).astype(np.int32),
        "movie_id": scored.movie_id[picked].astype(np.int32), "score": probability.astype(np.float32),
        "ease_score": feature("ease_recent").astype(np.float32),
        "trend_score": np.expm1(feature("trend")).astype(np.float32),  # the feature is log1p(interactions)
        "content_score": feature("content").astype(np.float32),
    })


@dg.asset(group_name="gold", kinds={"spark", "scikit-learn", "delta"},
          deps=[silver_ratings, silver_movies, silver_tags, silver_events])
def gold_hybrid_recommendations(
    context: dg.AssetExecutionContext, config: HybridConfig, lakehouse: LakehouseResource,
    pyspark: LazyPySparkResource,
) -> dg.MaterializeResult:
    """Top-K per user: candidates from EASE, popular and trending movies, ordered by a ranker learned at this
    materialization, never a seen movie; trending and popular movies for anyone else (user_id NULL)."""
    started = time.monotonic()
    stage_seconds: dict[str, float] = {}
    clock = [started]

    def lap(stage: str) -> None:
        now = time.monotonic()
        stage_seconds[stage] = round(now - clock[0], 1)
        clock[0] = now

    spark = pyspark.spark_session
    trained_at = datetime.now(UTC)
    ratings, ratings_version = lakehouse.table("silver.ratings").pinned(spark)
    ratings = ratings.select("user_id", "movie_id", "rating", "rated_at").cache()
    events, events_version = als.read_silver_events(spark, lakehouse)
    events_read_until = events.agg(F.max("received_at")).first()[0] if events is not None else None
    movies, tags = (lakehouse.table(f"silver.{name}").read(spark).cache() for name in ("movies", "tags"))
    window = candidates.TrainingWindow.collect(ratings, events)
    catalog = ranker.Catalog.collect(movies, tags)
    lap("collect")
    learned = ranker.learn(config, window, catalog)
    lap("learn")

    history, seen = window.history()
    as_of = float(history.at.max())
    queries = ranker.Queries.everyone(history, seen, as_of)
    generators = ranker.Generators(config, history)
    ranked = pd.concat(ranker.ranked_passes(
        config, generators, queries, catalog.years(), catalog.content(),
        lambda rows, scored: ranked_rows(learned.model, scored, rows.users, config.features, config.k)),
        ignore_index=True)
    lap("rank")
    trend, trend_source = served_trend(spark, lakehouse, ratings, config)
    anyone = anyone_list(history.item_ids, generators.popularity, trend, config.k)
    importances = ranker.importances(learned, k=10, seed=config.seed)
    lap("importances")

    version = f"hybrid-{trained_at:%Y%m%dT%H%M%SZ}-{config.fingerprint()}"
    rows = spark.createDataFrame(ranked, RANKED_SCHEMA).withColumn("source", F.lit("hybrid")).unionByName(
        spark.createDataFrame(anyone, "user_id INT, rank INT, movie_id INT, score FLOAT, trend_score FLOAT")
        .withColumn("source", F.lit("cold_start")), allowMissingColumns=True)
    df = (
        rows.join(F.broadcast(movies.select("movie_id", "title")), "movie_id", "left")
        .withColumn("model_version", F.lit(version))
        .select(*[F.nanvl(F.col(c).cast("float"), F.lit(None).cast("float")).alias(c) if c in SIGNAL_COLUMNS
                  else F.col(c) for c in HYBRID_COLUMNS])  # NULL, not NaN, where a signal has no value
        .orderBy(F.col("user_id").asc_nulls_first(), "rank")
    )
    table = lakehouse.table("gold.hybrid_recommendations")
    commit = table.overwrite(df, context.log)
    lap("write")
    for frame in (ratings, movies, tags):
        frame.unpersist()
    labels = learned.training.labels(learned.relevant)
    relevant_total = sum(len(r) for r in learned.relevant)
    extra = {"events_read_until": dg.MetadataValue.timestamp(events_read_until.astimezone(UTC))} if (
        events_read_until) else {}
    return dg.MaterializeResult(metadata=commit_metadata(
        table, commit, df, started, k=config.k, model_version=version,
        ranker=dg.MetadataValue.json(config.model_dump()),
        feature_importances=dg.MetadataValue.json(importances),
        feature_importance_table=dg.MetadataValue.md(
            pd.DataFrame({"feature": list(importances), "nDCG@10 drop when shuffled": list(importances.values())})
            .sort_values("nDCG@10 drop when shuffled", ascending=False).to_markdown(index=False)),
        validation_users=dg.MetadataValue.int(len(learned.relevant)),
        validation_candidates=dg.MetadataValue.int(len(labels)),
        validation_candidate_recall=dg.MetadataValue.float(round(float(labels.sum()) / max(relevant_total, 1), 4)),
        recommended_as_of=dg.MetadataValue.timestamp(as_of),
        silver_ratings_version=dg.MetadataValue.int(ratings_version),
        silver_events_version=(dg.MetadataValue.int(events_version) if events_version is not None else "no events"),
        trend_source=trend_source, users_hybrid=dg.MetadataValue.int(int(ranked["user_id"].nunique())),
        stage_seconds=dg.MetadataValue.json(stage_seconds), **extra,
    ))


@dg.asset_check(asset=gold_hybrid_recommendations, blocking=True,
                description="no user is recommended a movie they rated or viewed (up to the events the run read)")
def hybrid_excludes_seen(context: dg.AssetCheckExecutionContext, lakehouse: LakehouseResource) -> dg.AssetCheckResult:
    materialization = context.instance.get_latest_materialization_event(gold_hybrid_recommendations.key)
    until = materialization.asset_materialization.metadata.get("events_read_until")
    seen = f"SELECT user_id, movie_id FROM {lakehouse.table('silver.ratings').duckdb()}"
    params = []
    if until is not None:
        seen += (f" UNION ALL SELECT user_id, movie_id FROM "
                 f"{lakehouse.table('silver.event_outcomes').duckdb('silver.events')} "
                 f"WHERE event_type IN {tuple(als.SEEN_EVENT_TYPES)} AND epoch_us(received_at) <= ?")
        params.append(round(until.value * 1e6))
    already_seen = scalar(
        f"SELECT count(*) FROM {lakehouse.table('gold.hybrid_recommendations').duckdb()} h "
        f"SEMI JOIN ({seen}) s USING (user_id, movie_id)", *params)
    return dg.AssetCheckResult(passed=already_seen == 0, metadata={"recommendations_already_seen": already_seen})
