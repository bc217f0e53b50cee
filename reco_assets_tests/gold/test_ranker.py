"""The learned ranker on hand-made histories: its candidates, labels, features as of each cutoff, and what it learns."""

import threading
import time

import numpy as np
import pandas as pd
import pytest

from reco_assets.gold import candidates as gen
from reco_assets.gold import ranker
from reco_assets.gold.candidates import History
from reco_assets.gold.content import ContentIndex

CONFIG = ranker.RankerConfig(candidates_per_generator=5, trees=50, ease_l2=5.0)


def content_of(movie_ids) -> ContentIndex:
    movies = pd.DataFrame({"movie_id": list(movie_ids), "genres": [["Drama"] if m % 2 else ["Comedy"]
                                                                   for m in movie_ids]})
    return ContentIndex.from_movies(movies, pd.DataFrame({"movie_id": [], "tag": []}))


def sequels(n_users: int, seed: int) -> tuple[pd.DataFrame, dict[int, int]]:
    """Users who watch a run of consecutive movies (sequels), one a day, after the same 3 popular classics; the next
    movie of each run is what they watch next."""
    rng = np.random.default_rng(seed)
    rows, following = [], {}
    for user in range(n_users):
        start, length = int(rng.integers(0, 60)), int(rng.integers(4, 9))
        rows += [(user, 100 + c, float(c)) for c in range(3)]
        rows += [(user, start + i, 86400.0 * (10 + i)) for i in range(length)]
        following[user] = start + length
    return pd.DataFrame(rows, columns=["user_id", "movie_id", "at"]), following


def queries_of(frame: pd.DataFrame) -> ranker.Queries:
    latest = frame.groupby("user_id")["at"].max()
    seen = frame.groupby("user_id")["movie_id"].agg(list)
    return ranker.Queries(latest.index.to_numpy(np.int64), latest.to_numpy(np.float64),
                          [np.asarray(seen[user], np.int64) for user in latest.index])


def test_candidates_are_unseen():
    frame, _ = sequels(40, seed=1)
    history = History.of(frame["user_id"], frame["movie_id"], frame["at"])
    queries = queries_of(frame)
    years = pd.Series(2000.0, index=frame["movie_id"].unique())
    found = ranker.candidates(CONFIG, ranker.Generators(CONFIG, history), queries, years, content_of(history.item_ids))
    assert found.features.shape == (len(found.row), len(ranker.FEATURES))
    assert np.all(np.diff(found.row) >= 0) and set(found.row) == set(range(len(queries.users)))
    for row, seen in enumerate(queries.exclude):
        assert not np.isin(found.movie_id[found.row == row], seen).any(), row
    year_gap = found.features[:, ranker.FEATURES.index("year_gap")]
    assert (year_gap == 1970 - 2000).all()  # every cutoff lies in 1970's first weeks


def test_candidates_and_their_trend_are_as_of_the_rows_moment():
    day = 86400.0
    rows = [(user, 600, 100 * day) for user in range(1, 31)]  # before the cutoff, within 30 days of it
    rows += [(user, 600, 200 * day) for user in range(31, 61)]  # after it
    rows += [(user, 500, 200 * day) for user in range(1, 61)]  # a movie that appears after the cutoff
    rows += [(99, 700, 109 * day), (99, 701, 110 * day)] + [(user, 700, 90 * day) for user in (1, 2, 3)]
    frame = pd.DataFrame(rows, columns=["user_id", "movie_id", "at"])
    history = History.of(frame["user_id"], frame["movie_id"], frame["at"])
    queries = ranker.Queries(np.array([99]), np.array([110 * day]), [np.array([700, 701])])
    found = ranker.candidates(CONFIG, ranker.Generators(CONFIG, history), queries, pd.Series(dtype=float),
                              content_of(history.item_ids))
    assert found.movie_id.tolist() == [600], "500 did not exist at the cutoff; 700 and 701 are seen"
    feature = dict(zip(ranker.FEATURES, found.features[0], strict=True))
    assert feature["trend"] == pytest.approx(np.log1p(30))  # the 30 interactions after the cutoff do not count
    assert feature["popularity"] == pytest.approx(np.log1p(60))  # all-time, as the popularity baseline counts
    assert feature["age_days"] == pytest.approx(10.0)


class Product:
    """Scores a candidate by the product of its two features (a stand-in for the trees, for this pure test)."""

    @staticmethod
    def predict_proba(features):
        score = features[:, 0] * features[:, 1]
        return np.column_stack([-score, score])


