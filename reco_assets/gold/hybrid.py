"""Hybrid re-ranking: ALS candidates re-scored by a weighted mix of model score, trending and content similarity.

For every user the top `candidates` unseen movies of ALS get three signals: the ALS score, the movie's trend
score (time-decayed popularity as of the moment the list is made) and the cosine between the movie's TF-IDF
vector (genres and tags) and the user's history profile. Each signal is standardised over the user's
candidates (z-scores; the trend, a decayed count, after log1p), so a weight says how many points one standard
deviation of that signal is worth, and the score is the weighted mean. Users the model does not know get
trending and popular movies (`cold_start`). Design and tuning: docs/recommendation-quality.md.
"""

import hashlib
import json
import math
import re
import time
from datetime import UTC

import dagster as dg
import numpy as np
import pandas as pd
from dagster_pyspark import LazyPySparkResource
from pydantic import Field
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, IntegerType, StructField, StructType
from scipy import sparse

from reco_assets.gold import als, trending
from reco_assets.gold.ranking import ItemIndex, kept_ranks, locate, padded, top_k
from reco_assets.lakehouse import LakehouseResource
from reco_assets.lakehouse.duck import scalar
from reco_assets.lakehouse.metadata import commit_metadata
from reco_assets.silver import silver_movies, silver_ratings, silver_tags
from reco_assets.silver.events import recent_events, silver_events

LN2 = math.log(2.0)
# 2 ** -1100 is 0 in float64: an event this many half-lives old contributes nothing.
HALF_LIVES_TO_ZERO = 1100.0
TAG_WORD = re.compile(r"[a-z0-9]+")
# Tag words count a quarter as much as genres: on the sample, tags cover 16 % of the movies and swamp the
# genres of those they cover when both share one vector.
TAG_WEIGHT = 0.25
# A history movie's weight in the profile: its signal minus the user's mean signal, plus half a star, so
# what the user liked more than usual counts more, disliked movies count against, and a history of equal
# signals (only views, say) still has a profile.
PROFILE_OFFSET = 0.5
CANDIDATE_SCHEMA = "user_id INT, movie_id INT, als_rank INT, als_score FLOAT, content_score FLOAT"
RERANKED_COLUMNS = {"user_id": np.int32, "rank": np.int32, "movie_id": np.int32, "score": np.float32,
                    "als_score": np.float32, "trend_score": np.float32, "content_score": np.float32}
RERANKED_SCHEMA = ", ".join(
    f"{name} {'INT' if dtype is np.int32 else 'FLOAT'}" for name, dtype in RERANKED_COLUMNS.items()
)
SIGNAL_COLUMNS = ("score", "als_score", "trend_score", "content_score")
HYBRID_COLUMNS = ["user_id", "rank", "movie_id", "score", "als_score", "trend_score", "content_score", "title",
                  "source", "model_version"]


class HybridWeights(dg.Config):
    """How the hybrid mixes its signals; the defaults were tuned on ml-latest-small."""

    als_weight: float = Field(default=0.4, description="weight of the ALS score (z-score over the user's candidates)")
    trend_weight: float = Field(default=0.2, description="weight of the movie's trend score (log1p, then z-score)")
    content_weight: float = Field(default=0.4, description="weight of the genre and tag cosine to the user's profile")
    candidates: int = Field(default=100, description="ALS candidates re-ranked per user")
    trend_half_life_days: float = Field(
        default=90.0,
        description="half-life of the ratings' trend score: offline, and served when the stream has no events",
    )

    def weights(self) -> np.ndarray:
        """(ALS, trend, content) weights scaled to sum to 1."""
        weights = np.array([self.als_weight, self.trend_weight, self.content_weight])
        if (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"hybrid weights must be non-negative and not all zero, got {weights.tolist()}")
        return weights / weights.sum()

    def fingerprint(self) -> str:
        return hashlib.sha1(json.dumps(self.model_dump(), sort_keys=True).encode()).hexdigest()[:8]


class HybridConfig(HybridWeights):
    k: int = Field(default=20, description="movies recommended per user")
    stream_window_hours: float = Field(default=24.0, description="served trend: how far back stream events count")
    stream_half_life_hours: float = Field(default=1.0, description="served trend: a stream event's half-life")


