"""The hybrid's content cosine: one user at a time (the code before 2026-11-23 19:50 UTC, kept here) against all the
users of a block at once (`ContentIndex.similarities`), in one process, on the bundled sample's movies and tags.

Synthetic users: histories of 20–300 movies (ratings as weights), 100 candidates each, as the hybrid scores them.
The two must agree (float32 rounding aside), or the script fails.

    .venv/bin/python bench/hybrid_content.py [--users 20000] [--block 512] [--repeat 3]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.preprocessing import normalize

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reco_assets.bronze.movielens import BUNDLED_SAMPLE  # noqa: E402
from reco_assets.gold.content import ContentIndex  # noqa: E402
from reco_assets.silver.transforms import NO_GENRES  # noqa: E402


def one_user(index: ContentIndex, history: np.ndarray, weights: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """The per-user cosine as `ContentIndex.similarity` computed it before."""
    rows, known = index.positions(history)
    profile = normalize(sparse.csr_matrix(np.asarray(weights, np.float32)[known]) @ index.vectors[rows])
    scores = np.zeros(len(candidates), np.float32)
    candidate_rows, candidate_known = index.positions(candidates)
    scores[candidate_known] = (index.vectors[candidate_rows] @ profile.T).toarray().ravel()
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--block", type=int, default=512,
                        help="users per call (top_k used 512 when the figures were measured, 128 since 2026-11-29)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    movies = pd.read_csv(BUNDLED_SAMPLE / "movies.csv")
    movies = pd.DataFrame({"movie_id": movies["movieId"],
                           "genres": [[] if g == NO_GENRES else g.split("|") for g in movies["genres"]]})
    tags = pd.read_csv(BUNDLED_SAMPLE / "tags.csv").rename(columns={"movieId": "movie_id"})
    index = ContentIndex.from_movies(movies, tags)
    rng = np.random.default_rng(7)
    ids = movies["movie_id"].to_numpy()
    histories = [rng.choice(ids, rng.integers(20, 300), replace=False) for _ in range(args.users)]
    weights = [rng.integers(1, 11, len(h)) / 2.0 for h in histories]
    candidates = [rng.choice(ids, 100, replace=False) for _ in range(args.users)]

    per_user, per_block = [], []
    for _ in range(args.repeat):
        started = time.perf_counter()
        old = [one_user(index, h, w, c) for h, w, c in zip(histories, weights, candidates, strict=True)]
        per_user.append(time.perf_counter() - started)
        started = time.perf_counter()
        new = [s for at in range(0, args.users, args.block) for s in index.similarities(
            histories[at:at + args.block], weights[at:at + args.block], candidates[at:at + args.block])]
        per_block.append(time.perf_counter() - started)
    difference = max(float(np.max(np.abs(a - b))) for a, b in zip(old, new, strict=True))
    print(f"{args.users:,} users × 100 candidates, {len(ids):,} movies, best of {args.repeat}: one user at a time "
          f"{min(per_user):.2f} s, {args.block} users at a time {min(per_block):.2f} s → "
          f"**{min(per_user) / min(per_block):.1f}×**; largest difference {difference:.1e}")
    if difference > 1e-5:
        sys.exit(1)


if __name__ == "__main__":
    main()
