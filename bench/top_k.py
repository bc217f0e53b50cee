"""Top-K scoring: the full argpartition of every user's scores (the code before 2026-11-29, kept here) against
`ranking.top_k`, which ranks only the scores at or above a bound taken from probe items. Same process, same
factors, same exclusions; the two must return the same scores (and the same ids wherever scores differ), or
the script fails.

Factors come from an ALS model that the batch graph saved (`--data-dir` of a `bench/batch_graph.py` run, or
`./data` after `make materialize`), with every user's rated movies excluded. Four cases, as the gold assets
score them: recommendations (k 20), the evaluation (k 10), similar movies (cosine of the item factors, k 20),
and the popularity baseline (one dimension, k 10). (Until 2026-12-01 the hybrid also took ALS's top 100.)

    .venv/bin/python bench/top_k.py --data-dir /tmp/bench/25M [--users 50000] [--repeat 3]
"""

import argparse
import sys
import time
from pathlib import Path

import duckdb
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reco_assets.gold.ranking import ItemIndex, top_k  # noqa: E402
from reco_assets.lakehouse import LakehouseResource  # noqa: E402


def argpartition_top_k(index: ItemIndex, user_vectors: np.ndarray, exclude, k: int, block: int = 512):
    """`ranking.top_k` as it was: blocks of 512 users, -inf for excluded ids, then argpartition and sort of every
    full row."""
    user_vectors = np.asarray(user_vectors, dtype=np.float32)
    k_eff = min(k, len(index.ids))
    for start in range(0, len(user_vectors), block):
        rows = slice(start, min(start + block, len(user_vectors)))
        scores = user_vectors[rows] @ index.vectors.T
        for i, seen in enumerate(exclude[rows]):
            if len(seen):
                scores[i, index.positions(seen)[0]] = -np.inf
        part = np.argpartition(-scores, k_eff - 1, axis=1)[:, :k_eff]
        part_scores = np.take_along_axis(scores, part, axis=1)
        order = np.argsort(-part_scores, axis=1, kind="stable")
        best = np.take_along_axis(part, order, axis=1)
        yield rows, index.ids[best], np.take_along_axis(part_scores, order, axis=1)


def factors(lakehouse: LakehouseResource, side: str) -> tuple[np.ndarray, np.ndarray]:
    """The served model's user or item factors (gold.als_factors)."""
    table = duckdb.sql(f"SELECT id, features FROM {lakehouse.table('gold.als_factors').duckdb()} "
                       f"WHERE side = '{side}'").arrow()
    ids = table.column("id").to_numpy()
    return ids, np.vstack(table.column("features").to_numpy(zero_copy_only=False)).astype(np.float32)


def run(function, index, vectors, exclude, k) -> tuple[float, np.ndarray, np.ndarray]:
    started = time.perf_counter()
    ids, scores = [], []
    for _, block_ids, block_scores in function(index, vectors, exclude, k):
        ids.append(block_ids)
        scores.append(block_scores)
    return time.perf_counter() - started, np.concatenate(ids), np.concatenate(scores)


def same_ids_above_ties(old_ids: np.ndarray, new_ids: np.ndarray, scores: np.ndarray) -> bool:
    """Whether each row holds the same ids above its last score (which may tie with items left out of the list),
    equal scores in any order."""
    for row_old, row_new, row_scores in zip(old_ids, new_ids, scores, strict=True):
        above = row_scores > row_scores[-1]
        kept = -row_scores[above]
        if sorted(zip(kept, row_old[above], strict=True)) != sorted(zip(kept, row_new[above], strict=True)):
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="data", help="RECO_DATA_DIR of a materialized batch graph")
    parser.add_argument("--users", type=int, default=50_000, help="users scored per case (the first ones by id)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    lakehouse = LakehouseResource(data_dir=args.data_dir)
    ratings = lakehouse.table("silver.ratings").duckdb()
    user_ids, user_vectors = factors(lakehouse, "user")
    item_ids, item_vectors = factors(lakehouse, "item")
    order = np.argsort(user_ids)[: args.users]
    user_ids, user_vectors = user_ids[order], user_vectors[order]
    rated = duckdb.sql(
        f"SELECT user_id, list(movie_id) AS movies FROM {ratings} "
        f"WHERE user_id <= {int(user_ids.max())} GROUP BY user_id"
    ).df().set_index("user_id")["movies"]
    exclude = [np.asarray(rated.get(u, []), dtype=np.int64) for u in user_ids]
    counts = duckdb.sql(
        f"SELECT movie_id, count(*) FROM {ratings} GROUP BY movie_id"
    ).fetchnumpy()
    unit = item_vectors / np.maximum(np.linalg.norm(item_vectors, axis=1, keepdims=True), 1e-12)
    cases = {
        "recommendations (k 20)": (ItemIndex(item_ids, item_vectors), user_vectors, exclude, 20),
        "evaluation (k 10)": (ItemIndex(item_ids, item_vectors), user_vectors, exclude, 10),
        "similar movies (k 20)": (ItemIndex(item_ids, unit), unit, [np.array([i]) for i in item_ids], 20),
        "popularity (k 10)": (
            ItemIndex(counts["movie_id"], counts["count_star()"].astype(np.float32)[:, None]),
            np.ones((len(user_ids), 1), np.float32), exclude, 10,
        ),
    }
    print(f"{len(user_ids):,} users, {len(item_ids):,} items, rank {item_vectors.shape[1]}, "
          f"best of {args.repeat}, one process")
    print("| case | argpartition | probe bound | speed-up |")
    print("|---|---:|---:|---:|")
    failed = False
    for name, (index, vectors, excluded, k) in cases.items():
        old_times, new_times = [], []
        for _ in range(args.repeat):
            seconds, old_ids, old_scores = run(argpartition_top_k, index, vectors, excluded, k)
            old_times.append(seconds)
            seconds, new_ids, new_scores = run(top_k, index, vectors, excluded, k)
            new_times.append(seconds)
        same = np.array_equal(old_scores, new_scores) and same_ids_above_ties(old_ids, new_ids, new_scores)
        failed |= not same
        print(f"| {name} | {min(old_times):.2f} s | {min(new_times):.2f} s | "
              f"**{min(old_times) / min(new_times):.1f}×**{'' if same else ' DIFFERENT RESULTS'} |", flush=True)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
