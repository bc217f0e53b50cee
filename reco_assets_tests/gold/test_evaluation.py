"""The evaluation: its recent-popularity baseline, its sample of test users, and a hybrid blind to the test set."""

from datetime import UTC, datetime, timedelta

import pandas as pd
from pyspark.sql import functions as F

from reco_assets.gold import evaluation
from reco_assets_tests.gold.test_ranker import CONFIG, sequels


def test_recent_popularity_never_recommends_a_seen_movie_and_looks_back_from_each_users_day():
    daily = pd.DataFrame({"movie_id": [10, 10, 20, 30, 30],
                          "day": [0, 2, 40, 70, 73],
                          "ratings": [2, 1, 2, 3, 1]})  # movie 10: 3 ratings, 20: 2, 30: 4
    queries = pd.DataFrame({"exclude": [[20], [], [10, 30]], "day": [45, 80, 80]})
    recommended = evaluation.recent_popularity_top_k(queries, daily, 28.0, 2)
    assert recommended.tolist() == [
        [10, -1],  # day 45: 20 is the recent one but seen; 30 was not rated yet
        [30, 10],  # day 80: 30 in the window, then 10 (3 ratings) before 20 (2)
        [20, -1],
    ]


def test_day_numbers_are_whole_utc_days(spark):
    late = datetime(2020, 1, 1, 23, 30, tzinfo=UTC)
    frame = spark.createDataFrame([(late,), (late + timedelta(hours=1),)], "at TIMESTAMP")
    days = [row.day for row in frame.select(evaluation.day_number("at")).collect()]
    assert days == [(late - datetime(1970, 1, 1, tzinfo=UTC)).days, 18263]


def sequel_catalog(spark):
    """The ranker tests' sequel watchers as silver ratings, movies and (no) tags."""
    frame, _ = sequels(120, seed=4)
    rows = [(int(u), int(m), 4.0, datetime.fromtimestamp(at, UTC)) for u, m, at in frame.itertuples(index=False)]
    ratings = spark.createDataFrame(rows, "user_id INT, movie_id INT, rating FLOAT, rated_at TIMESTAMP")
    movies = spark.createDataFrame([(m, 2000, ["Drama"]) for m in range(200)],
                                   "movie_id INT, year INT, genres ARRAY<STRING>")
    tags = spark.createDataFrame([], "user_id INT, movie_id INT, tag STRING, tagged_at TIMESTAMP")
    return ratings, movies, tags


def test_a_sample_of_test_users_is_the_same_whatever_the_partitioning(spark):
    users = spark.range(1, 101)
    sample, total = evaluation.sample_users(users, 10)
    ids = sorted(row.id for row in sample.collect())
    assert total == 100 and len(ids) == 10
    assert sorted(row.id for row in evaluation.sample_users(users.repartition(7), 10)[0].collect()) == ids
    hashes = {row.id: row.hash for row in users.select("id", F.xxhash64("id").alias("hash")).collect()}
    assert max(hashes[i] for i in ids) < min(h for i, h in hashes.items() if i not in ids)  # the lowest hashes
    whole, total = evaluation.sample_users(users, 100)
    assert total == 100 and whole is users


def test_every_model_scores_the_same_sampled_test_users(spark):
    from reco_assets.gold import splits
    from reco_assets.gold.assets import ModelConfig

    ratings, movies, tags = sequel_catalog(spark)
    config = ModelConfig(max_test_users=30, report_rmse=False, rank=4, max_iter=2, hybrid=CONFIG)
    rows = evaluation.evaluate(config, config, splits.per_user_chronological(ratings, None, 0.2), movies, tags, {})
    assert {row["model"]: (row["users"], row["test_users"]) for row in rows} == {
        model: (30, 120) for model in evaluation.MODELS}


def test_the_hybrid_never_sees_the_test_set(spark):
    """Two splits with the same training window and different test ratings give the same lists."""
    import dataclasses

    import numpy as np

    from reco_assets.gold import als, splits

    ratings, movies, tags = sequel_catalog(spark)
    split = splits.per_user_chronological(ratings, None, 0.2)
    users = evaluation.collect_users(evaluation.evaluated_users(split, als.interactions(split.train, None)))
    other_test = split.test.select("user_id", (F.col("movie_id") + 1000).alias("movie_id"), "rating", "rated_at")
    other = dataclasses.replace(split, test=other_test)
    other_users = users.assign(relevant=[[m + 1000 for m in r] for r in users["relevant"]])
    lists = evaluation.hybrid_top_k(CONFIG, split, movies, tags, users, 5)
    assert (lists >= 0).all()
    np.testing.assert_array_equal(evaluation.hybrid_top_k(CONFIG, other, movies, tags, other_users, 5), lists)