def test_importances_shuffle_a_users_own_feature_across_users():
    rng = np.random.default_rng(0)
    row = np.repeat(np.arange(50), 10)
    relevance = rng.random(500)
    per_user = np.repeat(rng.uniform(1, 2, 50), 10)  # a positive constant per user scales, never reorders
    training = ranker.Candidates(row, np.tile(np.arange(10), 50), np.column_stack([relevance, per_user]))
    relevant = [np.array([int(np.argmax(relevance[user * 10:(user + 1) * 10]))]) for user in range(50)]
    drops = ranker.importances(ranker.Learned(Product, training, relevant, ["score", "user_scale"]), k=3)
    assert drops["user_scale"] == 0.0 and drops["score"] > 0.3, drops


def test_labels_mark_the_relevant_pairs_of_each_row():
    found = ranker.Candidates(np.array([0, 0, 1, 1]), np.array([5, 6, 5, 7]), np.zeros((4, 1), np.float32))
    assert found.labels([np.array([6]), np.array([5, 9])]).tolist() == [False, True, True, False]


def test_fitting_needs_both_kinds_of_candidates():
    found = ranker.Candidates(np.array([0, 1]), np.array([5, 6]), np.zeros((2, len(ranker.FEATURES)), np.float32))
    with pytest.raises(ValueError, match="relevant and irrelevant"):
        ranker.fit(CONFIG, found, [np.array([9]), np.array([9])])


def test_the_ranker_learns_what_users_watch_next_from_a_validation_slice():
    frame, following = sequels(300, seed=2)
    latest = frame.groupby("user_id")["at"].transform("max")
    fit_frame, validation = frame[frame["at"] < latest], frame[frame["at"] == latest]
    years = pd.Series(np.nan, index=np.arange(200))
    content = content_of(np.arange(200))
    fit_history = History.of(fit_frame["user_id"], fit_frame["movie_id"], fit_frame["at"])
    fit_queries = queries_of(fit_frame)
    relevant = validation.set_index("user_id")["movie_id"]
    model = ranker.fit(CONFIG, ranker.candidates(CONFIG, ranker.Generators(CONFIG, fit_history), fit_queries, years,
                                                 content),
                       [np.array([relevant[user]]) for user in fit_queries.users])

    queries = queries_of(frame)
    history = History.of(frame["user_id"], frame["movie_id"], frame["at"])
    scored = ranker.candidates(CONFIG, ranker.Generators(CONFIG, history), queries, years, content)
    top = ranker.top_k(model, scored, len(queries.users), 3)
    hits = np.mean([top[row, 0] == following[user] for row, user in enumerate(queries.users)])
    assert hits > 0.6, hits  # popularity's first pick is never the next sequel
    assert (top[:, 0] >= 0).all()


def test_everyone_is_ranked_at_one_moment_without_what_they_have_seen():
    history = History.of(users=[7, 7, 9, 9], items=[1, 2, 1, 3], at=[1.0, 2.0, 3.0, 4.0])
    queries = ranker.Queries.everyone(history, np.array([True, False, True, True]), as_of=10.0)
    assert queries.users.tolist() == [7, 9] and queries.as_of.tolist() == [10.0, 10.0]
    assert [seen.tolist() for seen in queries.exclude] == [[1], [1, 3]]  # 7 only clicked 2: still recommendable
    assert ranker.ranked_passes(CONFIG, ranker.Generators(CONFIG, history), queries, pd.Series(dtype=float),
                                content_of([1, 2, 3]), lambda rows, _: len(rows)) == [2]


def test_passes_ranked_in_threads_hold_what_one_pass_holds(monkeypatch):
    """Passes ranked at once share the generators (their trending lists too) and the years: each pass's candidates
    are those of the same users in one pass of everyone. Slow trending lists make both threads ask for theirs at
    the same time."""
    frame, _ = sequels(200, seed=5)
    history = History.of(frame["user_id"], frame["movie_id"], frame["at"])
    queries, content = queries_of(frame), content_of(np.arange(200))
    whole = ranker.candidates(CONFIG, ranker.Generators(CONFIG, history), queries,
                              pd.Series(2000.0, index=np.arange(200)), content)
    make_lists = gen.recent_popularity_lists

    def slowly(*args):
        time.sleep(0.05)  # long enough for the other pass to ask for its lists meanwhile
        return make_lists(*args)

    monkeypatch.setattr(gen, "recent_popularity_lists", slowly)
    monkeypatch.setattr(ranker, "PASS_ROWS", 7)
    threads = set()

    def rank(rows, scored):
        threads.add(threading.current_thread().name)
        return rows.users, scored

    passes = ranker.ranked_passes(CONFIG, ranker.Generators(CONFIG, history), queries,
                                  pd.Series(2000.0, index=np.arange(200)), content, rank)
    assert len(passes) == 29 and len(threads) == ranker.RANKING_THREADS == 2
    users = np.concatenate([rows[scored.row] for rows, scored in passes])
    assert users.tolist() == queries.users[whole.row].tolist()
    assert np.array_equal(np.concatenate([scored.movie_id for _, scored in passes]), whole.movie_id)
    assert np.array_equal(np.concatenate([scored.features for _, scored in passes]), whole.features, equal_nan=True)


