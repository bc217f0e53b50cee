"""The ranker's candidate generators: recency weights, EASE, trending counts and the recent-popularity sweep."""

from datetime import UTC, datetime

import numpy as np

from reco_assets.gold import candidates
from reco_assets.gold.candidates import History


def test_recency_halves_a_weight_every_half_life_back_from_each_users_latest():
    history = History.of(users=[1, 1, 1, 2, 2], items=[10, 20, 30, 10, 40], at=[5.0, 9.0, 7.0, 1.0, 1.0])
    weights = dict(zip(zip(history.user_ids[history.user], history.item_ids[history.item], strict=True),
                       history.recency(2.0), strict=True))
    assert weights == {(1, 20): 1.0, (1, 30): 2 ** -0.5, (1, 10): 0.5,
                       (2, 40): 1.0, (2, 10): 2 ** -0.5}  # a tie in time: the higher movie position counts as later


def test_recency_weights_never_underflow_float32():
    history = History.of(users=np.zeros(2000, int), items=np.arange(2000), at=np.arange(2000.0))
    assert (history.matrix(history.recency(1.0)).data > 0).all()


def test_latest_first_orders_as_lexsort_does_ties_in_time_included():
    rng = np.random.default_rng(7)
    users, at, items = rng.integers(0, 50, 5000), rng.integers(0, 20, 5000).astype(float), rng.integers(0, 300, 5000)
    at[::97] = np.nan  # last within their user, as pandas' sort put them
    order = candidates.latest_first(users, at, items)
    assert np.array_equal(order, np.lexsort((-items, -at, users)))
    assert (np.diff(users[order]) >= 0).all() and not np.array_equal(order, np.argsort(users, kind="stable"))


def test_ease_models_the_most_interacted_movies_and_scores_a_planted_pair_highest():
    rng = np.random.default_rng(3)
    users, items = [], []
    for user in range(300):
        picked = rng.choice(np.arange(2, 40), 5, replace=False).tolist()
        if user % 2:  # movies 0 and 1 always go together
            picked += [0, 1]
        users += [user] * len(picked)
        items += picked
    users += [999]  # movie 77 has one user only: EASE leaves it out
    items += [77]
    history = History.of(users, items, np.zeros(len(users)))
    model = candidates.fit_ease(history, l2=10.0, max_items=30)
    assert len(model.columns) == 30 and 77 not in history.item_ids[model.columns]
    assert 0 in history.item_ids[model.columns] and 1 in history.item_ids[model.columns]
    assert np.allclose(np.diag(model.weights), 0.0)
    only_zero = np.zeros((1, len(history.item_ids)), np.float32)
    only_zero[0, 0] = 1.0
    scores = model.scores(only_zero)[0]
    assert history.item_ids[model.columns[np.argmax(scores)]] == 1


def test_window_counts_count_the_interactions_before_each_cutoff_only():
    history = History.of(users=[1, 2, 3, 4, 1], items=[10, 10, 10, 20, 20], at=[0.0, 50.0, 99.0, 100.0, 10.0])
    positions = np.searchsorted(history.item_ids, [10, 10, 20, 20])
    counts = candidates.window_counts(candidates.item_times(history), positions, np.array([100.0, 60.0, 100.0, 101.0]),
                                      60.0)
    assert counts.tolist() == [2.0, 2.0, 0.0, 1.0]  # [40, 100): 50, 99; [0, 60): 0 (its edge), 50; 100 < 101


def test_daily_counts_and_first_interactions():
    day = candidates.DAY_SECONDS
    history = History.of(users=[1, 2, 3], items=[5, 5, 6], at=[day * 3 + 1, day * 3 + 7, day * 9])
    days, items, counts = candidates.daily_counts(history)
    assert sorted(zip(days.tolist(), history.item_ids[items].tolist(), counts.tolist(), strict=True)) == [
        (3, 5, 2), (9, 6, 1)]
    assert candidates.first_seen(history).tolist() == [day * 3 + 1, day * 9]


def test_unseen_heads_skip_each_rows_excluded_items_and_read_on_past_those_not_there_yet():
    from scipy import sparse

    excluded = sparse.csr_matrix(([1.0, 1.0], ([0, 0], [3, 1])), shape=(2, 5))
    always, now = np.zeros(5), np.array([10.0, 10.0])
    rows, items = candidates.unseen_heads(np.array([3, 2, 1, 0, 4]), excluded, np.array([0, 1]), 3, always, now)
    assert list(zip(rows.tolist(), items.tolist(), strict=True)) == [(0, 2), (0, 0), (0, 4), (1, 3), (1, 2), (1, 1)]
    rows, items = candidates.unseen_heads(np.array([3, 2, 1, 0, 4]), excluded, np.array([1, 0]), 2, always, now,
                                          chunk=1)
    assert list(zip(rows.tolist(), items.tolist(), strict=True)) == [(1, 3), (1, 2), (0, 2), (0, 0)]
    # Row 1 at time 5: items 3 and 2 first appear at 8, so it reads down to 1 and 0; row 0 (time 10) does not.
    first = np.array([0.0, 0.0, 8.0, 8.0, 0.0])
    rows, items = candidates.unseen_heads(np.array([3, 2, 1, 0, 4]), excluded, np.array([0, 1]), 2, first,
                                          np.array([10.0, 5.0]))
    assert list(zip(rows.tolist(), items.tolist(), strict=True)) == [(0, 2), (0, 0), (1, 1), (1, 0)]
    rows, items = candidates.unseen_heads(np.array([3, 2, 1, 0, 4]), excluded, np.array([1]), 5, first,
                                          np.array([10.0, 5.0]))
    assert items.tolist() == [1, 0, 4]  # the list ends first
    # A row short of n reads twice as far (the first head, 2 items, holds none that existed at time 5).
    rows, items = candidates.unseen_heads(np.array([3, 2, 1, 0, 4]), sparse.csr_matrix((2, 5)), np.array([1, 0]), 2,
                                          first, np.array([10.0, 5.0]))
    # Row 0 (time 10) is done at once; row 1 (time 5) finds none of 3 and 2, then reads on to 1 and 0.
    assert rows.tolist() == [0, 0, 1, 1] and items.tolist() == [3, 2, 1, 0]


