"""Pure ranking logic: blocked top-K with exclusions, and the metrics."""

import math

import numpy as np
import pytest

from reco_assets.gold.ranking import ItemIndex, is_in, ranking_metrics, top_k


def padded(arrays, fill=-1):
    """Lists as the rows of one matrix, filled with `fill` (what ranking_metrics takes)."""
    width = max(map(len, arrays), default=0)
    return np.array([list(a) + [fill] * (width - len(a)) for a in arrays], np.int64).reshape(len(arrays), width)


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


def metrics_of(recommended: list[int], relevant: list[int], k: int) -> dict[str, float]:
    return {name: float(values[0]) for name, values in ranking_metrics(padded([recommended]), [relevant], k).items()}


def test_metrics_perfect_and_empty():
    assert metrics_of([1, 2], [1, 2], k=2) == {"precision": 1.0, "recall": 1.0, "ndcg": 1.0, "map": 1.0}
    assert metrics_of([3, 4], [1, 2], k=2) == {"precision": 0.0, "recall": 0.0, "ndcg": 0.0, "map": 0.0}


def test_metrics_by_hand():
    m = metrics_of([5, 1, 6, 2], [1, 2, 3], k=4)
    assert m["precision"] == pytest.approx(2 / 4)
    assert m["recall"] == pytest.approx(2 / 3)
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["ndcg"] == pytest.approx(dcg / idcg)
    assert m["map"] == pytest.approx((1 / 2 + 2 / 4) / 3)


def test_metrics_count_only_the_first_k_and_short_lists():
    # a hit beyond k does not count; a list shorter than k counts its missing places as misses
    assert metrics_of([7, 8, 1], [1], k=2)["precision"] == 0.0
    short = metrics_of([1], [1, 2], k=3)
    assert short["precision"] == pytest.approx(1 / 3)
    assert short["ndcg"] == pytest.approx(1 / (1 + 1 / math.log2(3)))


def reference_metrics(recommended: list[int], relevant: set[int], k: int) -> dict[str, float]:
    """One user at a time, the textbook way."""
    hits = [1.0 if item in relevant else 0.0 for item in recommended[:k]]
    dcg = sum(h / math.log2(i + 2) for i, h in enumerate(hits))
    ideal = sum(1 / math.log2(i + 2) for i in range(min(len(relevant), k)))
    precisions = [sum(hits[: i + 1]) / (i + 1) for i, h in enumerate(hits) if h]
    return {"precision": sum(hits) / k, "recall": sum(hits) / len(relevant), "ndcg": dcg / ideal,
            "map": sum(precisions) / min(len(relevant), k)}


def test_metrics_of_many_users_equal_each_users_own():
    rng = np.random.default_rng(3)
    recommended, relevant = [], []
    for _ in range(300):
        recommended.append(rng.choice(60, size=rng.integers(0, 15), replace=False) + 1)
        relevant.append(rng.choice(60, size=rng.integers(1, 20), replace=False) + 1)
    got = ranking_metrics(padded(recommended), relevant, k=10)
    for user, (recs, rel) in enumerate(zip(recommended, relevant, strict=True)):
        expected = reference_metrics(recs.tolist(), set(rel.tolist()), 10)
        assert {name: float(values[user]) for name, values in got.items()} == pytest.approx(expected)
    assert got["precision"].max() > 0 and got["precision"].min() == 0  # the fixture has hits and misses


def test_metrics_need_relevant_items():
    with pytest.raises(ValueError):
        ranking_metrics(padded([[1]]), [[]], k=1)


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


def test_is_in_agrees_with_numpy_on_keys_present_absent_and_repeated():
    rng = np.random.default_rng(5)
    members = rng.integers(0, 1 << 40, 3000)
    keys = np.concatenate([members[:500], rng.integers(0, 1 << 40, 500), members[:10]])
    found = is_in(keys, members)
    assert np.array_equal(found, np.isin(keys, members)) and found[:500].all() and found[-10:].all()
    assert not is_in(keys, []).any() and is_in([], members).shape == (0,)
