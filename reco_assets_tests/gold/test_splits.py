"""The evaluation's protocols: the global temporal cut, who is tested, and which tags a split may use."""

from datetime import UTC, datetime, timedelta

import pytest

from reco_assets.gold import splits


def test_the_global_cut_is_the_quantile_of_rating_time_and_only_known_users_are_tested(spark):
    start = datetime(2020, 1, 1, tzinfo=UTC)
    rows = [(user, movie, 4.0, start + timedelta(days=day)) for user, movie, day in
            [(1, 1, 0), (1, 2, 1), (2, 1, 2), (2, 3, 3), (1, 3, 4), (2, 2, 5), (3, 1, 6), (3, 2, 7), (1, 4, 8),
             (2, 4, 9)]]
    ratings = spark.createDataFrame(rows, "user_id INT, movie_id INT, rating FLOAT, rated_at TIMESTAMP")
    split = splits.global_temporal(ratings, None, 0.8)
    assert split.cut == start + timedelta(days=7)  # 8 of the 10 ratings are at or before day 7
    assert sorted(tuple(r) for r in split.train.select("user_id", "movie_id").collect()) == sorted(
        (u, m) for u, m, _, at in rows if at < split.cut)
    # user 3 rated before the cut, so their day-7 rating is tested with the others after it
    assert sorted(tuple(r) for r in split.test.select("user_id", "movie_id").collect()) == [(1, 4), (2, 4), (3, 2)]
    cutoffs = {(r.user_id, r.as_of.astimezone(UTC)) for r in split.cutoffs.collect()}
    assert cutoffs == {(u, split.cut) for u in (1, 2, 3)}


def test_a_user_first_seen_after_the_global_cut_is_not_tested(spark):
    start = datetime(2020, 1, 1, tzinfo=UTC)
    rows = [(1, m, 3.0, start + timedelta(days=m)) for m in range(1, 9)] + [(9, 1, 5.0, start + timedelta(days=30))]
    ratings = spark.createDataFrame(rows, "user_id INT, movie_id INT, rating FLOAT, rated_at TIMESTAMP")
    split = splits.global_temporal(ratings, None, 0.5)
    assert {r.user_id for r in split.test.collect()} == {1}


@pytest.mark.parametrize("quantile", [0.0, 1.0])
def test_the_cut_stays_inside_the_ratings(spark, quantile):
    start = datetime(2020, 1, 1, tzinfo=UTC)
    rows = [(1, m, 3.0, start + timedelta(days=m)) for m in range(5)]
    ratings = spark.createDataFrame(rows, "user_id INT, movie_id INT, rating FLOAT, rated_at TIMESTAMP")
    assert splits.temporal_cut(ratings, quantile) == start + timedelta(days=0 if quantile == 0 else 4)


def test_a_global_split_describes_movies_with_the_tags_before_its_cut_only(spark):
    start = datetime(2020, 1, 1, tzinfo=UTC)
    ratings = spark.createDataFrame([(1, m, 3.0, start + timedelta(days=m)) for m in range(1, 11)],
                                    "user_id INT, movie_id INT, rating FLOAT, rated_at TIMESTAMP")
    tags = spark.createDataFrame([(1, 2, "early", start + timedelta(days=2)),
                                  (2, 3, "later", start + timedelta(days=9)),
                                  (1, 9, "test pair", start + timedelta(days=1))],
                                 "user_id INT, movie_id INT, tag STRING, tagged_at TIMESTAMP")
    split = splits.global_temporal(ratings, None, 0.5)
    assert sorted(row.tag for row in splits.training_tags(split, tags).collect()) == ["early"]
    per_user = splits.per_user_chronological(ratings, None, 0.2)  # holds out movies 9 and 10
    assert sorted(row.tag for row in splits.training_tags(per_user, tags).collect()) == ["early", "later"]
