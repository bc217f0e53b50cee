"""The served hybrid's pure parts: anyone's list (trending and popular) and the rows of each user's best candidates."""

import numpy as np
import pandas as pd
import pytest

from reco_assets.gold.hybrid import anyone_list, cold_start_scores, ranked_rows, standardise
from reco_assets.gold.ranker import Candidates


def test_standardise_gives_z_scores_and_zeros_for_a_constant_signal():
    z = standardise(np.array([1.0, 2.0, 3.0, 6.0]))
    assert z.mean() == pytest.approx(0.0) and z.std() == pytest.approx(1.0)
    assert standardise(np.array([4.0, 4.0, 4.0])).tolist() == [0.0, 0.0, 0.0]
    assert standardise(np.array([])).tolist() == []


def test_cold_start_prefers_trending_and_popular():
    trend, popularity = np.array([0.0, 5.0, 5.0, 50.0]), np.array([10, 10, 100, 100])
    scores = cold_start_scores(trend, popularity)
    assert np.argsort(-scores).tolist() == [3, 2, 1, 0]


def test_anyone_gets_the_trending_and_popular_movies_with_their_trend():
    trend = pd.DataFrame({"movie_id": [30, 10], "trend_score": [50.0, 5.0]})  # movie 20 has no trend
    found = anyone_list(np.array([10, 20, 30]), np.array([100.0, 100.0, 100.0]), trend, k=2)
    assert found["movie_id"].tolist() == [30, 10] and found["rank"].tolist() == [1, 2]
    assert found["trend_score"].tolist() == [50.0, 5.0] and found["user_id"].isna().all()


class ByFirstFeature:
    """Orders candidates by their first feature (a stand-in for the trees, for this pure test)."""

    @staticmethod
    def predict_proba(features):
        return np.column_stack([1 - features[:, 0], features[:, 0]])


def test_ranked_rows_keep_each_users_best_k_with_their_signals():
    features = np.array([[0.2, np.log1p(3.0), 0.5], [0.9, 0.0, 0.1], [0.5, np.log1p(1.0), 0.3], [0.7, 0.0, 0.0]],
                        np.float32)
    scored = Candidates(np.array([0, 0, 0, 1]), np.array([11, 12, 13, 21]), features)
    rows = ranked_rows(ByFirstFeature, scored, np.array([100, 200]), ["ease_recent", "trend", "content"], k=2)
    assert rows[["user_id", "rank", "movie_id"]].values.tolist() == [[100, 1, 12], [100, 2, 13], [200, 1, 21]]
    assert rows["score"].tolist() == pytest.approx([0.9, 0.5, 0.7])
    assert rows["trend_score"].tolist() == pytest.approx([0.0, 1.0, 0.0])  # interactions, back from log1p
    assert rows["ease_score"].tolist() == pytest.approx([0.9, 0.5, 0.7])
    without_content = ranked_rows(ByFirstFeature, scored, np.array([100, 200]), ["ease_recent", "trend", "activity"],
                                  k=1)
    assert without_content["content_score"].isna().all()
