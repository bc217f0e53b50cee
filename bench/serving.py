"""HTTP API latency and throughput over the 25M-shaped gold tables, against a bare DuckDB point query.

    .venv/bin/python bench/batch_graph.py --sizes 25000000 --workdir /tmp/reco-bench     # once: the gold tables
    .venv/bin/python bench/serving.py --data-dir /tmp/reco-bench/25M --out bench/results/serving.md

It starts `reco-assets serve` over the data directory, with 1 and with 2 worker processes (one per core; each
holds its own serving copy), and, from one load-generator process (asyncio on uvloop,
one keep-alive connection per client, on the same 2 cores as the server), measures for recommendations, similar
movies and trending:

- closed loop, 1 and 32 clients: each client sends its next request when the previous answer arrives, so the
  requests/s is the API's capacity and the latency includes the queue in front of it;
- open loop, 32 clients sending 1,500 requests/s together on a fixed schedule: the latency at that rate, counted
  from each request's scheduled time (a late send counts against the API).

Baselines in the same script, without HTTP: the bare DuckDB point query of one user's top 10 on an in-memory table
sorted by user_id (the ratio's baseline) and on the catalog's view (`delta_scan` of the Delta files), and the
serving copy's own lookup. And the ceiling: the same stack (FastAPI on uvicorn, as many workers) answering a
fixed 1 KB JSON with no lookup, under the same loads.
"""

import argparse
import asyncio
import gc
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import duckdb
import uvloop
from deltalake import DeltaTable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reco_assets.lakehouse import LakehouseResource, duck  # noqa: E402
from reco_assets.services import free_port  # noqa: E402
from reco_assets.serving import queries  # noqa: E402
from reco_assets.serving.copy import ServingCopy  # noqa: E402


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def client(host: str, port: int, paths: list[str], until: float, latencies: list[float], errors: list[str],
                 interval: float | None = None, offset: float = 0.0) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    loop = asyncio.get_running_loop()
    scheduled = loop.time() + offset
    try:
        while True:
            if interval is not None:
                scheduled += interval
                delay = scheduled - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                started = time.perf_counter() - (loop.time() - scheduled)
            else:
                started = time.perf_counter()
            if loop.time() >= until:  # a client that fell behind stops at the end too
                return
            path = random.choice(paths)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(head.split(b"\r\n")[0].decode())
    finally:
        writer.close()


def cpu_times() -> list[int]:
    return [int(field) for field in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]


async def load(host: str, port: int, paths: list[str], clients: int, seconds: float,
               rate: float | None = None) -> dict:
    """One measurement; `steal_pct` is the share of CPU time the hypervisor took from this VM meanwhile (a
    stolen core stalls server and clients alike: the p99 moves with it)."""
    latencies, errors = [], []
    before = cpu_times()
    gc.collect()
    gc.freeze()  # the load generator's own collections would delay its sends, and count against the API
    loop = asyncio.get_running_loop()
    started = loop.time()
    until = started + seconds
    interval = clients / rate if rate else None
    await asyncio.gather(*[client(host, port, paths, until, latencies, errors, interval,
                                  offset=(i * interval / clients) if interval else 0.0) for i in range(clients)])
    elapsed = loop.time() - started
    spent = [after - then for after, then in zip(cpu_times(), before, strict=True)]
    return {"requests": len(latencies), "errors": len(errors), "rps": round(len(latencies) / elapsed),
            "p50_ms": round(percentile(latencies, 50) * 1000, 2), "p99_ms": round(percentile(latencies, 99) * 1000, 2),
            "steal_pct": round(100 * spent[7] / max(1, sum(spent)), 1)}


