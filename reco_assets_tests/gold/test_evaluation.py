"""The evaluation's recent-popularity baseline."""

from datetime import UTC, datetime, timedelta

import pandas as pd

from reco_assets.gold import evaluation


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
