"""Pure ranking logic: blocked top-K scoring with exclusions, and top-K metrics."""

from collections.abc import Iterator, Sequence

import numpy as np

USER_BLOCK = 128  # users scored at once: their scores stay in cache (512 were 2x slower per user)
# top_k bounds each user's k-th best score from below by their k-th best among k × PROBES_PER_ITEM probe items
# (those with the longest vectors, which dot products favour); only items at or above that bound are ranked.
# When more than k × POOR_PROBES items pass it for the median user of a block (cosines of unit vectors, say),
# the probes predict nothing, and the remaining blocks take the exact bound from the whole row instead.
PROBES_PER_ITEM = 32
POOR_PROBES = 8


def locate(sorted_ids: np.ndarray, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(positions in `sorted_ids` of the ids found there, mask of the found ones among `ids`)."""
    ids = np.asarray(ids, dtype=np.int64)
    if not len(sorted_ids):
        return ids[:0], np.zeros(len(ids), bool)
    pos = np.searchsorted(sorted_ids, ids).clip(max=len(sorted_ids) - 1)
    known = sorted_ids[pos] == ids
    return pos[known], known


def is_in(keys: Sequence[int], members: Sequence[int]) -> np.ndarray:
    """`np.isin` for int64 keys (such as `pair_keys`) by a sort of `members` and a binary search: several times
    faster than np.isin on millions of members (bench/ranker_steps.py)."""
    return locate(np.sort(np.asarray(members, np.int64)), keys)[1]


class ItemIndex:
    """Candidate items: ids and their vectors (one row per item), longest vector first (equal lengths by id)."""

    def __init__(self, ids: np.ndarray, vectors: np.ndarray):
        ids = np.asarray(ids, dtype=np.int64)
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(ids), -1)
        order = np.lexsort((ids, -np.linalg.norm(vectors, axis=1)))
        self.ids = ids[order]
        self.vectors = np.ascontiguousarray(vectors[order])
        self._by_id = np.argsort(self.ids, kind="stable")
        self._sorted_ids = self.ids[self._by_id]

    def positions(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(positions of the ids that are candidates, mask of those ids among `ids`)."""
        found, known = locate(self._sorted_ids, ids)
        return self._by_id[found], known


def kept_ranks(kept: np.ndarray) -> np.ndarray:
    """The 1-based column of every True entry of a [rows, width] mask, row by row (ranks of the kept items)."""
    return np.broadcast_to(np.arange(1, kept.shape[1] + 1), kept.shape)[kept]


def exclude_seen(scores: np.ndarray, index: ItemIndex, exclude: Sequence[Sequence[int]]) -> None:
    """Set the scores [users, items] of each user's excluded ids to -inf (ids that are no candidates are ignored)."""
    lengths = np.fromiter((len(seen) for seen in exclude), dtype=np.int64, count=len(exclude))
    if not lengths.sum():
        return
    columns, known = index.positions(np.concatenate([np.asarray(seen, dtype=np.int64) for seen in exclude]))
    scores[np.repeat(np.arange(len(exclude)), lengths)[known], columns] = -np.inf


def _at_or_above_probe_bound(scores: np.ndarray, probes: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    bound = np.partition(scores[:, :probes], probes - k, axis=1)[:, probes - k]
    return np.divmod(np.flatnonzero(scores >= bound[:, None]), scores.shape[1])  # 6x faster than 2-D nonzero


def _best_k(scores: np.ndarray, ids: np.ndarray, k: int, probes: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(ids [n, k], scores [n, k]) of each row's k best scores (columns: `ids`), best first, equal scores by id;
    and the median number of scores sorted per row.

    Exact: a row's k-th best among its first `probes` columns is a lower bound of its k-th best overall, so only
    the scores at or above it (a few per row when the first columns are likely winners) are sorted.
    """
    n = scores.shape[0]
    rows, columns = _at_or_above_probe_bound(scores, probes, k)
    counts = np.bincount(rows, minlength=n)
    if (counts < k).any():  # only NaN scores fail every comparison: rank them below every number
        np.nan_to_num(scores, copy=False, nan=-np.inf)
        rows, columns = _at_or_above_probe_bound(scores, probes, k)
        counts = np.bincount(rows, minlength=n)
    values = scores[rows, columns]
    order = np.lexsort((ids[columns], -values, rows))
    pick = order[(np.cumsum(counts) - counts)[:, None] + np.arange(k)]
    return ids[columns[pick]], values[pick], float(np.median(counts))


def top_k(
    index: ItemIndex,
    user_vectors: np.ndarray,
    exclude: Sequence[Sequence[int]],
    k: int,
    block: int = USER_BLOCK,
) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
    """Best `k` candidates for each user by dot product, never one of the user's excluded ids.

    Yields, block by block, (rows of the block, item ids [n, k'], scores [n, k']) in descending score
    order (equal scores by ascending id), where k' = min(k, candidates). Scores of excluded items are -inf
    and never returned as long as enough candidates remain; callers drop any -inf left at the tail.
    """
    user_vectors = np.asarray(user_vectors, dtype=np.float32)
    k_eff = min(k, len(index.ids))
    probes = min(len(index.ids), k_eff * PROBES_PER_ITEM)
    for start in range(0, len(user_vectors), block):
        rows = slice(start, min(start + block, len(user_vectors)))
        if k_eff == 0:
            n = rows.stop - rows.start
            yield rows, np.empty((n, 0), np.int64), np.empty((n, 0), np.float32)
            continue
        scores = user_vectors[rows] @ index.vectors.T
        exclude_seen(scores, index, exclude[rows])
        best_ids, best_scores, sorted_per_row = _best_k(scores, index.ids, k_eff, probes)
        if sorted_per_row > POOR_PROBES * k_eff:
            probes = len(index.ids)
        yield rows, best_ids, best_scores


def ranking_metrics(recommended: np.ndarray, relevant: Sequence[Sequence[int]], k: int) -> dict[str, np.ndarray]:
    """precision, recall, nDCG and average precision at k with binary relevance, one value per user.

    `recommended`: [users, width] ids best first, negative where a user has fewer; `relevant`: each user's
    relevant ids (at least one, no repeats).
    """
    top = np.asarray(recommended, np.int64)[:, :k]
    top = np.pad(top, ((0, 0), (0, k - top.shape[1])), constant_values=-1)
    lengths = np.fromiter(map(len, relevant), np.int64, len(relevant))
    if not len(top):
        return {name: np.empty(0) for name in ("precision", "recall", "ndcg", "map")}
    if (lengths == 0).any():
        raise ValueError("ranking metrics need at least one relevant item per user")
    user_bits = np.int64(32)  # ids are int32: (user row, id) packs into one int64 key
    users = np.arange(len(top), dtype=np.int64)[:, None] << user_bits
    relevant_keys = np.repeat(users[:, 0], lengths) + np.concatenate([np.asarray(r, np.int64) for r in relevant])
    hits = (np.isin(top + users, relevant_keys) & (top >= 0)).astype(np.float64)
    discounts = 1.0 / np.log2(np.arange(k) + 2.0)
    n_ideal = np.minimum(lengths, k)
    precision_at = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    return {
        "precision": hits.sum(axis=1) / k,
        "recall": hits.sum(axis=1) / lengths,
        "ndcg": hits @ discounts / np.cumsum(discounts)[n_ideal - 1],
        "map": (precision_at * hits).sum(axis=1) / n_ideal,
    }