def standardise(values: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """z-scores along the last axis over the `valid` entries (default: all); zeros where those are constant (the
    signal then cannot reorder anything) and at invalid entries."""
    values = np.asarray(values, dtype=np.float64)
    valid = np.ones(values.shape, bool) if valid is None else valid
    counts = np.maximum(valid.sum(axis=-1, keepdims=True), 1)
    centred = np.where(valid, values - np.where(valid, values, 0.0).sum(axis=-1, keepdims=True) / counts, 0.0)
    spread = np.sqrt((centred**2).sum(axis=-1, keepdims=True) / counts)
    return np.divide(centred, spread, out=np.zeros_like(centred), where=spread > 0)


def normalised_signals(
    als_score: np.ndarray, trend: np.ndarray, content: np.ndarray, valid: np.ndarray | None = None
) -> np.ndarray:
    """[..., 3]: the ALS score, log1p(trend) and the content cosine, each standardised over the candidates (the
    last axis; only the `valid` ones when given)."""
    return np.stack([standardise(als_score, valid), standardise(np.log1p(trend), valid),
                     standardise(content, valid)], axis=-1)


def blend(signals: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Scores of normalised signals [..., s] under weights [s] that sum to 1 (HybridWeights.weights)."""
    return np.asarray(signals, dtype=np.float64) @ np.asarray(weights, dtype=np.float64)


def rerank_rows(
    als_score: np.ndarray, trend: np.ndarray, content: np.ndarray, valid: np.ndarray, weights: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """For candidate rows [users, candidates] (`valid` marks the real ones): (positions [users, k'] of each row's
    best k, their scores), best first, equal scores in candidate order; -inf where a row has fewer than k."""
    scores = np.where(valid, blend(normalised_signals(als_score, trend, content, valid), weights), -np.inf)
    best = np.argsort(-scores, axis=-1, kind="stable")[..., :k]
    return best, np.take_along_axis(scores, best, axis=-1)


def profile_weights(signals: np.ndarray) -> np.ndarray:
    """Weights of a user's history movies in their content profile (see PROFILE_OFFSET)."""
    signals = np.asarray(signals, dtype=np.float64)
    return signals - signals.mean() + PROFILE_OFFSET if len(signals) else signals


def cold_start_scores(trend: np.ndarray, popularity: np.ndarray) -> np.ndarray:
    """Trending and popular: the mean of the standardised log1p trend and log1p popularity."""
    return (standardise(np.log1p(trend)) + standardise(np.log1p(popularity))) / 2.0


def decayed_counts_as_of(
    event_keys: np.ndarray, event_times: np.ndarray, query_keys: np.ndarray, query_times: np.ndarray, half_life: float
) -> np.ndarray:
    """For each query: Σ 2^(-(query time - event time) / half_life) over the events of its key at or before it.

    Times and the half-life share one unit. Vectorised: the keys are laid end to end on one time line, each so
    far after the previous one that the previous key's events have decayed to exactly 0, and a running
    log-sum-exp of 2^(t / half_life) along that line gives every query's sum at once.
    """
    if not len(query_times):
        return np.empty(0)
    times = np.concatenate([event_times, query_times]).astype(np.float64)
    is_query = np.r_[np.zeros(len(event_times), bool), np.ones(len(query_times), bool)]
    _, key_index = np.unique(np.concatenate([event_keys, query_keys]), return_inverse=True)
    start = times.min()
    gap = times.max() - start + HALF_LIVES_TO_ZERO * half_life
    line = (times - start) + key_index * gap
    order = np.lexsort((is_query, line))  # by time on the line; an event at a query's moment counts for it
    exponents = line[order] * (LN2 / half_life)
    log_sums = np.logaddexp.accumulate(np.where(is_query[order], -np.inf, exponents))
    decayed = np.empty(len(times))
    decayed[order] = np.exp(log_sums - exponents)
    return decayed[len(event_times):]


def tag_words(tags: list[str]) -> list[str]:
    """The lower-cased words of a movie's tags."""
    return [word for tag in tags for word in TAG_WORD.findall(tag.lower())]


def tfidf(documents: list[list[str]]) -> sparse.csr_matrix:
    """L2-normalised TF-IDF rows of tokenised documents (no columns when there is no token at all)."""
    if not any(documents):
        return sparse.csr_matrix((len(documents), 0), dtype=np.float32)
    # scikit-learn is imported where it is used (here and in ContentIndex): importing it takes about 1.1 s, and every
    # run process loads this module, the live event runs' too.
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import normalize

    vectorizer = TfidfVectorizer(analyzer=_identity, sublinear_tf=True, dtype=np.float32)
    return normalize(vectorizer.fit_transform(documents))


class ContentIndex:
    """TF-IDF vectors of movies by sorted id: genres and tag words, each block L2-normalised, tags × TAG_WEIGHT."""

    def __init__(self, ids: np.ndarray, vectors: sparse.csr_matrix):
        from sklearn.preprocessing import normalize

        order = np.argsort(ids, kind="stable")
        self.ids = np.asarray(ids, dtype=np.int64)[order]
        self.vectors = normalize(sparse.csr_matrix(vectors, dtype=np.float32)[order])

    @classmethod
    def from_movies(cls, movies: pd.DataFrame, tags: pd.DataFrame) -> "ContentIndex":
        """`movies`: movie_id, genres (list); `tags`: movie_id, tag."""
        tags_by_movie = tags.groupby("movie_id")["tag"].agg(list)
        genres = tfidf([list(g) for g in movies["genres"]])
        tagged = tfidf([tag_words(tags_by_movie.get(movie_id, [])) for movie_id in movies["movie_id"]])
        return cls(movies["movie_id"].to_numpy(), sparse.hstack([genres, TAG_WEIGHT * tagged]).tocsr())

    def positions(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions of the ids that are indexed, mask of those ids among `ids`)."""
        return locate(self.ids, ids)

    def similarities(self, histories: list[np.ndarray], weights: list[np.ndarray],
                     candidates: list[np.ndarray]) -> list[np.ndarray]:
        """For each user, the cosine between each of their candidates and their profile (the weighted sum of their
        history movies' vectors). All users at once: one sparse product builds the profiles, one row-wise product
        scores every (user, candidate) pair."""
        from sklearn.preprocessing import normalize

        n = len(histories)
        lengths = [len(h) for h in histories]
        rows, known = self.positions(np.concatenate(histories) if n else np.empty(0, np.int64))
        users = np.repeat(np.arange(n), lengths)[known]
        history_weights = np.concatenate(weights)[known] if n else np.empty(0)
        profiles = normalize(sparse.csr_matrix((history_weights.astype(np.float32), (users, rows)),
                                               shape=(n, len(self.ids))) @ self.vectors)
        counts = [len(c) for c in candidates]
        scores = np.zeros(sum(counts), np.float32)
        candidate_rows, candidate_known = self.positions(np.concatenate(candidates) if n else np.empty(0, np.int64))
        owners = np.repeat(np.arange(n), counts)[candidate_known]
        scores[candidate_known] = np.asarray(
            self.vectors[candidate_rows].multiply(profiles[owners]).sum(axis=1)).ravel()
        return np.split(scores, np.cumsum(counts)[:-1]) if n else []


def _identity(tokens: list[str]) -> list[str]:
    return tokens


def content_index(movies: DataFrame, tags: DataFrame) -> ContentIndex:
    """The ContentIndex of silver movies and tags (collected to the driver; scikit-learn builds it)."""
    return ContentIndex.from_movies(movies.select("movie_id", "genres").toPandas(),
                                    tags.select("movie_id", "tag").toPandas())


def _candidate_blocks(pdf: pd.DataFrame, als_index: ItemIndex, content: ContentIndex, n: int):
    """Per block of query rows (id, features, exclude, history, history_signal): (user ids [u], the top-n ALS
    candidates [u, n'], their ALS scores, valid [u, n'] (False where a user has fewer), content cosines)."""
    for rows, items, scores in top_k(als_index, als.feature_matrix(pdf), list(pdf["exclude"]), n):
        valid = np.isfinite(scores)
        similarities = content.similarities(
            list(pdf["history"].iloc[rows]), [profile_weights(s) for s in pdf["history_signal"].iloc[rows]],
            [user_items[ok] for user_items, ok in zip(items, valid, strict=True)])
        cosines = np.zeros(items.shape, np.float32)
        cosines[valid] = np.concatenate(similarities) if similarities else []
        yield pdf["id"].to_numpy()[rows], items, scores, valid, cosines


def candidate_signals(queries: DataFrame, als_index: ItemIndex, content: ContentIndex, n: int) -> DataFrame:
    """The top-n ALS candidates of each query row (id, features, exclude, history, history_signal), with their
    ALS rank and score and the content cosine. Both indexes travel in the task closure (Spark Connect has no
    broadcast)."""

    def score(batches):
        for pdf in batches:
            for users, items, scores, valid, cosines in _candidate_blocks(pdf, als_index, content, n):
                yield pd.DataFrame({
                    "user_id": np.repeat(users, valid.sum(axis=1)).astype(np.int32),
                    "movie_id": items[valid].astype(np.int32),
                    "als_rank": kept_ranks(valid).astype(np.int32),
                    "als_score": scores[valid].astype(np.float32),
                    "content_score": cosines[valid],
                })

    return queries.select("id", "features", "exclude", "history", "history_signal").mapInPandas(
        score, CANDIDATE_SCHEMA
    )


def reranked_frame(users: np.ndarray, items: np.ndarray, als_score: np.ndarray, trend: np.ndarray,
                   content: np.ndarray, valid: np.ndarray, weights: np.ndarray, k: int) -> pd.DataFrame:
    """RERANKED_COLUMNS rows of the best k of candidate rows [users, candidates] (see rerank_rows)."""
    best, scores = rerank_rows(als_score, trend, content, valid, weights, k)
    kept = np.isfinite(scores)

    def pick(values: np.ndarray) -> np.ndarray:
        return np.take_along_axis(values, best, axis=1)[kept]

    columns = (np.repeat(users, kept.sum(axis=1)), kept_ranks(kept),
               pick(items), scores[kept], pick(als_score), pick(trend), pick(content))
    return pd.DataFrame({name: values.astype(dtype) for (name, dtype), values
                         in zip(RERANKED_COLUMNS.items(), columns, strict=True)})


def hybrid_top_k(queries: DataFrame, als_index: ItemIndex, content: ContentIndex, trend: pd.DataFrame,
                 weights: np.ndarray, n: int, k: int) -> DataFrame:
    """The hybrid's best k for each query row (id, features, exclude, history, history_signal): its top-n ALS
    candidates re-ranked with their content cosine and the movie's trend (`trend`: movie_id, trend_score; 0 for
    a movie not in it), in the same task that finds them."""
    trend = trend.sort_values("movie_id")
    trend_ids, trend_scores = trend["movie_id"].to_numpy(np.int64), trend["trend_score"].to_numpy(np.float64)

    def score(batches):
        for pdf in batches:
            for users, items, scores, valid, cosines in _candidate_blocks(pdf, als_index, content, n):
                found, known = locate(trend_ids, items.ravel())
                trends = np.zeros(items.size)
                trends[known] = trend_scores[found]
                yield reranked_frame(users, items, scores, trends.reshape(items.shape), cosines, valid, weights, k)

    return queries.select("id", "features", "exclude", "history", "history_signal").mapInPandas(
        score, RERANKED_SCHEMA
    )


def with_trend_as_of(events: DataFrame, queries: DataFrame, half_life_days: float) -> DataFrame:
    """The query rows (user_id, movie_id, as_of, any other columns) with trend_score instead of as_of: the events
    (movie_id, at) of the movie at or before `as_of`, each weighing 2^(-age in days / half-life).

    Rows are hash-partitioned by movie, so each task holds whole movies and runs decayed_counts_as_of once; the
    query rows carry their other columns through, so nothing has to be joined back.
    """
    kept = [name for name in queries.columns if name != "as_of"]
    schema = StructType([queries.schema[name] for name in kept] + [StructField("trend_score", DoubleType())])
    integers = [field.name for field in schema.fields if isinstance(field.dataType, IntegerType)]

    def day(column: str) -> Column:
        return (F.col(column).cast("double") / 86400.0).alias("_day")

    rows = events.select("movie_id", day("at"), F.lit(False).alias("_is_query")).unionByName(
        queries.select(*kept, day("as_of"), F.lit(True).alias("_is_query")), allowMissingColumns=True
    )

    def score(batches):
        pdf = pd.concat(list(batches), ignore_index=True)
        event, query = pdf[~pdf["_is_query"]], pdf[pdf["_is_query"]]
        if len(query):
            trend = decayed_counts_as_of(event["movie_id"].to_numpy(), event["_day"].to_numpy(),
                                         query["movie_id"].to_numpy(), query["_day"].to_numpy(), half_life_days)
            # integer columns that are null on the event rows arrive as floats
            yield query[kept].astype({name: np.int32 for name in integers}).assign(trend_score=trend)

    return rows.repartition("movie_id").mapInPandas(score, schema)


def ranked_lists(recommendations: DataFrame) -> DataFrame:
    """id, recommended: each user's movie ids in rank order."""
    return recommendations.groupBy(F.col("user_id").alias("id")).agg(
        F.sort_array(F.collect_list(F.struct("rank", "movie_id"))).getField("movie_id").alias("recommended")
    )


def evaluate(candidates: DataFrame, queries: DataFrame, train_ratings: DataFrame, config: HybridWeights,
             k: int) -> DataFrame:
    """Per-user metrics at k of the hybrid for query rows (id, relevant, as_of) of a test set.

    `candidates`: candidate_signals of the model trained on the split (at least config.candidates per user). The
    trend is as of each user's `as_of` (the moment they are recommended to) and counts training ratings only, so
    nothing of the test period leaks.
    """
    cutoffs = queries.select(F.col("id").alias("user_id"), "as_of")
    scored = with_trend_as_of(
        train_ratings.select("movie_id", F.col("rated_at").alias("at")),
        candidates.where(F.col("als_rank") <= config.candidates).join(F.broadcast(cutoffs), "user_id"),
        config.trend_half_life_days,
    )
    signals = ["movie_id", "als_score", "trend_score", "content_score"]
    per_user = scored.groupBy(F.col("user_id").alias("id")).agg(
        F.sort_array(F.collect_list(F.struct("als_rank", *signals))).alias("c")
    ).select("id", *[F.col(f"c.{name}").alias(name) for name in signals]).join(queries.select("id", "relevant"), "id")
    weights = config.weights()

    def score(batches):
        for pdf in batches:
            items = padded(list(pdf["movie_id"]))
            best, scores = rerank_rows(*[padded(list(pdf[name]), fill=0.0, dtype=np.float64) for name in signals[1:]],
                                       items >= 0, weights, k)
            recommended = np.where(np.isfinite(scores), np.take_along_axis(items, best, axis=1), -1)
            yield als.evaluation_frame(pdf["id"].to_numpy(), recommended, list(pdf["relevant"]), k)

    return per_user.mapInPandas(score, als.EVALUATION_ROW_SCHEMA)


def served_trend(
    spark, lakehouse: LakehouseResource, ratings: DataFrame, config: HybridConfig
) -> tuple[DataFrame, str]:
    """(movie_id, trend_score now, where it comes from), cached: the stream's decayed events (gold_trending_now's
    score) when silver holds events, else the ratings' decayed popularity as of the latest rating."""
    events, as_of = recent_events(spark, lakehouse, config.stream_window_hours)
    if events is not None:
        trend = trending.decayed_scores(events, as_of, config.stream_half_life_hours).select("movie_id", "trend_score")
        source = f"stream events as of {as_of.isoformat()}"
    else:
        latest = ratings.agg(F.max("rated_at")).first()[0].astimezone(UTC)
        age_days = (F.lit(latest).cast("double") - F.col("rated_at").cast("double")) / 86400.0
        trend = ratings.groupBy("movie_id").agg(
            F.sum(F.pow(F.lit(2.0), -age_days / F.lit(config.trend_half_life_days))).alias("trend_score")
        )
        source = f"ratings as of {latest.isoformat()}"
    trend = trend.cache()
    trend.count()  # read the stream's hours now, before the sensor rewrites the open one
    return trend, source


def cold_start(spark, users: DataFrame, interactions: DataFrame, trend: DataFrame, k: int) -> DataFrame:
    """Lists for users without ALS factors (users rows: id, exclude) and one for anyone else (user_id NULL)."""
    pool = (interactions.groupBy("movie_id").agg(F.count(F.lit(1)).alias("popularity"))
            .join(trend, "movie_id", "left").fillna(0.0, ["trend_score"]).toPandas())
    pool["score"] = cold_start_scores(pool["trend_score"].to_numpy(), pool["popularity"].to_numpy())
    index = ItemIndex(pool["movie_id"].to_numpy(), pool["score"].to_numpy()[:, None])
    known = als.recommend_top_k(users.withColumn("features", F.array(F.lit(1.0).cast("float"))), index, k)
    best = pool.nlargest(k, "score")
    anyone = pd.DataFrame({"user_id": None, "rank": np.arange(1, len(best) + 1, dtype=np.int32),
                           "movie_id": best["movie_id"].to_numpy(np.int32),
                           "score": best["score"].to_numpy(np.float32)})
    rows = known.unionByName(spark.createDataFrame(anyone, als.RECOMMENDATION_SCHEMA))
    return rows.join(F.broadcast(spark.createDataFrame(pool[["movie_id", "trend_score"]])), "movie_id", "left")


@dg.asset(group_name="gold", kinds={"spark", "delta"},
          deps=["als_model", silver_ratings, silver_movies, silver_tags, silver_events])
def gold_hybrid_recommendations(
    context: dg.AssetExecutionContext, config: HybridConfig, lakehouse: LakehouseResource,
    pyspark: LazyPySparkResource,
) -> dg.MaterializeResult:
    """Top-K per user: ALS candidates re-ranked by model score, trend and content similarity, never a seen movie;
    trending and popular movies for users the model does not know (and for anyone, as user_id NULL)."""
    started = time.monotonic()
    weights = config.weights()
    spark = pyspark.spark_session

    def read(table: str) -> DataFrame:
        return lakehouse.table(f"silver.{table}").read(spark)

    model = als.load_factors(spark, lakehouse)
    info = model.info
    ratings, (events, _) = read("ratings"), als.read_silver_events(spark, lakehouse)
    events_read_until = events.agg(F.max("received_at")).first()[0] if events is not None else None
    interactions = als.interactions(ratings, events).cache()
    users = als.user_histories(interactions).cache()
    trend, trend_source = served_trend(spark, lakehouse, ratings, config)
    hybrid = hybrid_top_k(users.join(model.users, "id"), als.item_index(model.items),
                          content_index(read("movies"), read("tags")), trend.toPandas(), weights, config.candidates,
                          config.k).withColumn("source", F.lit("hybrid")).cache()  # the sorted write samples first
    cold = cold_start(spark, users.join(model.users, "id", "left_anti"), interactions, trend, config.k)
    version = f"{info['model_version']}+hybrid-{config.fingerprint()}"
    df = (
        hybrid.unionByName(cold.withColumn("source", F.lit("cold_start")), allowMissingColumns=True)
        .join(F.broadcast(read("movies").select("movie_id", "title")), "movie_id", "left")
        .withColumn("model_version", F.lit(version))
        .select(*[F.col(c).cast("float") if c in SIGNAL_COLUMNS else F.col(c) for c in HYBRID_COLUMNS])
        .orderBy(F.col("user_id").asc_nulls_first(), "rank")
    )
    table = lakehouse.table("gold.hybrid_recommendations")
    commit = table.overwrite(df, context.log)
    for frame in (interactions, users, trend, hybrid):
        frame.unpersist()
    users_by_source = {row["source"]: row["users"] for row in table.read(spark, commit.version).groupBy("source")
                       .agg(F.countDistinct("user_id").alias("users")).collect()}
    extra = {"events_read_until": dg.MetadataValue.timestamp(events_read_until.astimezone(UTC))} if (
        events_read_until) else {}
    return dg.MaterializeResult(metadata=commit_metadata(
        table, commit, df, started, k=config.k, model_version=version,
        weights=dg.MetadataValue.json(config.model_dump()),
        trend_source=trend_source, users_hybrid=dg.MetadataValue.int(users_by_source.get("hybrid", 0)),
        users_cold_start=dg.MetadataValue.int(users_by_source.get("cold_start", 0)), **extra,
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
