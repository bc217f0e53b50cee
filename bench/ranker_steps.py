"""The ranker's driver-side steps on a training window of ml-25m's size, without Spark: where its time goes.

A synthetic window (Zipf-like movie popularity, log-normal user activity; one rating per user and movie) goes
through what `ranker.learn` and the served ranking do, step by step: the validation hold-out, the history, the
generators (recency weights, EASE, the trending counts), the queries, the candidates and features of
`--users` users, the trees' fit on them and their prediction; then the served ranking of 4 passes of users, one
pass after the other and `RANKING_THREADS` at a time. The hold-out, the test of pairs against the
held-out ones and recency's order also run as they did before (pandas' multi-column `sort_values`, `np.isin`,
`np.lexsort`), alternating with today's way, best of 2 each: the baselines of the ratios printed, and the results
must be the same.

    .venv/bin/python bench/ranker_steps.py [--interactions 20000000] [--users 20000]
                                           [--out bench/results/ranker_steps.md]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from report import write_results  # noqa: E402

from reco_assets.gold import candidates as gen  # noqa: E402
from reco_assets.gold import ranker  # noqa: E402
from reco_assets.gold.content import ContentIndex  # noqa: E402
from reco_assets.gold.ranking import is_in  # noqa: E402


def synthetic_window(interactions: int, users: int, movies: int, seed: int = 0) -> gen.TrainingWindow:
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, movies + 1) ** 0.95
    activity = rng.lognormal(4.0, 1.0, users)
    rated = pd.DataFrame({
        "user_id": rng.choice(users, interactions, p=activity / activity.sum()),
        "movie_id": rng.choice(movies, interactions, p=popularity / popularity.sum()),
        "at": np.floor(1.5e9 + rng.uniform(0, 3e8, interactions)),  # whole seconds, as MovieLens: ties in time
    }).drop_duplicates(["user_id", "movie_id"], ignore_index=True)
    # The stream's pairs: 1M, half of them on rated pairs (the hold-out drops those it holds out).
    on_rated = rated.sample(n=min(500_000, len(rated)), random_state=seed)
    streamed = pd.concat([on_rated[["user_id", "movie_id"]], pd.DataFrame({
        "user_id": rng.choice(users, 500_000), "movie_id": rng.choice(movies, 500_000)})], ignore_index=True)
    streamed = streamed.drop_duplicates(ignore_index=True).assign(at=1.8e9, seen=True)
    return gen.TrainingWindow(rated, streamed)


def peak_rss() -> float:
    """This process's peak RSS (VmHWM) in GiB."""
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 2**20


def reset_peak_rss() -> float:
    """Reset the peak RSS to the current RSS (Linux's clear_refs 5); returns it, in GiB."""
    Path("/proc/self/clear_refs").write_text("5")
    return peak_rss()


PAIRS, ORDER = "pairs among the held-out ones", "recency's order"
SERVED = "the served ranking's passes"
SERVED_PASSES = 4