def bare_queries(data_dir: Path, users: list[int], n: int) -> dict:
    """p50/p99 (ms) of one user's top 10 without HTTP: the bare DuckDB point query on an in-memory table sorted by
    user_id and on the catalog's kind of view (delta_scan of the Delta files), and the serving copy's lookup."""
    lakehouse = LakehouseResource(data_dir=str(data_dir))
    uri = duck.sql_string(lakehouse.table("gold.recommendations").uri)
    memory = duckdb.connect(config={**duck.NO_AUTOLOAD, "threads": "1"})
    duck.load_delta(memory)
    memory.execute("CREATE SCHEMA gold")
    memory.execute(f"CREATE TABLE gold.recommendations AS SELECT * FROM delta_scan({uri}) ORDER BY user_id, rank")
    files = duckdb.connect(config=duck.NO_AUTOLOAD)
    duck.load_delta(files)
    files.execute("CREATE SCHEMA gold")
    files.execute(f"CREATE VIEW gold.recommendations AS SELECT * FROM delta_scan({uri})")
    copy = ServingCopy(lakehouse)
    copy.refresh()
    sql = ("SELECT rank, movie_id, title, year, score, model_version FROM gold.recommendations WHERE user_id = ? "
           "ORDER BY rank LIMIT 10")
    askers = {"DuckDB point query, in-memory table sorted by user_id": lambda u: memory.execute(sql, (u,)).fetchall(),
              "DuckDB point query, catalog view (delta_scan)": lambda u: files.execute(sql, (u,)).fetchall(),
              "the API's serving copy (binary search), no HTTP": lambda u: queries.recommendations(copy, u, 10, "als")}
    results = {}
    for label, ask in askers.items():
        times = []
        for user in random.sample(users, min(n, len(users))):
            started = time.perf_counter()
            ask(user)
            times.append(time.perf_counter() - started)
        results[label] = {"p50_ms": round(percentile(times, 50) * 1000, 3),
                          "p99_ms": round(percentile(times, 99) * 1000, 3), "queries": len(times)}
    copy.stop()
    return results


# The ceiling: the same stack (FastAPI on uvicorn) answering a fixed 1 KB JSON, no lookup at all.
CEILING_APP = """
from fastapi import FastAPI
from fastapi.responses import Response
body = b'{"movies":[' + b",".join(b'{"rank":%d,"movie_id":%d,"title":"A movie title (1999)","score":0.5}' % (i, i)
                                  for i in range(1, 11)) + b']}'
app = FastAPI()

@app.get("/users/{user_id}/recommendations")
async def answer(user_id: int, k: int = 10) -> Response:
    return Response(body, media_type="application/json")
"""


def start(command: list[str], port: int, env: dict | None = None) -> subprocess.Popen:
    """Start a server and wait until it answers a recommendation."""
    process = subprocess.Popen(command, env=env)
    deadline = time.monotonic() + 300
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/users/1/recommendations", timeout=5) as answer:
                if answer.status == 200:
                    return process
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{command[0]} did not start")
        time.sleep(0.5)


def start_api(data_dir: Path, port: int, workers: int) -> subprocess.Popen:
    env = os.environ | {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}  # no broker: /health is not measured
    return start([str(ROOT / ".venv/bin/reco-assets"), "--data-dir", str(data_dir), "serve", "--port", str(port),
                  "--workers", str(workers)], port, env)


