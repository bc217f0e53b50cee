"""Content similarity: TF-IDF vectors of genres and tags, and the cosine to a user's history profile."""

import numpy as np
import pandas as pd
import pytest

from reco_assets.gold.content import ContentIndex

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
