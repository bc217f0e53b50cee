"""The hybrid: signal normalisation, weighting, the as-of trend (also in Spark), content similarity, cold start."""

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from reco_assets.gold.hybrid import (
    ContentIndex,
    HybridWeights,
    blend,
    cold_start_scores,
    decayed_counts_as_of,
    normalised_signals,
    profile_weights,
    rerank_rows,
    reranked_frame,
    standardise,
    with_trend_as_of,
)


def test_standardise_gives_z_scores_and_zeros_for_a_constant_signal():
    z = standardise(np.array([1.0, 2.0, 3.0, 6.0]))
    assert z.mean() == pytest.approx(0.0) and z.std() == pytest.approx(1.0)
    assert standardise(np.array([4.0, 4.0, 4.0])).tolist() == [0.0, 0.0, 0.0]
    assert standardise(np.array([])).tolist() == []


def test_normalised_signals_ignore_each_signal_s_scale_and_offset():
    rng = np.random.default_rng(0)
    als, trend, content = rng.normal(size=20), rng.exponential(5.0, size=20), rng.uniform(size=20)
    base = normalised_signals(als, trend, content)
    rescaled = normalised_signals(1000 * als - 7, trend, 0.01 * content + 3)
    np.testing.assert_allclose(base, rescaled, atol=1e-9)
    np.testing.assert_allclose(base[:, 1], standardise(np.log1p(trend)))  # the decayed count is log-scaled first


def test_weights_are_scaled_to_sum_to_one_and_refused_when_meaningless():
    np.testing.assert_allclose(HybridWeights(als_weight=2, trend_weight=1, content_weight=1).weights(),
                               [0.5, 0.25, 0.25])
    assert HybridWeights().weights().sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="non-negative"):
        HybridWeights(als_weight=1, trend_weight=-0.5, content_weight=0).weights()
    with pytest.raises(ValueError, match="not all zero"):
        HybridWeights(als_weight=0, trend_weight=0, content_weight=0).weights()


def test_blend_is_the_weighted_mean():
    signals = np.array([[1.0, -1.0, 0.0], [0.0, 2.0, 1.0]])
    np.testing.assert_allclose(blend(signals, np.array([0.5, 0.25, 0.25])), [0.25, 0.75])


def rerank(als_score, trend, content, weights, k):
    """One user's candidates through rerank_rows."""
    return rerank_rows(als_score, trend, content, np.ones(len(als_score), bool), weights, k)


def test_rerank_follows_the_weights():
    als = np.array([3.0, 2.0, 1.0, 0.0])
    trend = np.array([0.0, 0.0, 10.0, 100.0])
    content = np.array([0.1, 0.9, 0.5, 0.2])
    assert rerank(als, trend, content, np.array([1.0, 0, 0]), k=4)[0].tolist() == [0, 1, 2, 3]
    assert rerank(als, trend, content, np.array([0, 1.0, 0]), k=2)[0].tolist() == [3, 2]
    assert rerank(als, trend, content, np.array([0, 0, 1.0]), k=4)[0].tolist() == [1, 2, 3, 0]
    # Equal ALS and content weights: movie 1 (2nd by ALS, 1st by content) beats movie 0 (1st, last).
    best, scores = rerank(als, trend, content, np.array([0.5, 0, 0.5]), k=4)
    assert best[0] == 1 and list(scores) == sorted(scores, reverse=True)


def test_rerank_keeps_at_most_k_and_handles_tiny_lists():
    best, scores = rerank(np.array([1.0]), np.array([0.0]), np.array([0.0]), np.array([0.4, 0.2, 0.4]), k=20)
    assert best.tolist() == [0] and scores.tolist() == [0.0]


