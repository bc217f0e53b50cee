"""The learned ranker: candidates from EASE, popular and trending movies (gold/candidates.py), each described by
the generators' scores and ranks, the movie's popularity, trend, age and year, its content similarity to the
user's history and the user's activity; a scikit-learn gradient-boosted classifier, trained on a validation slice
inside the training window, orders them. Design and figures: docs/recommendation-quality.md.
"""

from dataclasses import dataclass
from datetime import UTC, datetime

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field, field_validator
from scipy import sparse

from reco_assets.gold import candidates as gen
from reco_assets.gold.hybrid import ContentIndex
from reco_assets.gold.ranking import locate

FEATURES = (
    "ease_recent", "ease", "ease_recent_rank", "ease_rank", "popularity", "popularity_rank", "trend", "trend_rank",
    "trend_year", "year_gap", "age_days", "content", "activity",
)
GENERATORS = ("ease_recent", "ease", "popular", "trending")
QUERY_BLOCK = 1024  # query rows whose EASE scores are dense at once: 1,024 × 4,000 × 4 bytes = 16 MB


class RankerConfig(dg.Config):
    """The ranker's candidates and its gradient-boosted trees; the defaults were tuned on ml-latest-small."""

    ease_l2: float = Field(default=200.0, gt=0, description="EASE's L2 regularisation")
    ease_items: int = Field(default=4000, ge=2, description="movies with the most users that EASE models (its dense "
                                                           "inverse is this squared × 8 bytes)")
    recency_half_life: float = Field(default=5.0, gt=0, description="recent EASE: a history interaction's weight "
                                                                    "halves every this many interactions back")
    candidates_per_generator: int = Field(default=50, ge=1, description="each generator's best unseen movies per "
                                                                        "user")
    trend_days: float = Field(default=30.0, gt=0, description="trending: interactions of this many days before the "
                                                              "user's cutoff")
    validation_fraction: float = Field(default=0.2, gt=0, lt=1, description="the ranker learns from each user's "
                                                                            "latest share of the training window")
    generators: list[str] = Field(default=list(GENERATORS), min_length=1,
                                  description=f"where candidates come from, of {', '.join(GENERATORS)}")
    features: list[str] = Field(default=list(FEATURES), min_length=1,
                                description=f"what the trees see, of {', '.join(FEATURES)}")
    trees: int = Field(default=300, ge=1, description="boosting iterations")
    learning_rate: float = Field(default=0.05, gt=0)
    max_leaf_nodes: int = Field(default=31, ge=2)
    seed: int = Field(default=0, description="random seed of the trees")

    @field_validator("generators", "features")
    @classmethod
    def _known(cls, names: list[str], info) -> list[str]:
        known = GENERATORS if info.field_name == "generators" else FEATURES
        if unknown := [name for name in names if name not in known]:
            raise ValueError(f"unknown {info.field_name} {unknown}; known: {list(known)}")
        return [name for name in known if name in names]


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


