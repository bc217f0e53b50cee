"""Benchmark: the batch graph (bronze -> silver -> gold -> catalog) at several sizes.

Generates MovieLens-shaped synthetic data (ml-25m column layout; Zipf-like movie popularity, heavy-tailed
user activity, realistic timestamps), materializes the whole graph for each size in a fresh process and a
fresh data directory, and prints per-asset seconds and peak memory (RSS of the process tree: Python + the
Spark JVM). The bundled sample runs first as the baseline; cost is reported as a ratio to the smallest
synthetic size so that drift of this noisy machine cancels out.

    .venv/bin/python bench/batch_graph.py                      # sample, 1M, 5M, 25M
    .venv/bin/python bench/batch_graph.py --sizes 1000000      # just the sample and 1M

With `--master`, each size runs once per Spark master, the first one (the baseline of the ratios) first:
`local[N]`, `spark://host:port` of a running cluster, or `cluster:WxC`, a standalone cluster of W workers with C
cores each that the script starts on this machine for that run (`reco-assets cluster`). `--s3` puts the lakehouse
of every run after the first on a local S3 server (`reco-assets s3`), so that the baseline is local[2] on local
disk, as in one-machine use:

    .venv/bin/python bench/batch_graph.py --sizes 1000000 --s3 \
        --master 'local[2]' 'local[2]' cluster:1x2 cluster:2x1
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.csv as pacsv

GENRES = [
    "Action",
    "Adventure",
    "Animation",
    "Children",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "IMAX",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]
RESULTS = Path(__file__).resolve().parent / "results"


def write_csv(path: Path, header: str, table: pa.Table) -> None:
    with path.open("wb") as out:
        out.write((header + "\n").encode())
        pacsv.write_csv(table, out, pacsv.WriteOptions(include_header=False, quoting_style="needed"))


def generate(n_ratings: int, target: Path, seed: int = 7) -> None:
    """MovieLens-shaped files with about `n_ratings` ratings (every user has at least 20, like MovieLens)."""
    rng = np.random.default_rng(seed)
    n_users = max(100, n_ratings // 155)  # ml-25m: 162k users for 25M ratings
    n_movies = int(min(62_000, max(3_000, n_ratings**0.5 * 12)))
    # heavy-tailed activity: 20 + lognormal, scaled to the target total
    activity = rng.lognormal(mean=3.6, sigma=1.1, size=n_users)
    activity = 20 + activity / activity.sum() * (n_ratings - 20 * n_users)
    # Zipf-like movie popularity over a shuffled id space
    popularity = 1.0 / np.arange(1, n_movies + 1) ** 0.95
    popularity /= popularity.sum()
    movie_ids = rng.permutation(np.arange(1, n_movies + 1))
    user_share = activity / activity.sum()
    key = np.empty(0, np.int64)
    while len(key) < n_ratings:  # popular movies collide for busy users: draw again until the target is met
        draw = int((n_ratings - len(key)) * 1.3) + 1000
        users = 1 + rng.choice(n_users, size=draw, p=user_share)
        movies = movie_ids[rng.choice(n_movies, size=draw, p=popularity)]
        key = np.unique(np.concatenate([key, users * (n_movies + 1) + movies]))  # one rating per user and movie
    key = np.sort(rng.choice(key, size=n_ratings, replace=False))
    users, movies = key // (n_movies + 1), key % (n_movies + 1)
    user_bias = rng.normal(0, 0.45, n_users + 1)
    movie_bias = rng.normal(0, 0.5, n_movies + 1)
    raw = 3.55 + user_bias[users] + movie_bias[movies] + rng.normal(0, 0.8, len(users))
    ratings = np.clip(np.round(raw * 2) / 2, 0.5, 5.0)
    # each user is active for a while somewhere between 1996 and 2019
    start = rng.uniform(820_000_000, 1_560_000_000, n_users + 1)
    span = rng.exponential(200 * 86_400, n_users + 1)
    timestamps = (start[users] + rng.uniform(0, 1, len(users)) * span[users]).astype(np.int64)
    target.mkdir(parents=True, exist_ok=True)
    write_csv(
        target / "ratings.csv",
        "userId,movieId,rating,timestamp",
        pa.table({"userId": users, "movieId": movies, "rating": ratings, "timestamp": timestamps}),
    )
    years = rng.integers(1920, 2020, n_movies + 1)
    genre_sets = ["|".join(sorted(rng.choice(GENRES, size=rng.integers(1, 4), replace=False))) for _ in range(n_movies)]
    ids = np.arange(1, n_movies + 1)
    write_csv(
        target / "movies.csv",
        "movieId,title,genres",
        pa.table({"movieId": ids, "title": [f"Synthetic Movie {i} ({years[i]})" for i in ids], "genres": genre_sets}),
    )
    n_tags = len(users) // 25
    picks = rng.integers(0, len(users), n_tags)
    write_csv(
        target / "tags.csv",
        "userId,movieId,tag,timestamp",
        pa.table(
            {
                "userId": users[picks],
                "movieId": movies[picks],
                "tag": rng.choice(["funny", "dark", "classic", "twist ending", "visually appealing"], n_tags),
                "timestamp": timestamps[picks] + 60,
            }
        ),
    )
    write_csv(
        target / "links.csv",
        "movieId,imdbId,tmdbId",
        pa.table({"movieId": ids, "imdbId": [f"{i + 100000:07d}" for i in ids], "tmdbId": ids + 500}),
    )


class PeakMemory:
    """Samples the RSS of this process and its children (the Spark JVM, Python workers) every 0.25 s.

    Children younger than a second are left out: without Hadoop's native library the JVM runs `chmod` for
    every file it writes, and between the spawn and the exec that child shares the JVM's memory and reports
    its whole RSS (the likely cause of a 13.08 GiB peak in a 25M run on 2026-11-29; the repeat peaked at 8.33).
    """

    def __init__(self):
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        me = psutil.Process()
        while not self._stop.is_set():
            total, now = 0, time.time()
            for proc in [me, *me.children(recursive=True)]:
                try:
                    if proc is me or now - proc.create_time() >= 1.0:
                        total += proc.memory_info().rss
                except psutil.Error:
                    pass
            self.samples.append((time.time(), total))
            self._stop.wait(0.25)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def peak(self, start: float = 0.0, end: float = float("inf")) -> int:
        """Peak RSS in [start, end], widened by one sampling interval so that short steps see a sample."""
        return max((rss for t, rss in self.samples if start - 0.3 <= t <= end + 0.3), default=0)


def run_one(source: str, data_dir: Path) -> dict:
    """Materialize the whole graph once, in this process; return per-asset seconds and peak memory."""
    os.environ["RECO_DATA_DIR"] = str(data_dir)
    import dagster as dg

    from reco_assets.definitions import batch_graph_job, defs
    from reco_assets.lakehouse import LakehouseResource

    (data_dir / "dagster_home").mkdir(parents=True, exist_ok=True)
    with PeakMemory() as memory, dg.instance_for_test(temp_dir=str(data_dir / "dagster_home")) as instance:
        started = time.time()
        result = dg.materialize(
            [*defs.assets, *defs.asset_checks],
            selection=batch_graph_job.selection,  # the batch graph, without the hourly stream assets
            resources={**defs.resources, "lakehouse": LakehouseResource(data_dir=str(data_dir))},
            instance=instance,
            run_config={"ops": {
                "bronze_movielens": {"config": {"source": source}},
                # Synthetic ratings carry no taste for ALS to learn: let the model gate warn instead of stopping
                # the graph before the recommendations (the real sample keeps the gate).
                "als_model_and_evaluation": {"config": {"require_beating_popularity": source == "bundled"}},
            }},
        )
        total = time.time() - started
        steps: dict[str, dict] = {}
        for entry in instance.all_logs(result.run_id):
            event = entry.dagster_event
            if event and event.event_type_value == "STEP_START":
                steps[event.step_key] = {"start": entry.timestamp}
            elif event and event.event_type_value == "STEP_SUCCESS":
                steps[event.step_key]["end"] = entry.timestamp
    for step in steps.values():
        step["seconds"] = round(step["end"] - step["start"], 1)
        step["peak_gib"] = round(memory.peak(step["start"], step["end"]) / 2**30, 2)
    evaluation = next(
        m.metadata
        for m in result.asset_materializations_for_node("als_model_and_evaluation")
        if m.asset_key.to_user_string() == "gold_reco_evaluation"
    )
    ratings = next(iter(result.asset_materializations_for_node("silver_ratings"))).metadata["dagster/row_count"].value
    hybrid = next(iter(result.asset_materializations_for_node("gold_hybrid_recommendations"))).metadata
    served_als = next(m.metadata for m in result.asset_materializations_for_node("als_model_and_evaluation")
                      if m.asset_key.to_user_string() == "als_model")
    return {
        "ratings": ratings,
        "total_seconds": round(total, 1),
        "peak_gib": round(memory.peak() / 2**30, 2),
        "steps": {k: {"seconds": v["seconds"], "peak_gib": v["peak_gib"]} for k, v in steps.items()},
        "ndcg_als": evaluation["als_ndcg_at_10"].value,
        "ndcg_popularity": evaluation["popularity_ndcg_at_10"].value,
        "evaluation_stages": evaluation["stage_seconds"].value,
        "ndcg_hybrid": evaluation["hybrid_ndcg_at_10"].value,
        "hybrid_stages": hybrid["stage_seconds"].value,
        "als_model_seconds": served_als["train_seconds"].value,
    }


def child(label: str, source: str, workdir: Path, env: dict[str, str] | None = None) -> dict:
    """Run one size in a fresh Python + JVM so that memory and warm-up are measured per size."""
    out = workdir / f"{label}.json"
    cmd = [sys.executable, __file__, "--run-one", source, "--data-dir", str(workdir / label), "--out", str(out)]
    print(f"[bench] {label}: running the whole graph ...", flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=open(workdir / f"{label}.log", "w"),
                   env={**os.environ, **(env or {})})
    return json.loads(out.read_text())


def on_master(master: str, workdir: Path, s3_settings: dict[str, str] | None, run):
    """`run(env)` with SPARK_MASTER (and the S3 lakehouse, when given); `cluster:WxC` starts a standalone cluster of
    W workers with C cores each for the run and stops it after."""
    from reco_assets.services import free_port
    from reco_assets.services.spark_cluster import cluster

    env = {"SPARK_MASTER": master, **(s3_settings or {})}
    if not master.startswith("cluster:"):
        return run(env)
    workers, cores = (int(n) for n in master.removeprefix("cluster:").split("x"))
    spark_master, spark_workers = cluster(workdir / f"cluster-{workers}x{cores}", free_port(span=2 + 2 * workers),
                                          workers, cores,
                                          os.environ.get("BENCH_WORKER_MEMORY", "6g"))
    try:
        for service in [spark_master, *spark_workers]:
            service.up(log=lambda message: None)
        # The executors' heap (Spark's default is 1g); the driver keeps SPARK_DRIVER_MEMORY, as in local mode.
        return run({**env, "SPARK_MASTER": spark_master.url,
                    "SPARK_EXECUTOR_MEMORY": os.environ.get("SPARK_EXECUTOR_MEMORY", "4g")})
    finally:
        for service in [*spark_workers, spark_master]:
            service.down(log=lambda message: None)


def report(results: dict[str, dict], scaling: bool = True) -> str:
    labels = list(results)
    steps = list(next(iter(results.values()))["steps"])
    lines = ["| step | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    for step in steps:
        cells = [
            f"{results[label]['steps'][step]['seconds']} s / {results[label]['steps'][step]['peak_gib']} GiB"
            for label in labels
        ]
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    lines.append(
        "| **total** | "
        + " | ".join(f"**{results[label]['total_seconds']} s / {results[label]['peak_gib']} GiB**" for label in labels)
        + " |"
    )
    synthetic = [label for label in labels if label != "sample"]
    if synthetic and scaling:
        base = results[synthetic[0]]
        lines.append("")
        lines.append("| size | ratings | seconds | cost ÷ smallest synthetic | linear would be | µs per rating |")
        lines.append("|---|---:|---:|---:|---:|---:|")
        for label in synthetic:
            r = results[label]
            cost = r["total_seconds"] / base["total_seconds"]
            lines.append(
                f"| {label} | {r['ratings']:,} | {r['total_seconds']} | {cost:.2f}× | "
                f"{r['ratings'] / base['ratings']:.2f}× | {r['total_seconds'] / r['ratings'] * 1e6:.1f} |"
            )
    for title, key in (("Inside als_model_and_evaluation, the evaluation's stages", "evaluation_stages"),
                       ("Inside gold_hybrid_recommendations, its stages", "hybrid_stages")):
        lines += ["", f"{title} (seconds):", ""]
        for label in labels:
            stages = results[label][key]
            lines.append(f"- {label}: " + ", ".join(f"{stage} {seconds}" for stage, seconds in stages.items()))
    lines += ["", "The served ALS model's fit and write (als_model's `train_seconds`): "
              + ", ".join(f"{label} {results[label].get('als_model_seconds', '?')} s" for label in labels)]
    sample = results.get("sample")
    if sample:
        lines.append("")
        lines.append(
            f"Bundled sample, per-user protocol: ALS nDCG@10 {sample['ndcg_als']:.4f}, the hybrid "
            f"{sample['ndcg_hybrid']:.4f}, popularity {sample['ndcg_popularity']:.4f}: "
            f"**{sample['ndcg_als'] / sample['ndcg_popularity']:.2f}×** and "
            f"**{sample['ndcg_hybrid'] / sample['ndcg_popularity']:.2f}×** (target for the hybrid ≥ 1.6×)"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[1_000_000, 5_000_000, 25_000_000])
    parser.add_argument("--workdir", help="where data and results go (default: a temporary folder)")
    parser.add_argument("--master", nargs="*", default=[],
                        help="Spark masters to compare, the first as baseline: local[N], spark://…, cluster:WxC")
    parser.add_argument("--s3", action="store_true", help="with --master: the lakehouse of every run after the "
                        "first on a local S3 server")
    parser.add_argument("--run-one", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.s3 and not args.master:
        parser.error("--s3 compares storage across --master runs: give --master too")
    if args.run_one:
        Path(args.out).write_text(json.dumps(run_one(args.run_one, Path(args.data_dir))))
        return

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="reco-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.master:
        compare_masters(args, workdir)
        return
    results = {"sample": child("sample", "bundled", workdir)}
    print(f"[bench] sample: {results['sample']['total_seconds']} s", flush=True)
    for size in args.sizes:
        label = f"{size / 1e6:g}M"
        source = workdir / f"synthetic-{label}"
        if not (source / "ratings.csv").exists():
            started = time.time()
            generate(size, source)
            print(f"[bench] generated {label} in {time.time() - started:.0f} s", flush=True)
        results[label] = child(label, str(source), workdir)
        print(
            f"[bench] {label}: {results[label]['total_seconds']} s, peak {results[label]['peak_gib']} GiB", flush=True
        )
        (workdir / "results.json").write_text(json.dumps(results, indent=2))
    text = report(results)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "batch_graph.json").write_text(json.dumps(results, indent=2))


def compare_masters(args, workdir: Path) -> None:
    """Each size once per master (and storage), in that order; a table of seconds per step and ratios to the
    first."""
    from reco_assets.services import free_port
    from reco_assets.services.s3 import S3Server

    server = None
    if args.s3:
        server = S3Server(workdir / "s3-server", free_port())
        server.up(log=lambda message: None)
        server.create_bucket("bench")
    results: dict[str, dict] = {}
    try:
        for size in args.sizes:
            size_label = f"{size / 1e6:g}M"
            source = workdir / f"synthetic-{size_label}"
            if not (source / "ratings.csv").exists():
                generate(size, source)
            for index, master in enumerate(args.master):
                on_s3 = server is not None and index > 0
                label = f"{size_label} {master}{' s3' if on_s3 else ''}"
                slug = f"{size_label}-{index}-" + "".join(c if c.isalnum() else "_" for c in master)
                settings = {**server.settings(), "RECO_LAKEHOUSE_URI": f"s3a://bench/{slug}"} if on_s3 else None
                results[label] = on_master(master, workdir, settings,
                                           lambda env, slug=slug, source=source: child(slug, str(source), workdir, env))
                print(f"[bench] {label}: {results[label]['total_seconds']} s", flush=True)
                (workdir / "results-masters.json").write_text(json.dumps(results, indent=2))
    finally:
        if server is not None:
            server.down(log=lambda message: None)
    labels = list(results)
    base = results[labels[0]]
    lines = [report(results, scaling=False), "", f"| run | seconds | ÷ {labels[0]} | ALS nDCG@10 |",
             "|---|---:|---:|---:|"]
    lines += [f"| {label} | {r['total_seconds']} | {r['total_seconds'] / base['total_seconds']:.2f}× | "
              f"{r['ndcg_als']:.4f} |" for label, r in results.items()]
    lines.append("")
    lines.append("Peak memory counts this process tree: on a cluster the executors are the workers' children and "
                 "are not in it.")
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "batch_graph_masters.json").write_text(json.dumps(results, indent=2))
    (RESULTS / "batch_graph_masters.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