def start_ceiling(port: int, workers: int, app_dir: Path) -> subprocess.Popen:
    (app_dir / "ceiling.py").write_text(CEILING_APP)
    return start([sys.executable, "-m", "uvicorn", "ceiling:app", "--app-dir", str(app_dir), "--port", str(port),
                  "--workers", str(workers), "--log-level", "warning", "--no-access-log"], port)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="a data directory with the gold tables materialized")
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement (default 10)")
    parser.add_argument("--rate", type=float, default=1500.0, help="open-loop rate, requests/s (default 1500)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="open-loop measurements per endpoint (default 3): the p99 moves with the host's noise")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="the server's worker processes, one measurement each (default 1 2)")
    parser.add_argument("--out", help="write the report here (markdown)")
    args = parser.parse_args()
    data_dir = Path(args.data_dir)
    recommendations = DeltaTable(LakehouseResource(data_dir=str(data_dir)).table("gold.recommendations").uri)
    users = sorted(set(recommendations.to_pyarrow_table(columns=["user_id"])["user_id"].to_pylist()))
    movies = DeltaTable(LakehouseResource(data_dir=str(data_dir)).table("gold.similar_movies").uri) \
        .to_pyarrow_table(columns=["movie_id"])["movie_id"].unique().to_pylist()
    rows = recommendations.to_pyarrow_table(columns=["user_id"]).num_rows
    print(f"[bench] {len(users):,} users, {rows:,} recommendation rows, {len(movies):,} movies with neighbours",
          flush=True)
    random.seed(7)
    bare = bare_queries(data_dir, users, 2000)
    print(f"[bench] bare queries: {bare}", flush=True)

    endpoints = {
        "recommendations": [f"/users/{u}/recommendations?k=10" for u in random.sample(users, 5000)],
        "similar": [f"/movies/{m}/similar?k=10" for m in random.sample(movies, min(5000, len(movies)))],
        "trending": ["/trending?limit=10"],
    }
    loads = (("1 client", 1, None), ("32 clients", 32, None), (f"32 clients at {args.rate:,.0f}/s", 32, args.rate))
    results = {}

    def measure(name: str, port: int, paths: list[str]) -> None:
        uvloop.run(load("127.0.0.1", port, paths, 32, 2))  # warm-up: every worker, every connection
        for label, clients, rate in loads:
            for repeat in range(args.repeat if rate else 1):
                row = (name, label if rate is None else f"{label}, run {repeat + 1}")
                results[row] = uvloop.run(load("127.0.0.1", port, paths, clients, args.seconds, rate))
                print(f"[bench] {', '.join(row)}: {results[row]}", flush=True)

    for workers in args.workers:
        port = free_port()
        started = time.monotonic()
        api = start_api(data_dir, port, workers)
        print(f"[bench] the API ({workers} worker(s)) answered {time.monotonic() - started:.1f} s after its start "
              "(copy loaded)", flush=True)
        try:
            for name, paths in endpoints.items():
                measure(f"{name}, {workers} worker{'s' if workers > 1 else ''}", port, paths)
        finally:
            stop(api)
        port = free_port()
        with tempfile.TemporaryDirectory() as app_dir:
            ceiling = start_ceiling(port, workers, Path(app_dir))
            try:
                measure(f"ceiling (fixed answer, no lookup), {workers} worker{'s' if workers > 1 else ''}", port,
                        endpoints["recommendations"])
            finally:
                stop(ceiling)

    copy_p50 = bare["DuckDB point query, in-memory table sorted by user_id"]["p50_ms"]
    lines = [f"# HTTP API on {len(users):,} users × 20 recommendations ({rows:,} rows)", "",
             f"`bench/serving.py --data-dir {data_dir} --seconds {args.seconds:g} --repeat {args.repeat}` on "
             f"{time.strftime('%Y-%m-%d')}, "
             "2 cores shared by the server and the load generator.", "",
             "| endpoint | load | requests/s | p50 ms | p99 ms | errors | CPU steal % | p50 ÷ bare query p50 |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for (name, label), r in results.items():
        ratio = f"{r['p50_ms'] / copy_p50:.1f}×" if name.startswith("recommendations") else ""
        lines.append(f"| {name} | {label} | {r['rps']:,} | {r['p50_ms']} | {r['p99_ms']} | {r['errors']} | "
                     f"{r['steal_pct']} | {ratio} |")
    lines += ["", "One user's top 10 without HTTP (same script; the baseline of the ratio is the first row):", "",
              "| source | p50 ms | p99 ms |", "|---|---:|---:|"]
    lines += [f"| {label} | {r['p50_ms']} | {r['p99_ms']} |" for label, r in bare.items()]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        Path(args.out).write_text(report)
        Path(args.out).with_suffix(".json").write_text(json.dumps(
            {"bare": bare, "api": {f"{n} / {label}": r for (n, label), r in results.items()}}, indent=2))


if __name__ == "__main__":
    main()