def test_rerank_rows_of_padded_candidates_equal_each_users_own_rerank():
    rng = np.random.default_rng(3)
    lengths = [7, 1, 0, 5, 7]
    valid = np.arange(7) < np.array(lengths)[:, None]
    als, trend, content = rng.normal(size=(5, 7)), rng.exponential(3.0, size=(5, 7)), rng.uniform(size=(5, 7))
    weights = np.array([0.4, 0.2, 0.4])
    best, scores = rerank_rows(als, trend, content, valid, weights, k=4)
    for u, n in enumerate(lengths):
        own_best, own_scores = rerank(als[u, :n], trend[u, :n], content[u, :n], weights, k=4)
        kept = np.isfinite(scores[u])
        assert best[u][kept].tolist() == own_best.tolist()
        np.testing.assert_allclose(scores[u][kept], own_scores, rtol=1e-12)
    frame = reranked_frame(np.array([10, 11, 12, 13, 14]), np.arange(35).reshape(5, 7), als, trend, content, valid,
                           weights, k=4)
    assert frame.groupby("user_id").size().to_dict() == {10: 4, 11: 1, 13: 4, 14: 4}
    assert frame["rank"].tolist()[:5] == [1, 2, 3, 4, 1]
    first = frame[frame["user_id"] == 10].iloc[0]
    assert first["movie_id"] == best[0, 0] and first["als_score"] == np.float32(als[0, best[0, 0]])


def brute_force(event_keys, event_times, query_keys, query_times, half_life):
    events = list(zip(event_keys, event_times, strict=True))
    return np.array([
        sum(2.0 ** (-(t - et) / half_life) for ek, et in events if ek == k and et <= t)
        for k, t in zip(query_keys, query_times, strict=True)
    ])


def test_decayed_counts_as_of_match_brute_force():
    rng = np.random.default_rng(1)
    event_keys, event_times = rng.integers(0, 5, 300), rng.uniform(0, 1000, 300)
    query_keys, query_times = rng.integers(0, 6, 50), rng.uniform(-10, 1100, 50)
    got = decayed_counts_as_of(event_keys, event_times, query_keys, query_times, half_life=30.0)
    np.testing.assert_allclose(got, brute_force(event_keys, event_times, query_keys, query_times, 30.0),
                               rtol=1e-9, atol=1e-12)


def test_decayed_counts_as_of_count_events_at_the_moment_and_never_later_ones():
    got = decayed_counts_as_of(np.array([7, 7, 7]), np.array([0.0, 10.0, 20.0]),
                               np.array([7, 7, 8]), np.array([10.0, 9.999, 10.0]), half_life=10.0)
    np.testing.assert_allclose(got, [1.0 + 0.5, 2.0 ** -0.9999, 0.0])


def test_decayed_counts_as_of_over_decades_with_a_short_half_life():
    years = 365.25 * np.arange(30)
    got = decayed_counts_as_of(np.zeros(30), years, np.array([0, 1]), np.array([years[-1], years[-1]]), 1.0)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, [1.0, 0.0])
    assert decayed_counts_as_of(np.zeros(3), np.arange(3.0), np.array([]), np.array([]), 1.0).size == 0


def test_trend_as_of_in_spark_carries_each_query_row_through(spark):
    events = spark.createDataFrame(
        [(1, datetime(2020, 1, 1) + timedelta(days=d)) for d in (0, 10, 20)] + [(2, datetime(2020, 1, 5))],
        "movie_id INT, at TIMESTAMP",
    )
    queries = spark.createDataFrame(
        [(7, 1, 3, 0.5, datetime(2020, 1, 11)), (8, 1, 1, -1.0, datetime(2019, 12, 31)),
         (8, 2, 2, 2.0, datetime(2020, 1, 15)), (9, 3, 1, 1.0, datetime(2020, 1, 15))],
        "user_id INT, movie_id INT, als_rank INT, als_score FLOAT, as_of TIMESTAMP",
    )
    got = with_trend_as_of(events, queries, half_life_days=10.0)
    assert got.schema.simpleString() == (
        "struct<user_id:int,movie_id:int,als_rank:int,als_score:float,trend_score:double>"
    )
    rows = {(r.user_id, r.movie_id): r for r in got.collect()}
    assert len(rows) == 4 and {r.als_rank for r in rows.values()} == {1, 2, 3}
    assert rows[7, 1].als_score == 0.5
    expected = {(7, 1): 2 ** -1.0 + 2 ** -0.0, (8, 1): 0.0, (8, 2): 2 ** -1.0, (9, 3): 0.0}
    for key, value in expected.items():
        assert rows[key].trend_score == pytest.approx(value, abs=1e-12), key


