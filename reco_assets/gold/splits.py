"""The evaluation's protocols, as splits of the ratings (and stream events) into what trains and what is tested.

- `per_user_chronological`: each user's latest ratings are held out; every user is recommended to at their own
  last training moment. The ranker also learns from such a split of its own training window.
- `global_temporal`: one cut T (a quantile of rating time); everything before T trains (ratings, events, tags),
  the ratings at or after T of users known before it are the test, and everyone is recommended to at T.
"""

from dataclasses import dataclass
from datetime import UTC, datetime

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from reco_assets.gold import als

PER_USER = "per_user_chronological"
GLOBAL = "global_temporal"
PROTOCOLS = (PER_USER, GLOBAL)


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


def training_tags(split: Split, tags: DataFrame) -> DataFrame:
    """The tags (user_id, movie_id, tag, tagged_at) the split may describe movies with: none on a test (user, movie)
    pair, and under a global split none from its cut on."""
    kept = tags.join(split.test.select("user_id", "movie_id"), ["user_id", "movie_id"], "left_anti")
    return kept if split.cut is None else kept.where(F.col("tagged_at") < F.lit(split.cut))
