"""Candidate generators of the ranker, on the driver with numpy and scipy.

- EASE (Steck, 2019), an item-to-item model with a closed form, fitted on the most interacted movies. It scores a
  user twice: on their whole history, and on a history whose weights halve every `recency_half_life`
  interactions back from the latest (what a user does next is closest to what they did last).
- Popular movies: users per movie over the training window.
- Trending movies: interactions per movie in the days before each user's cutoff (`recent_popularity_lists`).

Design and figures: docs/recommendation-quality.md.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from scipy import sparse
from scipy.linalg import lapack

from reco_assets.gold.als import SEEN_EVENT_TYPES
from reco_assets.gold.ranking import is_in, locate

DAY_SECONDS = 86400.0


@dataclass(frozen=True)
class History:
    """Training interactions, one per (user, movie): positions `user` and `item` into the sorted `user_ids` and
    `item_ids`, and the time of each (epoch seconds)."""

    user_ids: np.ndarray
    item_ids: np.ndarray
    user: np.ndarray
    item: np.ndarray
    at: np.ndarray

    @classmethod
    def of(cls, users: np.ndarray, items: np.ndarray, at: np.ndarray) -> "History":
        user_ids, user = np.unique(np.asarray(users, np.int64), return_inverse=True)
        item_ids, item = np.unique(np.asarray(items, np.int64), return_inverse=True)
        return cls(user_ids, item_ids, user, item, np.asarray(at, np.float64))

    def matrix(self, values: np.ndarray | None = None) -> sparse.csr_matrix:
        """[users, items]: 1 per interaction, or `values`."""
        values = np.ones(len(self.user), np.float32) if values is None else np.asarray(values, np.float32)
        return sparse.csr_matrix((values, (self.user, self.item)), shape=(len(self.user_ids), len(self.item_ids)))

    def recency(self, half_life: float) -> np.ndarray:
        """Each interaction's weight 2^(-n / half_life), n = the user's interactions after it (0 for the latest;
        ties in time by movie position), at least 2^-100 so that float32 keeps it."""
        order = latest_first(self.user, self.at, self.item)
        sorted_users = self.user[order]
        first = np.searchsorted(sorted_users, sorted_users, "left")
        newer = np.empty(len(order), np.float64)
        newer[order] = np.arange(len(order)) - first
        return np.exp2(np.maximum(-newer / half_life, -100.0))

    def users_per_item(self) -> np.ndarray:
        return np.bincount(self.item, minlength=len(self.item_ids)).astype(np.float64)


@dataclass(frozen=True)
class TrainingWindow:
    """A training window on the driver, collected once: `rated` (user_id, movie_id, at: epoch seconds), and
    `streamed`, the stream's (user, movie) pairs (user_id, movie_id, at: the latest event, seen: rated or viewed,
    SEEN_EVENT_TYPES, as ALS counts it)."""

    rated: pd.DataFrame
    streamed: pd.DataFrame

    @classmethod
    def collect(cls, ratings: DataFrame, events: DataFrame | None) -> "TrainingWindow":
        rated = ratings.select("user_id", "movie_id", F.col("rated_at").cast("double").alias("at")).toPandas()
        if events is None:
            return cls(rated, pd.DataFrame({"user_id": np.empty(0, np.int64), "movie_id": np.empty(0, np.int64),
                                            "at": np.empty(0), "seen": np.empty(0, bool)}))
        streamed = events.groupBy("user_id", "movie_id").agg(
            F.max(F.col("event_ts").cast("double")).alias("at"),
            F.max(F.col("event_type").isin(*SEEN_EVENT_TYPES)).alias("seen")).toPandas()
        return cls(rated, streamed)

    def history(self) -> tuple[History, np.ndarray]:
        """The History of every (user, movie) pair rated or streamed, at its latest moment, and which pairs are seen
        (never recommended): every rated one, and the streamed ones seen."""
        frames = (self.rated, self.streamed)
        users, movies, at = (np.concatenate([f[c].to_numpy(t) for f in frames]) for c, t in
                             (("user_id", np.int64), ("movie_id", np.int64), ("at", np.float64)))
        seen = np.concatenate([np.ones(len(self.rated), bool), self.streamed["seen"].to_numpy(bool)])
        keys, pair = np.unique(pair_keys(users, movies), return_inverse=True)
        latest = np.full(len(keys), -np.inf)
        np.maximum.at(latest, pair, at)
        any_seen = np.zeros(len(keys), bool)
        np.logical_or.at(any_seen, pair, seen)
        return History.of(keys >> 32, keys & 0xFFFFFFFF, latest), any_seen

    def holdout(self, fraction: float) -> tuple["TrainingWindow", pd.DataFrame]:
        """Each user's latest ratings held out as `als.chronological_split` holds them (a share, at least one, of
        users with two or more; latest by time, then by movie id): the window without them or the stream's pairs on
        them, and the held-out ratings (user_id, movie_id, at), by user."""
        rated = self.rated.take(latest_first(*(self.rated[c].to_numpy() for c in ("user_id", "at", "movie_id"))))
        users = rated["user_id"].to_numpy(np.int64)
        first = np.searchsorted(users, users, "left")
        count = np.searchsorted(users, users, "right") - first
        held = (count >= 2) & (np.arange(len(users)) - first < np.maximum(1, np.floor(count * fraction)))
        held_pairs = pair_keys(rated["user_id"][held], rated["movie_id"][held])
        streamed = self.streamed[~is_in(pair_keys(self.streamed["user_id"], self.streamed["movie_id"]), held_pairs)]
        return TrainingWindow(rated[~held], streamed), rated[held]


def latest_first(users: np.ndarray, at: np.ndarray, items: np.ndarray) -> np.ndarray:
    """The order of interactions by user, each user's latest first, ties by item descending: `np.lexsort((-items,
    -at, users))` as three stable sorts of contiguous keys, the least significant first (faster than lexsort's
    gathers: bench/ranker_steps.py)."""
    order = np.argsort(-np.asarray(items, np.int64), kind="stable")
    order = order[np.argsort(-np.asarray(at, np.float64)[order], kind="stable")]
    return order[np.argsort(np.asarray(users, np.int64)[order], kind="stable")]


def pair_keys(users, movies) -> np.ndarray:
    """One int64 key per (user id, movie id) pair: the user in the high 32 bits."""
    return (np.asarray(users, np.int64) << 32) | np.asarray(movies, np.int64)


@dataclass(frozen=True)
class Ease:
    """EASE weights [c, c] over the item positions `columns` (zero diagonal)."""

    columns: np.ndarray
    weights: np.ndarray

    def scores(self, histories: sparse.csr_matrix) -> np.ndarray:
        """[rows, c]: each row's history (weights per item position) times the weights."""
        return np.asarray(histories[:, self.columns] @ self.weights, np.float32)


def fit_ease(history: History, l2: float, max_items: int) -> Ease:
    """EASE on the `max_items` movies with the most users (at least two each): B = I - P / diag(P), P = (XᵀX +
    l2·I)⁻¹ on the binary matrix X. The dense inverse is max_items² × 8 bytes (128 MB at 4,000)."""
    users = history.users_per_item()
    eligible = np.flatnonzero(users >= 2)
    columns = np.sort(eligible[np.argsort(-users[eligible], kind="stable")[:max_items]])
    binary = history.matrix()[:, columns]
    gram = (binary.T @ binary).toarray().astype(np.float64)
    gram[np.diag_indices_from(gram)] += l2
    # Symmetric positive definite: an inverse from a Cholesky factor takes half the time of a general one. gram.T is
    # the same matrix in Fortran order, which LAPACK factors in place.
    factor, info = lapack.dpotrf(gram.T, lower=False, overwrite_a=True)
    if info == 0:
        upper, info = lapack.dpotri(factor, lower=False, overwrite_c=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE's Gram matrix is not positive definite (LAPACK info {info})")
    inverse = np.triu(upper) + np.triu(upper, 1).T
    weights = -inverse / np.diag(inverse)
    np.fill_diagonal(weights, 0.0)
    return Ease(columns, weights.astype(np.float32))


def recent_popularity_lists(days: np.ndarray, items: np.ndarray, n_items: int, cutoffs: np.ndarray,
                            window_days: float, lengths: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    """For each cutoff (a day), the first `lengths[i]` item positions by `counts` in [cutoff - window, cutoff),
    then by counts before the cutoff, then by position; only items counted before the cutoff.

    `days`, `items`, `counts`: how many interactions each item had on each day. One sweep over them in time order
    serves every cutoff.
    """
    order = np.argsort(days, kind="stable")
    days, items = np.asarray(days, np.float64)[order], np.asarray(items, np.int64)[order]
    weights = np.asarray(counts, np.float64)[order]
    recent, total = np.zeros(n_items), np.zeros(n_items)
    added = removed = 0
    scale = np.bincount(items, weights, minlength=n_items).max(initial=0) + 1  # above any item's total
    lists: list[np.ndarray] = [np.empty(0, np.int64)] * len(cutoffs)
    for i in np.argsort(cutoffs, kind="stable"):
        end = int(np.searchsorted(days, cutoffs[i], "left"))
        if end > added:
            new = np.bincount(items[added:end], weights[added:end], minlength=n_items)
            recent += new
            total += new
            added = end
        start = int(np.searchsorted(days, cutoffs[i] - window_days, "left"))
        if start > removed:
            recent -= np.bincount(items[removed:start], weights[removed:start], minlength=n_items)
            removed = start
        key = recent * scale + total  # exact in float64 below 2**53
        length = min(int(lengths[i]), int((total > 0).sum()))
        if length <= 0:
            continue
        kth = key[np.argpartition(-key, length - 1)[length - 1]]
        above = np.flatnonzero(key > kth)
        top = np.concatenate([above, np.flatnonzero(key == kth)[:length - len(above)]])  # ties: lowest positions
        lists[i] = top[np.lexsort((top, -key[top]))]
    return lists


def daily_counts(history: History) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(days, item positions, interactions) per (item, day) of the history."""
    days = np.floor(history.at / DAY_SECONDS).astype(np.int64)
    first = int(days.min()) if len(days) else 0
    keys, counts = np.unique(history.item.astype(np.int64) * (1 << 32) + (days - first), return_counts=True)
    return (keys & 0xFFFFFFFF) + first, keys >> 32, counts


def item_times(history: History) -> np.ndarray:
    """The sorted keys (item position × 1e10 + time) that `window_counts` searches. Times are below 1e10 s (the year
    2286); at 60,000 items the keys keep times to 1/8 s, finer than the windows' edges need."""
    return np.sort(history.item * 1e10 + history.at)


def window_counts(keys: np.ndarray, items: np.ndarray, cutoffs: np.ndarray, window_seconds: float) -> np.ndarray:
    """For each (item position, cutoff time): the item's interactions in [cutoff - window, cutoff), from the
    `item_times` keys of a history."""
    query = np.asarray(items, np.float64) * 1e10
    return (np.searchsorted(keys, query + cutoffs, "left")
            - np.searchsorted(keys, query + cutoffs - window_seconds, "left")).astype(np.float64)


def first_seen(history: History) -> np.ndarray:
    """Each item position's earliest interaction time."""
    first = np.full(len(history.item_ids), np.inf)
    np.minimum.at(first, history.item, history.at)
    return first


def unseen_heads(ranked: np.ndarray, excluded: sparse.csr_matrix, rows: np.ndarray, n: int, first: np.ndarray,
                 as_of: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(row, item position) pairs, each row's together and in `ranked` order: for each of `rows`, the first n of
    `ranked` (item positions) that the row of `excluded` has not excluded and that existed at the row's `as_of`
    (the item's `first` interaction no later; `as_of` by query row, `first` by item position).

    Vectorised over `chunk` rows at a time; the rows still short of n read twice as far down `ranked`, until the
    list ends."""
    rows = np.asarray(rows, np.int64)
    found_rows, found_items = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    seen = np.diff(excluded.indptr)
    for start in range(0, len(rows) if len(ranked) else 0, chunk):
        pending = rows[start:start + chunk]
        length = n + int(seen[pending].max())
        while len(pending):
            head = np.asarray(ranked[:length], np.int64)
            open_ = (excluded[pending][:, head].toarray() == 0) & (first[head][None, :] <= as_of[pending][:, None])
            done = (open_.sum(axis=1) >= n) | (length >= len(ranked))
            keep = open_[done] & (np.cumsum(open_[done], axis=1, dtype=np.int32) <= n)
            at_row, at = np.nonzero(keep)
            found_rows.append(pending[done][at_row])
            found_items.append(head[at])
            pending, length = pending[~done], length * 2
    return np.concatenate(found_rows), np.concatenate(found_items)


def locate_items(history: History, ids) -> tuple[np.ndarray, np.ndarray]:
    """(item positions of the ids the history knows, mask of those among `ids`)."""
    return locate(history.item_ids, np.asarray(ids, np.int64))
