"""The learned ranker: candidates from EASE, popular and trending movies (gold/candidates.py), each described by
the generators' scores and ranks, the movie's popularity, trend, age and year, its content similarity to the
user's history and the user's activity; a scikit-learn gradient-boosted classifier, trained on a validation slice
inside the training window, orders them. Design and figures: docs/recommendation-quality.md.
"""

import hashlib
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field, field_validator
from pyspark.sql import DataFrame
from scipy import sparse

from reco_assets.gold import candidates as gen
from reco_assets.gold.content import ContentIndex
from reco_assets.gold.ranking import is_in, locate, ranking_metrics

FEATURES = (
    "ease_recent", "ease", "ease_recent_rank", "ease_rank", "popularity", "popularity_rank", "trend", "trend_rank",
    "trend_year", "year_gap", "age_days", "content", "activity",
)
GENERATORS = ("ease_recent", "ease", "popular", "trending")
QUERY_BLOCK = 1024  # query rows whose EASE scores are dense at once: 2 × 1,024 × 4,000 × 4 bytes = 32 MB a pass
PASS_ROWS = 20_000  # query rows whose candidates and features a pass holds (about 1M pairs at 30 per generator)
RANKING_THREADS = 2  # passes ranked at once: 1.30× faster than one at a time on 2 cores (bench/ranker_steps.py)
IMPORTANCE_USERS = 500  # validation users the permutation importances are measured on

T = TypeVar("T")


class RankerConfig(dg.Config):
    """The ranker's candidates and its gradient-boosted trees; the defaults were tuned on ml-latest-small."""

    ease_l2: float = Field(default=200.0, gt=0, description="EASE's L2 regularisation")
    ease_items: int = Field(default=4000, ge=2, description="movies with the most users that EASE models (its dense "
                                                           "inverse is this squared × 8 bytes)")
    recency_half_life: float = Field(default=5.0, gt=0, description="recent EASE: a history interaction's weight "
                                                                    "halves every this many interactions back")
    candidates_per_generator: int = Field(
        default=30, ge=1, description="each generator's best unseen movies per user (30 score as well as 50 on the "
                                      "sample, and cost 0.61× at 25M: docs/recommendation-quality.md)")
    trend_days: float = Field(default=30.0, gt=0, description="trending: interactions of this many days before the "
                                                              "user's cutoff")
    validation_fraction: float = Field(default=0.2, gt=0, lt=1, description="the ranker learns from each user's "
                                                                            "latest share of the training window")
    max_training_users: int = Field(default=20_000, ge=1, description="users of the validation slice the trees "
                                                                      "learn from (a seeded sample when more)")
    generators: list[str] = Field(default=list(GENERATORS), min_length=1,
                                  description=f"where candidates come from, of {', '.join(GENERATORS)}")
    features: list[str] = Field(default=list(FEATURES), min_length=1,
                                description=f"what the trees see, of {', '.join(FEATURES)}")
    trees: int = Field(default=300, ge=1, description="boosting iterations")
    learning_rate: float = Field(default=0.05, gt=0)
    max_leaf_nodes: int = Field(default=31, ge=2)
    seed: int = Field(default=0, description="random seed of the trees and of the training users' sample")

    @field_validator("generators", "features")
    @classmethod
    def _known(cls, names: list[str], info) -> list[str]:
        known = GENERATORS if info.field_name == "generators" else FEATURES
        if unknown := [name for name in names if name not in known]:
            raise ValueError(f"unknown {info.field_name} {unknown}; known: {list(known)}")
        return [name for name in known if name in names]

    def fingerprint(self) -> str:
        """A hash of the ranker's settings (RankerConfig's own fields only)."""
        settings = self.model_dump(include=set(RankerConfig.model_fields))
        return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Queries:
    """Whom to rank for: user ids, the moment each is recommended at (epoch seconds), the movie ids each has seen."""

    users: np.ndarray
    as_of: np.ndarray
    exclude: list[np.ndarray]

    @classmethod
    def of(cls, frame: pd.DataFrame) -> "Queries":
        """From rows (id, as_of seconds, exclude)."""
        return cls(frame["id"].to_numpy(np.int64), frame["as_of"].to_numpy(np.float64),
                   [np.asarray(seen, np.int64) for seen in frame["exclude"]])

    @classmethod
    def everyone(cls, history: gen.History, seen: np.ndarray, as_of: float | np.ndarray) -> "Queries":
        """Every user of the history at `as_of` (one moment, or one per user), each excluding the movies of their
        `seen` interactions."""
        kept = np.flatnonzero(seen)
        kept = kept[np.lexsort((history.item[kept], history.user[kept]))]
        bounds = np.searchsorted(history.user[kept], np.arange(1, len(history.user_ids)))
        return cls(history.user_ids, np.broadcast_to(np.asarray(as_of, np.float64), len(history.user_ids)).copy(),
                   np.split(history.item_ids[history.item[kept]], bounds))

    def __getitem__(self, rows: slice | np.ndarray) -> "Queries":
        """The rows of a slice, of integer positions or of a boolean mask."""
        if not isinstance(rows, slice):
            rows = np.asarray(rows)
            rows = np.flatnonzero(rows) if rows.dtype == bool else rows
        exclude = self.exclude[rows] if isinstance(rows, slice) else [self.exclude[row] for row in rows]
        return Queries(self.users[rows], self.as_of[rows], exclude)

    def __len__(self) -> int:
        return len(self.users)