def test_a_history_ease_does_not_model_gets_no_ease_candidates_nor_scores():
    rows = [(user, movie, 1.0) for user in range(1, 21) for movie in (10, 11, 12)] + [(99, 50, 2.0)]
    frame = pd.DataFrame(rows, columns=["user_id", "movie_id", "at"])
    history = History.of(frame["user_id"], frame["movie_id"], frame["at"])  # movie 50: one user, outside EASE
    config = ranker.RankerConfig(candidates_per_generator=5, generators=["ease_recent", "ease"])
    queries = ranker.Queries(np.array([99]), np.array([3.0]), [np.array([50])])
    found = ranker.candidates(config, ranker.Generators(config, history), queries, pd.Series(dtype=float),
                              content_of(history.item_ids))
    assert len(found.row) == 0, "EASE has no opinion on a history it does not model"
    both = ranker.RankerConfig(candidates_per_generator=5, generators=["ease_recent", "popular"])
    found = ranker.candidates(both, ranker.Generators(both, history), queries, pd.Series(dtype=float),
                              content_of(history.item_ids))
    assert sorted(found.movie_id.tolist()) == [10, 11, 12]
    assert np.isnan(found.features[:, [ranker.FEATURES.index("ease_recent"), ranker.FEATURES.index("ease")]]).all()


def test_learning_holds_out_each_users_latest_ratings_and_samples_the_users():
    from collections import Counter

    from reco_assets.gold.candidates import TrainingWindow

    frame, following = sequels(300, seed=5)
    window = TrainingWindow(frame, pd.DataFrame({"user_id": [0], "movie_id": [150], "at": [1.0], "seen": [False]}))
    catalog = ranker.Catalog(pd.DataFrame({"movie_id": np.arange(200), "genres": [["Drama"]] * 200, "year": 2000}),
                             pd.DataFrame({"user_id": [0], "movie_id": [following[0] - 1], "tag": ["sequel"]}))
    config = CONFIG.model_copy(update={"validation_fraction": 0.1})
    # Each user's label is their latest movie, the last of their run of sequels; users by id.
    learned = ranker.learn(config, window, catalog)
    assert [r.tolist() for r in learned.relevant] == [[following[user] - 1] for user in range(300)]
    assert learned.training.labels(learned.relevant).any() and learned.features == list(ranker.FEATURES)
    sampled = ranker.learn(config.model_copy(update={"max_training_users": 100}), window, catalog)
    assert len(sampled.relevant) == 100 and len(np.unique(sampled.training.row)) == 100
    labels = Counter(int(r[0]) for r in sampled.relevant)
    assert labels <= Counter(following[user] - 1 for user in range(300)) and labels != Counter(
        following[user] - 1 for user in range(100))  # a seeded sample, not the first 100


def test_a_catalog_without_the_tags_on_held_out_pairs_keeps_the_others():
    movies = pd.DataFrame({"movie_id": [1, 2], "genres": [["Drama"], ["Comedy"]], "year": [1999, None]})
    tags = pd.DataFrame({"user_id": [7, 7, 8], "movie_id": [1, 2, 1], "tag": ["a", "b", "c"]})
    catalog = ranker.Catalog(movies, tags)
    kept = catalog.without_tags_on(pd.DataFrame({"user_id": [7, 9], "movie_id": [1, 1]}))
    assert kept.tags["tag"].tolist() == ["b", "c"] and kept.movies is catalog.movies
    years = catalog.years()
    assert years[1] == 1999.0 and np.isnan(years[2])


def test_queries_take_positions_a_mask_or_a_slice():
    queries = ranker.Queries(np.array([5, 6, 7]), np.array([1.0, 2.0, 3.0]),
                             [np.array([1]), np.array([], np.int64), np.array([2, 3])])
    for rows, users in ((np.array([2, 0]), [7, 5]), (np.array([True, False, True]), [5, 7]), (slice(0, 3, 2), [5, 7])):
        taken = queries[rows]
        assert taken.users.tolist() == users and taken.as_of.tolist() == [u - 4.0 for u in users]
        assert [e.tolist() for e in taken.exclude] == [queries.exclude[u - 5].tolist() for u in users]