def test_profile_weights_centre_on_the_user_and_keep_a_profile_for_equal_signals():
    np.testing.assert_allclose(profile_weights(np.array([5.0, 3.0, 1.0])), [2.5, 0.5, -1.5])
    np.testing.assert_allclose(profile_weights(np.array([2.5, 2.5])), [0.5, 0.5])


MOVIES = pd.DataFrame({
    "movie_id": [10, 20, 30, 40, 50],
    "genres": [["Animation", "Children"], ["Animation", "Comedy"], ["Drama"], ["Drama", "War"], []],
})
TAGS = pd.DataFrame({"movie_id": [20, 40, 40], "tag": ["Pixar", "World War II", "war"]})


def test_content_similarity_prefers_movies_like_the_history():
    index = ContentIndex.from_movies(MOVIES, TAGS)
    scores, war, empty = index.similarities(
        [np.array([10]), np.array([30, 40]), np.array([], np.int64)],
        [np.array([1.0]), np.array([0.0, 1.0]), np.array([])],
        [np.array([20, 30, 40, 50, 999]), np.array([30, 10]), np.array([10])])
    assert scores[0] > 0.0 and scores[1] == scores[2] == 0.0, scores
    assert scores[3] == scores[4] == 0.0, "no genres, unknown id: nothing in common"
    assert war[0] > 0.0 and war[1] == 0.0
    assert empty.tolist() == [0.0]


def test_content_similarities_of_many_users_equal_each_users_own():
    """Scoring users together gives each the cosines of their own profile, whatever the others' histories."""
    index = ContentIndex.from_movies(MOVIES, TAGS)
    histories = [np.array([10, 20]), np.array([40]), np.array([30, 999])]
    weights = [np.array([1.0, 0.5]), np.array([2.0]), np.array([1.0, 1.0])]
    candidates = [np.array([30, 40, 50]), np.array([10, 20, 30, 40]), np.array([40, 10])]
    together = index.similarities(histories, weights, candidates)
    for i in range(3):
        alone = index.similarities([histories[i]], [weights[i]], [candidates[i]])[0]
        rows = index.vectors[index.positions(histories[i])[0]]
        profile = np.asarray(weights[i][index.positions(histories[i])[1]]) @ rows.toarray()
        expected = index.vectors[index.positions(candidates[i])[0]].toarray() @ (profile / np.linalg.norm(profile))
        np.testing.assert_allclose(together[i], alone, rtol=1e-6)
        np.testing.assert_allclose(together[i][index.positions(candidates[i])[1]], expected, rtol=1e-5)


def test_tags_add_detail_without_swamping_genres():
    index = ContentIndex.from_movies(MOVIES, TAGS)
    row = index.vectors[index.positions(np.array([40]))[0][0]].toarray().ravel()
    genre_part, tag_part = row[: 5], row[5:]  # 5 genres in MOVIES; tag words follow
    assert np.linalg.norm(row) == pytest.approx(1.0)
    assert np.linalg.norm(tag_part) == pytest.approx(0.25 * np.linalg.norm(genre_part), rel=1e-5)


def test_cold_start_prefers_trending_and_popular():
    trend, popularity = np.array([0.0, 5.0, 5.0, 50.0]), np.array([10, 10, 100, 100])
    scores = cold_start_scores(trend, popularity)
    assert np.argsort(-scores).tolist() == [3, 2, 1, 0]