@dataclass(frozen=True)
class Candidates:
    """(query row, movie id) pairs sorted by row, and their features (RankerConfig.features, in FEATURES order)."""

    row: np.ndarray
    movie_id: np.ndarray
    features: np.ndarray

    def labels(self, relevant: list[np.ndarray]) -> np.ndarray:
        """Whether each pair is among its row's relevant movie ids."""
        lengths = np.fromiter(map(len, relevant), np.int64, len(relevant))
        keys = (np.repeat(np.arange(len(relevant)), lengths) << 32) + (
            np.concatenate(relevant).astype(np.int64) if len(relevant) else np.empty(0, np.int64))
        return np.isin((self.row.astype(np.int64) << 32) + self.movie_id, keys)


class Generators:
    """What the generators know of one history, computed once for every query block: the users' binary and
    recency-weighted rows, EASE, popularity, daily counts, and each movie's first and every interaction time."""

    def __init__(self, config: RankerConfig, history: gen.History):
        self.history = history
        self.binary = history.matrix()
        self.recent = history.matrix(history.recency(config.recency_half_life))
        self.ease = gen.fit_ease(history, config.ease_l2, config.ease_items)
        self.popularity = history.users_per_item()
        self.popular_order = np.argsort(-self.popularity, kind="stable")
        self.daily = gen.daily_counts(history)
        self.first = gen.first_seen(history)
        self.item_times = gen.item_times(history)
        self.trend_days = config.trend_days
        self._trending: dict[float, tuple[int, np.ndarray]] = {}  # day -> (length asked for, list)
        self._trending_lock = threading.Lock()  # passes ranked at once share the lists

    def trending(self, days: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
        """For each cutoff day, the first `lengths` movies by interactions in the `trend_days` up to and including
        it (`recent_popularity_lists`); lists this object already made for a day are reused."""
        with self._trending_lock:
            missing = np.array([day not in self._trending or self._trending[day][0] < length
                                for day, length in zip(days, lengths, strict=True)], bool)
            if missing.any():
                lists = gen.recent_popularity_lists(self.daily[0], self.daily[1], len(self.history.item_ids),
                                                    days[missing] + 1, self.trend_days, lengths[missing],
                                                    self.daily[2])
                for day, length, found in zip(days[missing], lengths[missing], lists, strict=True):
                    self._trending[day] = (int(length), found)
            return [self._trending[day][1][:length] for day, length in zip(days, lengths, strict=True)]


def _ranks_within(rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """1-based rank of each value within its row, highest first (NaN last); rows sorted ascending."""
    order = np.lexsort((-np.nan_to_num(values, nan=-np.inf), rows))
    starts = np.searchsorted(rows, rows[order], "left")
    ranks = np.empty(len(rows))
    ranks[order] = np.arange(len(rows)) - starts + 1
    return ranks


def _excluded(history: gen.History, queries: Queries) -> sparse.csr_matrix:
    lengths = np.fromiter(map(len, queries.exclude), np.int64, len(queries))
    ids = np.concatenate(queries.exclude) if len(queries) else np.empty(0, np.int64)
    items, known = gen.locate_items(history, ids)
    rows = np.repeat(np.arange(len(lengths)), lengths)[known]
    return sparse.csr_matrix((np.ones(len(items), np.float32), (rows, items)),
                             shape=(len(lengths), len(history.item_ids)))


def candidates(config: RankerConfig, generators: Generators, queries: Queries, years: pd.Series,
               content: ContentIndex) -> Candidates:
    """The union of the `generators`' best `candidates_per_generator` unseen movies of each query row, with their
    `features`. A movie nobody had interacted with by the row's `as_of` did not exist for it and is never one (in
    the per-user protocol, other users' later ratings are in the training window): EASE and the popular list read
    on past such movies. A day's trending list holds the movies seen up to the end of that day, as many as its
    most excluding row needs; one first seen later that day than a row's moment is skipped, not replaced.

    `years`: release year by movie id (NaN where unknown). Every feature is as of the row's `as_of` except the
    all-time popularity, which counts the whole history as the popularity baseline does.
    """
    history, ease = generators.history, generators.ease
    n = config.candidates_per_generator
    n_rows = len(queries)
    positions, known = locate(history.user_ids, queries.users)
    select = sparse.csr_matrix((np.ones(len(positions), np.float32), (np.flatnonzero(known), positions)),
                               shape=(n_rows, len(history.user_ids)))
    binary, recent = select @ generators.binary, select @ generators.recent
    excluded = _excluded(history, queries)

    listed_rows, listed_items = [np.empty(0, np.int64)], [np.empty(0, np.int64)]  # popular and trending
    if "popular" in config.generators:
        found = gen.unseen_heads(generators.popular_order, excluded, np.arange(n_rows), n, generators.first,
                                 queries.as_of)
        listed_rows.append(found[0])
        listed_items.append(found[1])
    if "trending" in config.generators:
        cutoff_days, day_of_row = np.unique(np.floor(queries.as_of / gen.DAY_SECONDS), return_inverse=True)
        lengths = np.zeros(len(cutoff_days), np.int64)
        np.maximum.at(lengths, day_of_row, np.diff(excluded.indptr) + n)
        lists = generators.trending(cutoff_days, lengths)
        by_day = np.argsort(day_of_row, kind="stable")
        bounds = np.searchsorted(day_of_row[by_day], np.arange(len(cutoff_days) + 1))
        for day, ranked in enumerate(lists):
            found = gen.unseen_heads(ranked, excluded, by_day[bounds[day]:bounds[day + 1]], n, generators.first,
                                     queries.as_of)
            listed_rows.append(found[0])
            listed_items.append(found[1])
    listed_rows, listed_items = np.concatenate(listed_rows), np.concatenate(listed_items)
    order = np.argsort(listed_rows, kind="stable")
    listed_rows, listed_items = listed_rows[order], listed_items[order]
    generating = np.array([name in config.generators for name in ("ease_recent", "ease")])

    rows, items, ease_scores = [], [], []
    for start in range(0, n_rows, QUERY_BLOCK):
        block = np.arange(start, min(start + QUERY_BLOCK, n_rows))
        scored = np.stack([ease.scores(recent[block]), ease.scores(binary[block])])  # [2, rows, c]
        seen_rows, seen_columns = excluded[block][:, ease.columns].nonzero()
        scored[:, seen_rows, seen_columns] = -np.inf
        scored[:, binary[block][:, ease.columns].getnnz(axis=1) == 0] = -np.inf  # no history EASE knows: no opinion
        scored[:, generators.first[ease.columns][None, :] > queries.as_of[block][:, None]] = -np.inf  # not yet there
        top = min(n, scored.shape[2])
        heads = np.argpartition(-scored, top - 1, axis=2)[:, :, :top] if top else np.empty((2, len(block), 0), int)
        finite = np.isfinite(np.take_along_axis(scored, heads, axis=2)) & generating[:, None, None]
        block_rows = [np.broadcast_to(block[:, None], heads.shape)[finite]]
        block_items = [ease.columns[heads[finite]]]
        lo, hi = np.searchsorted(listed_rows, [block[0], block[-1] + 1])
        block_rows.append(listed_rows[lo:hi])
        block_items.append(listed_items[lo:hi])
        keys = np.unique((np.concatenate(block_rows).astype(np.int64) << 32) + np.concatenate(block_items))
        pair_rows, pair_items = keys >> 32, keys & 0xFFFFFFFF
        column, in_model = locate(ease.columns, pair_items)
        values = np.full((2, len(keys)), np.nan, np.float32)
        values[:, in_model] = scored[:, pair_rows[in_model] - start, column]
        values[~np.isfinite(values)] = np.nan  # a history EASE does not model gives it no score
        rows.append(pair_rows)
        items.append(pair_items)
        ease_scores.append(values)
    row = np.concatenate(rows) if rows else np.empty(0, np.int64)
    item = np.concatenate(items) if items else np.empty(0, np.int64)
    ease_recent, ease_all = np.concatenate(ease_scores, axis=1) if ease_scores else np.empty((2, 0))

    as_of = queries.as_of[row]
    trend = gen.window_counts(generators.item_times, item, as_of, config.trend_days * gen.DAY_SECONDS)
    movie_id = history.item_ids[item]
    popularity = generators.popularity[item]
    columns = {
        "ease_recent": lambda: ease_recent, "ease": lambda: ease_all,
        "ease_recent_rank": lambda: _ranks_within(row, ease_recent), "ease_rank": lambda: _ranks_within(row, ease_all),
        "popularity": lambda: np.log1p(popularity), "popularity_rank": lambda: _ranks_within(row, popularity),
        "trend": lambda: np.log1p(trend), "trend_rank": lambda: _ranks_within(row, trend),
        "trend_year": lambda: np.log1p(gen.window_counts(generators.item_times, item, as_of, 365 * gen.DAY_SECONDS)),
        "year_gap": lambda: (pd.to_datetime(as_of, unit="s", utc=True).year.to_numpy(np.float64)
                             - years.reindex(movie_id).to_numpy(np.float64)),
        "age_days": lambda: np.maximum(as_of - generators.first[item], 0.0) / gen.DAY_SECONDS,
        "content": lambda: _content(content, history, recent, row, movie_id, n_rows),
        "activity": lambda: np.log1p(np.asarray(binary.sum(axis=1)).ravel()[row]),
    }
    features = np.empty((len(row), len(config.features)), np.float32)
    for column, name in enumerate(config.features):
        features[:, column] = columns[name]()
    return Candidates(row, movie_id, features)


def ranked_passes(config: RankerConfig, generators: Generators, queries: Queries, years: pd.Series,
                  content: ContentIndex, rank: Callable[[Queries, Candidates], T],
                  threads: int = RANKING_THREADS) -> list[T]:
    """`rank(query rows, their candidates)` for each pass of PASS_ROWS query rows, in order, `threads` passes at a
    time: numpy's sorts, scipy's products and the trees' prediction release the GIL."""
    years.index.get_indexer(years.index[:1])  # pandas fills an index's hash table lazily, without a lock: fill it now

    def rank_pass(start: int) -> T:
        rows = queries[start:start + PASS_ROWS]
        return rank(rows, candidates(config, generators, rows, years, content))

    with ThreadPoolExecutor(threads, thread_name_prefix="ranking") as pool:
        return list(pool.map(rank_pass, range(0, len(queries), PASS_ROWS)))


def _content(content: ContentIndex, history: gen.History, recent: sparse.csr_matrix, row: np.ndarray,
             movie_id: np.ndarray, n_rows: int) -> np.ndarray:
    """The cosine of each candidate to its row's history profile, the history weighted by recency."""
    if not n_rows:
        return np.empty(0)
    bounds = recent.indptr
    similarities = content.similarities(
        [history.item_ids[recent.indices[bounds[r]:bounds[r + 1]]] for r in range(n_rows)],
        [recent.data[bounds[r]:bounds[r + 1]] for r in range(n_rows)],
        np.split(movie_id, np.searchsorted(row, np.arange(1, n_rows))))
    return np.concatenate(similarities)


def fit(config: RankerConfig, training: Candidates, relevant: list[np.ndarray]):
    """A HistGradientBoostingClassifier of whether a candidate is relevant."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    labels = training.labels(relevant)
    if labels.all() or not labels.any():
        raise ValueError(f"the ranker needs relevant and irrelevant candidates; {labels.sum()} of {len(labels)} are")
    model = HistGradientBoostingClassifier(max_iter=config.trees, learning_rate=config.learning_rate,
                                           max_leaf_nodes=config.max_leaf_nodes, early_stopping=False,
                                           random_state=config.seed)
    features = training.features.copy()
    features[:, np.isnan(features).all(axis=0)] = 0.0  # scikit-learn cannot bin a column without a value
    return model.fit(features, labels)


def best(model, scored: Candidates, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indexes into `scored` of each row's best k by the model, best first and by row; their 0-based ranks; their
    probabilities)."""
    probability = model.predict_proba(scored.features)[:, 1] if len(scored.row) else np.empty(0)
    order = np.lexsort((-probability, scored.row))
    rows = scored.row[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows, "left")
    kept = rank < k
    return order[kept], rank[kept], probability[order[kept]]


def top_k(model, scored: Candidates, n_rows: int, k: int) -> np.ndarray:
    """[rows, k] movie ids, the model's best first (-1 where a row has fewer candidates)."""
    picked, rank, _ = best(model, scored, k)
    recommended = np.full((n_rows, k), -1, np.int64)
    recommended[scored.row[picked], rank] = scored.movie_id[picked]
    return recommended


@dataclass(frozen=True)
class Learned:
    """A trained ranker, the validation candidates it learned from, their relevant movies and the features' names."""

    model: object
    training: Candidates
    relevant: list[np.ndarray]
    features: list[str]


@dataclass(frozen=True)
class Catalog:
    """The movies as the ranker reads them, collected once: `movies` (movie_id, genres, year) and the `tags`
    (user_id, movie_id, tag) it may describe them with."""

    movies: pd.DataFrame
    tags: pd.DataFrame

    @classmethod
    def collect(cls, movies: DataFrame, tags: DataFrame) -> "Catalog":
        return cls(movies.select("movie_id", "genres", "year").toPandas(),
                   tags.select("user_id", "movie_id", "tag").toPandas())

    def years(self) -> pd.Series:
        """Release year by movie id (NaN where unknown)."""
        return self.movies.set_index("movie_id")["year"].astype(np.float64)

    def content(self) -> ContentIndex:
        return ContentIndex.from_movies(self.movies, self.tags)

    def without_tags_on(self, pairs: pd.DataFrame) -> "Catalog":
        """The catalog without the tags on these (user_id, movie_id) pairs."""
        tagged = gen.pair_keys(self.tags["user_id"], self.tags["movie_id"])
        return Catalog(self.movies, self.tags[~is_in(tagged, gen.pair_keys(pairs["user_id"], pairs["movie_id"]))])


def learn(config: RankerConfig, window: gen.TrainingWindow, catalog: Catalog) -> Learned:
    """Train the ranker on a validation slice of a training window: each user's latest `validation_fraction` of
    ratings are the labels and the rest gives the features (the tags on the labels' pairs too); at most
    `max_training_users` users, a seeded sample."""
    kept, held = window.holdout(config.validation_fraction)
    history, seen = kept.history()
    as_of = kept.rated.groupby("user_id")["at"].max().reindex(history.user_ids).to_numpy(np.float64)
    held_users = held["user_id"].to_numpy(np.int64)
    users = np.unique(held_users)
    if len(users) > config.max_training_users:
        users = np.sort(pd.Series(users).sample(n=config.max_training_users, random_state=config.seed).to_numpy())
    queries = Queries.everyone(history, seen, as_of)[np.searchsorted(history.user_ids, users)]
    held_movies = held["movie_id"].to_numpy(np.int64)
    bounds = np.searchsorted(held_users, users)  # held rows are by user
    relevant = [np.sort(held_movies[lo:hi]) for lo, hi in
                zip(bounds, np.searchsorted(held_users, users, "right"), strict=True)]
    catalog = catalog.without_tags_on(held)
    training = candidates(config, Generators(config, history), queries, catalog.years(), catalog.content())
    return Learned(fit(config, training, relevant), training, relevant, config.features)


def importances(learned: Learned, k: int, seed: int = 0) -> dict[str, float]:
    """Per feature, how much nDCG@k on (up to IMPORTANCE_USERS of) the validation slice drops when that feature's
    values are shuffled: across candidates, or across users for a feature of the user (the same on all their
    candidates, such as `activity`). What the trees lean on."""
    rng = np.random.default_rng(seed)
    training, n_users = learned.training, len(learned.relevant)
    users = np.sort(rng.choice(n_users, min(n_users, IMPORTANCE_USERS), replace=False))
    kept = np.isin(training.row, users)
    row = np.searchsorted(users, training.row[kept])
    relevant = [learned.relevant[user] for user in users]
    first = np.searchsorted(row, np.arange(len(users)))  # each user's first candidate (rows are sorted)
    has_candidates = np.isin(np.arange(len(users)), row)

    def ndcg(features: np.ndarray) -> float:
        ranked = top_k(learned.model, Candidates(row, training.movie_id[kept], features), len(users), k)
        return float(ranking_metrics(ranked, relevant, k)["ndcg"].mean())

    features = training.features[kept]
    baseline = ndcg(features)
    drops = {}
    for column, name in enumerate(learned.features):
        shuffled = features.copy()
        per_user = features[first[has_candidates], column]
        if np.array_equal(features[:, column], per_user[np.searchsorted(np.flatnonzero(has_candidates), row)],
                          equal_nan=True):
            shuffled[:, column] = rng.permutation(per_user)[np.searchsorted(np.flatnonzero(has_candidates), row)]
        else:
            shuffled[:, column] = rng.permutation(shuffled[:, column])
        drops[name] = round(baseline - ndcg(shuffled), 5)
    return drops