def test_a_windows_history_keeps_each_pairs_latest_moment_and_what_was_seen(spark):
    at = datetime(2020, 1, 1, tzinfo=UTC)
    ratings = spark.createDataFrame([(1, 10, 4.0, at)], "user_id INT, movie_id INT, rating FLOAT, rated_at TIMESTAMP")
    events = spark.createDataFrame(
        [(1, 10, "click", at.replace(day=2)), (1, 20, "click", at), (2, 20, "view", at), (2, 20, "click", at)],
        "user_id INT, movie_id INT, event_type STRING, event_ts TIMESTAMP")
    history, seen = candidates.TrainingWindow.collect(ratings, events).history()
    rows = {(int(history.user_ids[u]), int(history.item_ids[i])): (t, s)
            for u, i, t, s in zip(history.user, history.item, history.at, seen, strict=True)}
    assert rows == {(1, 10): (at.replace(day=2).timestamp(), True), (1, 20): (at.timestamp(), False),
                    (2, 20): (at.timestamp(), True)}
    history, seen = candidates.TrainingWindow.collect(ratings, None).history()
    assert (history.user_ids.tolist(), history.item_ids.tolist(), history.at.tolist(), seen.tolist()) == (
        [1], [10], [at.timestamp()], [True])


def test_the_drivers_holdout_holds_out_what_the_evaluations_split_does(spark):
    """TrainingWindow.holdout and als.chronological_split agree on the sample's ratings, ties in time included."""
    from reco_assets.bronze.movielens import BUNDLED_SAMPLE
    from reco_assets.gold import als
    from reco_assets.silver import transforms

    ratings = transforms.ratings(transforms.read_movielens_csv(spark, str(BUNDLED_SAMPLE), "ratings")).cache()
    expected = als.chronological_split(ratings, 0.2).where("is_test").select("user_id", "movie_id").toPandas()
    held_pair = tuple(int(v) for v in expected.iloc[0])
    events = spark.createDataFrame([(*held_pair, "view", datetime(2020, 1, 1, tzinfo=UTC)),
                                    (held_pair[0], 999_999, "view", datetime(2020, 1, 1, tzinfo=UTC))],
                                   "user_id INT, movie_id INT, event_type STRING, event_ts TIMESTAMP")
    window = candidates.TrainingWindow.collect(ratings, events)
    kept, held = window.holdout(0.2)
    assert sorted(map(tuple, held[["user_id", "movie_id"]].to_numpy().tolist())) == sorted(
        map(tuple, expected.to_numpy().tolist()))
    assert len(kept.rated) + len(held) == len(window.rated) and held["user_id"].is_monotonic_increasing
    assert kept.streamed["movie_id"].tolist() == [999_999]  # the stream's pair on a held-out rating goes too


def naive_recent_popularity(days, items, n_items, cutoff, window, length):
    """Rank every rated item from scratch: ratings in the window, then ratings before the cutoff, then position."""
    before = days < cutoff
    recent = np.bincount(items[before & (days >= cutoff - window)], minlength=n_items)
    total = np.bincount(items[before], minlength=n_items)
    ranked = sorted(np.flatnonzero(total), key=lambda item: (-recent[item], -total[item], item))
    return ranked[:length]


def test_recent_popularity_ranks_by_the_window_then_by_all_ratings_before_the_cutoff():
    days = np.array([0, 1, 2, 10, 11, 11])
    items = np.array([0, 0, 1, 2, 2, 1])
    cutoffs = np.array([12, 2, 11, 12])
    lists = candidates.recent_popularity_lists(days, items, 4, cutoffs, 5, np.array([10, 10, 10, 1]),
                                               np.ones(len(days)))
    assert [list(found) for found in lists] == [[2, 1, 0], [0], [2, 0, 1], [2]]  # item 3 was never rated


def test_recent_popularity_sweep_matches_a_ranking_from_scratch_at_every_cutoff():
    rng = np.random.default_rng(7)
    days = rng.integers(0, 400, 5000).astype(float)
    items = rng.zipf(1.6, 5000) % 300
    cutoffs = rng.integers(-5, 420, 60).astype(float)
    lengths = rng.integers(1, 40, 60)
    lists = candidates.recent_popularity_lists(days, items, 300, cutoffs, 28, lengths, np.ones(len(days)))
    for found, cutoff, length in zip(lists, cutoffs, lengths, strict=True):
        assert list(found) == naive_recent_popularity(days, items, 300, cutoff, 28, length), cutoff