def holdout_before(window: gen.TrainingWindow, fraction: float) -> tuple[gen.TrainingWindow, pd.DataFrame]:
    """`TrainingWindow.holdout` as it was before (commit 8991169): pandas' multi-column sort and `np.isin`."""
    rated = window.rated.sort_values(["user_id", "at", "movie_id"], ascending=[True, False, False], kind="stable")
    users = rated["user_id"].to_numpy(np.int64)
    first = np.searchsorted(users, users, "left")
    count = np.searchsorted(users, users, "right") - first
    held = (count >= 2) & (np.arange(len(users)) - first < np.maximum(1, np.floor(count * fraction)))
    held_pairs = gen.pair_keys(rated["user_id"][held], rated["movie_id"][held])
    streamed = window.streamed[~np.isin(gen.pair_keys(window.streamed["user_id"], window.streamed["movie_id"]),
                                        held_pairs)]
    return gen.TrainingWindow(rated[~held], streamed), rated[held]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interactions", type=int, default=20_000_000, help="drawn before one per pair is kept")
    parser.add_argument("--people", type=int, default=162_000, help="users in the window")
    parser.add_argument("--movies", type=int, default=60_000)
    parser.add_argument("--users", type=int, default=20_000, help="users whose candidates are built and ranked")
    parser.add_argument("--candidates-per-generator", type=int, default=ranker.RankerConfig().candidates_per_generator)
    parser.add_argument("--trees", type=int, default=ranker.RankerConfig().trees)
    parser.add_argument("--out", type=Path, help="also write the results as Markdown here")
    args = parser.parse_args()

    window = synthetic_window(args.interactions, args.people, args.movies)
    config = ranker.RankerConfig(candidates_per_generator=args.candidates_per_generator, trees=args.trees)
    times: dict[str, float] = {}

    def timed(label: str, fn):
        started = time.perf_counter()
        result = fn()
        times[label] = min(times.get(label, np.inf), time.perf_counter() - started)
        print(f"{label}: {time.perf_counter() - started:.1f} s", flush=True)
        return result

    def before_and_now(label: str, before, now, same) -> None:
        """Both ways twice, alternating, best of each; `same(before's result, now's)` must hold."""
        for round_ in range(2):
            results = {}
            for way, fn in ((("as before", before), ("now", now)) if round_ == 0 else
                            (("now", now), ("as before", before))):
                results[way] = timed(f"{label}, {way}", fn)
            if not same(results["as before"], results["now"]):
                raise SystemExit(f"{label}: the result differs from the one before")

    def same_holdout(before, now) -> bool:
        return (before[1].equals(now[1]) and before[0].rated.equals(now[0].rated)
                and before[0].streamed.equals(now[0].streamed))

    before_and_now("hold-out", lambda: holdout_before(window, config.validation_fraction),
                   lambda: window.holdout(config.validation_fraction), same_holdout)
    kept, held = window.holdout(config.validation_fraction)
    held_pairs = gen.pair_keys(held["user_id"], held["movie_id"])
    tagged = gen.pair_keys(window.streamed["user_id"], window.streamed["movie_id"])  # 1M pairs, as tags are
    before_and_now(PAIRS, lambda: np.isin(tagged, held_pairs),
                   lambda: is_in(tagged, held_pairs), np.array_equal)
    history, seen = timed("history", kept.history)
    before_and_now(ORDER,
                   lambda: np.lexsort((-history.item, -history.at, history.user)),
                   lambda: gen.latest_first(history.user, history.at, history.item), np.array_equal)
    timed("recency weights", lambda: history.recency(config.recency_half_life))
    timed("EASE fit", lambda: gen.fit_ease(history, config.ease_l2, config.ease_items))
    generators = timed("generators, all", lambda: ranker.Generators(config, history))
    as_of = kept.rated.groupby("user_id")["at"].max().reindex(history.user_ids).to_numpy(np.float64)
    rated_users = np.flatnonzero(np.isfinite(as_of))[:args.users]  # as learn() ranks: users with ratings
    queries = timed("queries", lambda: ranker.Queries.everyone(history, seen, as_of))[rated_users]
    movies = pd.DataFrame({"movie_id": np.arange(args.movies), "genres": [["Drama", "Comedy", "Action"][: 1 + i % 3]
                                                                        for i in range(args.movies)],
                           "year": 1950.0 + np.arange(args.movies) % 70})
    content = ContentIndex.from_movies(movies, pd.DataFrame({"movie_id": [], "tag": []}))
    years = movies.set_index("movie_id")["year"]
    scored = timed(f"candidates of {args.users:,} users", lambda: ranker.candidates(config, generators, queries,
                                                                                     years, content))
    # Labels for timing only: every 40th candidate of each user is taken as relevant.
    relevant = [movies_of_user[::40] for movies_of_user in
                np.split(scored.movie_id, np.searchsorted(scored.row, np.arange(1, args.users)))]
    model = timed(f"trees' fit ({config.trees} trees, {len(scored.row):,} candidates)",
                  lambda: ranker.fit(config, scored, relevant))
    timed("trees' prediction", lambda: model.predict_proba(scored.features))
    # The served ranking: everyone at one moment, RANKING_THREADS passes at a time against one after the other. The
    # moment's trending list is made first, so that neither way pays for it.
    served = ranker.Queries.everyone(history, seen, float(history.at.max()))[:SERVED_PASSES * ranker.PASS_ROWS]
    generators.trending(np.floor(served.as_of[:1] / gen.DAY_SECONDS),
                        np.array([max(map(len, served.exclude)) + config.candidates_per_generator]))
    threads = ranker.RANKING_THREADS

    growth: dict[int, float] = {}  # passes at a time -> the most the process's peak RSS rose over its RSS before

    def rank_served(at_once: int) -> list[np.ndarray]:
        before = reset_peak_rss()
        try:
            return ranker.ranked_passes(config, generators, served, years, content,
                                        lambda rows, found: ranker.top_k(model, found, len(rows), 10), at_once)
        finally:
            growth[at_once] = max(growth.get(at_once, 0.0), peak_rss() - before)

    before_and_now(SERVED, lambda: rank_served(1), lambda: rank_served(threads),
                   lambda before, now: all(np.array_equal(b, n) for b, n in zip(before, now, strict=True)))

    def ratio(label: str) -> float:
        return times[f"{label}, as before"] / times[f"{label}, now"]

    lines = [f"| step ({len(window.rated):,} ratings, {len(window.streamed):,} streamed pairs, "
             f"{len(history.user_ids):,} users, {args.users:,} ranked, {config.candidates_per_generator} "
             "candidates per generator; best of 2 where done twice) | seconds |",
             "|---|---:|", *(f"| {label} | {seconds:.1f} |" for label, seconds in times.items()), "",
             f"- the hold-out: **{ratio('hold-out'):.2f}×** faster than before (commit 8991169), the same windows",
             f"- pairs among the held-out ones: {ratio(PAIRS):.2f}× faster by `is_in` than by `np.isin`",
             f"- recency's order: {ratio(ORDER):.2f}× faster by `latest_first` than by `np.lexsort`",
             f"- {SERVED}, {SERVED_PASSES} of {ranker.PASS_ROWS:,} users: {ratio(SERVED):.2f}× faster "
             f"{threads} at a time than one after the other (`RANKING_THREADS`), the same lists; the peak RSS rose "
             f"{growth[1]:.2f} GiB over the RSS before one at a time, {growth[threads]:.2f} GiB {threads} at a time"]
    print("\n".join(lines))
    if args.out:
        write_results(args.out, "The ranker's steps without Spark", lines)


if __name__ == "__main__":
    main()