def _ranks_within(rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """1-based rank of each value within its row, highest first (NaN last); rows sorted ascending."""
    order = np.lexsort((-np.nan_to_num(values, nan=-np.inf), rows))
    starts = np.searchsorted(rows, rows[order], "left")
    ranks = np.empty(len(rows))
    ranks[order] = np.arange(len(rows)) - starts + 1
    return ranks


def _excluded(history: gen.History, queries: Queries) -> sparse.csr_matrix:
    lengths = np.fromiter(map(len, queries.exclude), np.int64, len(queries.exclude))
    ids = np.concatenate(queries.exclude) if len(queries.exclude) else np.empty(0, np.int64)
    items, known = gen.locate_items(history, ids)
    rows = np.repeat(np.arange(len(lengths)), lengths)[known]
    return sparse.csr_matrix((np.ones(len(items), np.float32), (rows, items)),
                             shape=(len(lengths), len(history.item_ids)))


def candidates(config: RankerConfig, history: gen.History, queries: Queries, years: pd.Series,
               content: ContentIndex) -> Candidates:
    """The union of the `generators`' best `candidates_per_generator` unseen movies of each query row, with their
    `features`.

    `years`: release year by movie id (NaN where unknown). Every feature is as of the row's `as_of` except the
    all-time popularity, which counts the whole `history` as the popularity baseline does.
    """
    n = config.candidates_per_generator
    n_rows, n_items = len(queries.users), len(history.item_ids)
    positions, known = locate(history.user_ids, queries.users)
    select = sparse.csr_matrix((np.ones(len(positions), np.float32), (np.flatnonzero(known), positions)),
                               shape=(n_rows, len(history.user_ids)))
    recency = history.recency(config.recency_half_life)
    binary, recent = select @ history.matrix(), select @ history.matrix(recency)
    excluded = _excluded(history, queries)
    ease = gen.fit_ease(history, config.ease_l2, config.ease_items)

    popularity = history.users_per_item()
    none = [np.empty(0, np.int64)] * n_rows
    popular = (gen.unseen_heads(np.argsort(-popularity, kind="stable"), excluded, np.arange(n_rows), n)
               if "popular" in config.generators else none)
    cutoff_days, day_of_row = np.unique(np.floor(queries.as_of / gen.DAY_SECONDS), return_inverse=True)
    lengths = np.zeros(len(cutoff_days), np.int64)
    np.maximum.at(lengths, day_of_row, np.diff(excluded.indptr) + n)
    days, day_items, counts = gen.daily_counts(history)
    trending_lists = gen.recent_popularity_lists(days, day_items, n_items, cutoff_days, config.trend_days, lengths,
                                                 counts)
    trending = ([gen.unseen_heads(trending_lists[day], excluded, [row], n)[0] for row, day in enumerate(day_of_row)]
                if "trending" in config.generators else none)
    generating = np.array([name in config.generators for name in ("ease_recent", "ease")])

    rows, items, ease_scores = [], [], []
    for start in range(0, n_rows, QUERY_BLOCK):
        block = np.arange(start, min(start + QUERY_BLOCK, n_rows))
        scored = np.stack([ease.scores(recent[block]), ease.scores(binary[block])])  # [2, rows, c]
        seen_rows, seen_columns = excluded[block][:, ease.columns].nonzero()
        scored[:, seen_rows, seen_columns] = -np.inf
        top = min(n, scored.shape[2])
        heads = np.argpartition(-scored, top - 1, axis=2)[:, :, :top] if top else np.empty((2, len(block), 0), int)
        finite = np.isfinite(np.take_along_axis(scored, heads, axis=2)) & generating[:, None, None]
        block_rows = [np.broadcast_to(block[:, None], heads.shape)[finite]]
        block_items = [ease.columns[heads[finite]]]
        for lists in (popular, trending):
            block_rows.append(np.repeat(block, [len(lists[row]) for row in block]))
            block_items.append(np.concatenate([lists[row] for row in block]).astype(np.int64))
        keys = np.unique((np.concatenate(block_rows).astype(np.int64) << 32) + np.concatenate(block_items))
        pair_rows, pair_items = keys >> 32, keys & 0xFFFFFFFF
        column, in_model = locate(ease.columns, pair_items)
        values = np.full((2, len(keys)), np.nan, np.float32)
        values[:, in_model] = scored[:, pair_rows[in_model] - start, column]
        rows.append(pair_rows)
        items.append(pair_items)
        ease_scores.append(values)
    row, item = np.concatenate(rows), np.concatenate(items)
    ease_recent, ease_all = np.concatenate(ease_scores, axis=1) if ease_scores else np.empty((2, 0))

    as_of = queries.as_of[row]
    trend = gen.window_counts(history, item, as_of, config.trend_days * gen.DAY_SECONDS)
    trend_year = gen.window_counts(history, item, as_of, 365 * gen.DAY_SECONDS)
    movie_id = history.item_ids[item]
    year = years.reindex(movie_id).to_numpy(np.float64)
    cutoff_year = pd.to_datetime(as_of, unit="s", utc=True).year.to_numpy(np.float64)
    first = gen.first_seen(history)[item]
    activity = np.asarray(binary.sum(axis=1)).ravel()
    similarities = content.similarities(
        [history.item_ids[recent.indices[recent.indptr[r]:recent.indptr[r + 1]]] for r in range(n_rows)],
        [recent.data[recent.indptr[r]:recent.indptr[r + 1]] for r in range(n_rows)],
        np.split(movie_id, np.searchsorted(row, np.arange(1, n_rows))) if n_rows else [],
    )
    columns = {
        "ease_recent": ease_recent, "ease": ease_all,
        "ease_recent_rank": _ranks_within(row, ease_recent), "ease_rank": _ranks_within(row, ease_all),
        "popularity": np.log1p(popularity[item]), "popularity_rank": _ranks_within(row, popularity[item]),
        "trend": np.log1p(trend), "trend_rank": _ranks_within(row, trend), "trend_year": np.log1p(trend_year),
        "year_gap": cutoff_year - year,
        "age_days": np.maximum(as_of - first, 0.0) / gen.DAY_SECONDS,
        "content": np.concatenate(similarities) if n_rows else np.empty(0),
        "activity": np.log1p(activity[row]),
    }
    return Candidates(row, movie_id, np.stack([columns[name] for name in config.features], axis=1).astype(np.float32))


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


def top_k(model, scored: Candidates, n_rows: int, k: int) -> np.ndarray:
    """[rows, k] movie ids, the model's best first (-1 where a row has fewer candidates)."""
    probability = model.predict_proba(scored.features)[:, 1] if len(scored.row) else np.empty(0)
    order = np.lexsort((-probability, scored.row))
    rows = scored.row[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows, "left")
    kept = rank < k
    recommended = np.full((n_rows, k), -1, np.int64)
    recommended[rows[kept], rank[kept]] = scored.movie_id[order][kept]
    return recommended


def as_of_seconds(moment: datetime) -> float:
    return moment.astimezone(UTC).timestamp()
