"""Pure ranking logic: blocked top-K with exclusions, and the metrics."""

import math

import numpy as np
import pytest

from reco_assets.gold.ranking import ItemIndex, ranking_metrics, top_k


def collect(index, users, exclude, k, block=2):
    ids, scores = [], []
    for _, block_ids, block_scores in top_k(index, users, exclude, k, block=block):
        ids.extend(block_ids.tolist())
        scores.extend(block_scores.tolist())
    return ids, scores


def test_top_k_orders_by_score_and_excludes_seen():
    index = ItemIndex(np.array([30, 10, 20, 40]), np.array([[3.0], [1.0], [2.0], [4.0]]))
    ids, scores = collect(index, np.array([[1.0], [-1.0], [1.0]]), [[40], [], [40, 30, 999]], k=2)
    assert ids == [[30, 20], [10, 20], [20, 10]]
    assert scores[0] == [3.0, 2.0]


def test_top_k_matches_brute_force_across_blocks():
    rng = np.random.default_rng(0)
    items, users = rng.normal(size=(50, 8)), rng.normal(size=(7, 8))
    index = ItemIndex(np.arange(100, 150), items)
    exclude = [rng.choice(np.arange(100, 150), 5, replace=False) for _ in range(7)]
    ids, _ = collect(index, users, exclude, k=5, block=3)
    for u in range(7):
        scores = items @ users[u]
        ranked = [100 + i for i in np.argsort(-scores) if 100 + i not in set(exclude[u])]
        assert ids[u] == ranked[:5]


def test_top_k_when_exclusions_leave_fewer_than_k():
    index = ItemIndex(np.array([1, 2]), np.array([[1.0], [2.0]]))
    ids, scores = collect(index, np.array([[1.0]]), [[2]], k=5)
    assert ids[0][0] == 1 and len(ids[0]) == 2
    assert math.isinf(scores[0][1]), "the excluded item is marked -inf for the caller to drop"


def test_metrics_perfect_and_empty():
    assert ranking_metrics([1, 2], {1, 2}, k=2) == {"precision": 1.0, "recall": 1.0, "ndcg": 1.0, "map": 1.0}
    assert ranking_metrics([3, 4], {1, 2}, k=2) == {"precision": 0.0, "recall": 0.0, "ndcg": 0.0, "map": 0.0}


def test_metrics_by_hand():
    m = ranking_metrics([5, 1, 6, 2], {1, 2, 3}, k=4)
    assert m["precision"] == pytest.approx(2 / 4)
    assert m["recall"] == pytest.approx(2 / 3)
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["ndcg"] == pytest.approx(dcg / idcg)
    assert m["map"] == pytest.approx((1 / 2 + 2 / 4) / 3)


def test_metrics_need_relevant_items():
    with pytest.raises(ValueError):
        ranking_metrics([1], set(), k=1)


def reference_top_k(items: np.ndarray, ids: np.ndarray, user: np.ndarray, excluded: set[int], k: int):
    """Sort every candidate: by score descending, equal scores by ascending id, excluded ones last at -inf."""
    scores = (items.astype(np.float32) @ user.astype(np.float32)).astype(np.float64)
    scores[[i in excluded for i in ids]] = -np.inf
    order = sorted(range(len(ids)), key=lambda i: (-scores[i], ids[i]))[:k]
    return [int(ids[i]) for i in order], [float(scores[i]) for i in order]


@pytest.mark.parametrize("k", [1, 3, 10, 40])
def test_top_k_is_exact_with_ties_and_any_probes(k):
    """Small integer vectors make many equal scores; several dimensions make the longest vectors poor probes."""
    rng = np.random.default_rng(k)
    ids = rng.permutation(np.arange(1, 301)) * 3
    items = rng.integers(-2, 3, size=(300, 4)).astype(np.float32)
    users = rng.integers(-2, 3, size=(37, 4)).astype(np.float32)
    exclude = [rng.choice(ids, rng.integers(0, 280), replace=False) for _ in range(37)]
    index = ItemIndex(ids, items)
    got_ids, got_scores = collect(index, users, exclude, k, block=8)
    for u in range(37):
        want_ids, want_scores = reference_top_k(items, ids, users[u], set(exclude[u].tolist()), k)
        assert got_ids[u] == want_ids
        assert got_scores[u] == want_scores


def test_top_k_ranks_nan_scores_last():
    index = ItemIndex(np.array([1, 2, 3]), np.array([[1.0], [np.nan], [3.0]]))
    ids, scores = collect(index, np.array([[1.0]]), [[]], k=3)
    assert ids[0][:2] == [3, 1] and math.isinf(scores[0][2])


def test_top_k_is_exact_when_the_probes_predict_nothing():
    """Unit vectors (cosines) are all equally long, so the probes are arbitrary: later blocks bound on whole rows."""
    rng = np.random.default_rng(5)
    items = rng.normal(size=(2000, 6))
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    ids = np.arange(1000, 3000)
    index = ItemIndex(ids, items)
    queries = items[:50]
    exclude = [np.array([i]) for i in ids[:50]]
    got_ids, got_scores = collect(index, queries, exclude, k=5, block=4)
    for u in range(50):
        want_ids, want_scores = reference_top_k(items, ids, queries[u], {int(ids[u])}, 5)
        assert got_ids[u] == want_ids
        np.testing.assert_allclose(got_scores[u], want_scores, rtol=1e-6)
