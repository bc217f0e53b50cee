"""Pure ranking logic: blocked top-K scoring with exclusions, and top-K metrics."""

from collections.abc import Iterator, Sequence

import numpy as np

USER_BLOCK = 512


class ItemIndex:
    """Candidate items: sorted ids and their vectors (one row per item)."""

    def __init__(self, ids: np.ndarray, vectors: np.ndarray):
        order = np.argsort(ids, kind="stable")
        self.ids = np.asarray(ids, dtype=np.int64)[order]
        self.vectors = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32)[order])

    def positions(self, ids: Sequence[int]) -> np.ndarray:
        """Positions of the given ids among the candidates; ids that are not candidates are left out."""
        ids = np.asarray(ids, dtype=np.int64)
        pos = np.searchsorted(self.ids, ids)
        pos[pos == len(self.ids)] = 0
        return pos[self.ids[pos] == ids] if len(self.ids) else pos[:0]


def top_k(
    index: ItemIndex,
    user_vectors: np.ndarray,
    exclude: Sequence[Sequence[int]],
    k: int,
    block: int = USER_BLOCK,
) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
    """Best `k` candidates for each user by dot product, never one of the user's excluded ids.

    Yields, block by block, (rows of the block, item ids [n, k'], scores [n, k']) in descending score
    order, where k' = min(k, candidates). Scores of excluded items are -inf and never returned as long
    as enough candidates remain; callers drop any -inf left at the tail.
    """
    user_vectors = np.asarray(user_vectors, dtype=np.float32)
    k_eff = min(k, len(index.ids))
    for start in range(0, len(user_vectors), block):
        rows = slice(start, min(start + block, len(user_vectors)))
        scores = user_vectors[rows] @ index.vectors.T
        for i, seen in enumerate(exclude[rows]):
            if len(seen):
                scores[i, index.positions(seen)] = -np.inf
        if k_eff == 0:
            yield rows, np.empty((scores.shape[0], 0), np.int64), np.empty((scores.shape[0], 0), np.float32)
            continue
        part = np.argpartition(-scores, k_eff - 1, axis=1)[:, :k_eff]
        part_scores = np.take_along_axis(scores, part, axis=1)
        order = np.argsort(-part_scores, axis=1, kind="stable")
        best = np.take_along_axis(part, order, axis=1)
        yield rows, index.ids[best], np.take_along_axis(part_scores, order, axis=1)


def ranking_metrics(recommended: Sequence[int], relevant: set[int], k: int) -> dict[str, float]:
    """precision, recall, nDCG and average precision at k with binary relevance."""
    top = list(recommended)[:k]
    if not relevant:
        raise ValueError("ranking metrics need at least one relevant item")
    hits = [1.0 if item in relevant else 0.0 for item in top]
    n_hits = sum(hits)
    dcg = sum(h / np.log2(i + 2) for i, h in enumerate(hits))
    ideal = sum(1.0 / np.log2(i + 2) for i in range(min(len(relevant), k)))
    precisions = [sum(hits[: i + 1]) / (i + 1) for i, h in enumerate(hits) if h]
    return {
        "precision": n_hits / k,
        "recall": n_hits / len(relevant),
        "ndcg": dcg / ideal,
        "map": sum(precisions) / min(len(relevant), k),
    }
