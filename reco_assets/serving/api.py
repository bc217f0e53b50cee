"""The HTTP API over the gold tables (`reco-assets serve`): recommendations, similar movies, trending, stats and
health, read-only, from the serving copy (reco_assets.serving.copy). OpenAPI docs at /docs."""

import ctypes
import gc
import json
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import uvicorn
from fastapi import FastAPI, HTTPException, Path, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from reco_assets.kafka.client import KafkaResource, kafka_resource
from reco_assets.lakehouse import LakehouseResource
from reco_assets.serving import health, queries
from reco_assets.serving.copy import COPIED, REQUIRED, ServingCopy

Id = Annotated[int, Path(ge=1, le=2**31 - 1, description="a MovieLens id (1 or more)")]
K = Annotated[int, Query(ge=1, le=100, description="how many movies (1-100)")]


class MovieList(BaseModel):
    """A ranked list and where it came from: `source` is the model (als, hybrid), similar, trending, or popular
    (the fallback when the model has no list for the user, or nothing is trending); `note` says why."""

    source: str
    table: str
    table_version: int
    note: str | None = None
    about: dict[str, Any] = {}
    movies: list[dict[str, Any]]


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    problems: list[str]
    catalog: dict[str, Any]
    tables: dict[str, dict[str, Any]]
    kafka: dict[str, Any]
    spark_connect: dict[str, Any]
    freshness: dict[str, Any]


def _encode(value):
    return value.isoformat() if isinstance(value, datetime) else str(value)


def create_app(data_dir: str, kafka: KafkaResource | None = None, refresh_s: float = 1.0) -> FastAPI:
    lakehouse = LakehouseResource(data_dir=data_dir)
    kafka = kafka or kafka_resource(resolve=True)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.copy = ServingCopy(lakehouse, refresh_s).start()
        gc.freeze()  # the start-up's objects (Dagster's, FastAPI's): a full collection no longer walks them
        yield
        app.state.copy.stop()

    app = FastAPI(title="reco_assets", version="1", lifespan=lifespan,
                  description="Read-only answers from the gold tables of the reco_assets lakehouse.")

    def answer(question, *args) -> Response:
        """The listing `question(copy, *args)` returns, read from one snapshot of its table, as a MovieList (encoded
        directly: the lookups take microseconds, model validation would cost more than they do)."""
        try:
            listing = question(app.state.copy, *args)
        except queries.Unavailable as error:
            raise HTTPException(503, str(error)) from None
        except queries.NotFound as error:
            raise HTTPException(404, str(error)) from None
        body = {"source": listing.source, "table": listing.table, "table_version": listing.version,
                "note": listing.note, "about": listing.about, "movies": listing.records()}
        return Response(json.dumps(body, default=_encode, separators=(",", ":")), media_type="application/json")

    @app.get("/users/{user_id}/recommendations", response_model=MovieList, tags=["recommendations"])
    async def recommendations(user_id: Id, k: K = 10, model: Literal["als", "hybrid"] = "als") -> Response:
        """A user's top `k` movies from the ALS model or the hybrid ranker, with scores, ranks and the model
        version; a user with no list gets the popular movies they have not rated (`source: popular`)."""
        if app.state.copy.has_key(queries.MODELS[model], user_id):
            return answer(queries.recommendations, user_id, k, model)
        # The cold-start fallback reads the user's ratings through DuckDB: off the event loop.
        return await run_in_threadpool(answer, queries.recommendations, user_id, k, model)

    @app.get("/movies/{movie_id}/similar", response_model=MovieList, tags=["recommendations"])
    async def similar(movie_id: Id, k: K = 10) -> Response:
        """The movies closest to a movie in the ALS item factors (cosine). 404 for an unknown movie."""
        return answer(queries.similar, movie_id, k)

    @app.get("/trending", response_model=MovieList, tags=["trending"])
    async def trending(genre: Annotated[str | None, Query(min_length=1, max_length=64,
                                                          description="e.g. Comedy")] = None,
                       limit: K = 10) -> Response:
        """What is trending now (gold.trending_now), overall or in one genre; popular movies while nothing is."""
        return answer(queries.trending, genre, limit)

    @app.get("/stats", tags=["status"])
    def stats() -> dict[str, Any]:
        """What `reco-assets stats` prints: event totals, per type, users, movies, the last event, freshness, the
        dead letter, and Kafka's lag behind bronze per topic."""
        with app.state.copy.cursor() as con:
            try:
                result = queries.event_stats(con)
            except queries.Unavailable as error:
                raise HTTPException(503, str(error)) from None
        lag, problem = health.kafka_lag(kafka, lakehouse)
        return {**result, "kafka_lag": [dict(zip(health.LAG_COLUMNS, row, strict=True)) for row in lag],
                "kafka_problem": problem}

    @app.get("/health", response_model=Health, tags=["status"],
             responses={503: {"model": Health, "description": "something is wrong: see `problems`"}})
    def check_health():
        """The DuckDB catalog (for the CLI and your own queries), the serving copy of each gold table (Delta
        version, last commit), the Kafka broker and bronze's lag, the Spark Connect server, and the freshness of
        trending; 503 with the problems when something is wrong."""
        copy: ServingCopy = app.state.copy
        problems, tables = [], {}
        for name in COPIED:
            served = copy.snapshots.get(name)
            tables[name] = ({"version": served.version, "committed_at": served.committed_at.isoformat()}
                            if served else {"version": None})
            if name in copy.errors:
                tables[name]["error"] = copy.errors[name]
                problems.append(f"{name}: the serving copy could not be refreshed ({copy.errors[name]})")
            elif served is None and name in REQUIRED:
                problems.append(f"{name} is not materialized yet: materialize {queries.WRITERS[name]}")
        lag, kafka_problem = health.kafka_lag(kafka, lakehouse)
        waiting = sum(row[3] for row in lag)
        if kafka_problem:
            problems.append(f"Kafka: {kafka_problem}")
        connect = health.spark_connect(os.environ.get("SPARK_REMOTE"))
        if connect["used"] and not connect["reachable"]:
            problems.append(f"Spark Connect at {connect['url']} {connect['detail']}")
        trending = copy.snapshots.get("gold.trending_now")
        age = None if trending is None else round((datetime.now(UTC) - trending.committed_at).total_seconds(), 1)
        if waiting and (age is None or age > health.STALE_AFTER_S):
            problems.append(f"{waiting} records wait in Kafka and gold.trending_now was last updated "
                            f"{'never' if age is None else f'{age:.0f} s ago'}: are the sensor and its runs on?")
        warehouse = lakehouse.warehouse_path
        catalog = {"path": str(warehouse), "exists": warehouse.is_file(), "updated_at": datetime.fromtimestamp(
            warehouse.stat().st_mtime, UTC).isoformat() if warehouse.is_file() else None}
        body = Health(status="unavailable" if problems else "ok", problems=problems, catalog=catalog, tables=tables,
                      kafka={"bootstrap_servers": kafka.bootstrap_servers, "reachable": kafka_problem is None,
                             "records_waiting": waiting, "lag": [dict(zip(health.LAG_COLUMNS, row, strict=True))
                                                                 for row in lag]},
                      spark_connect=connect,
                      freshness={"trending_now_age_seconds": age, "stale_after_seconds": health.STALE_AFTER_S})
        return JSONResponse(body.model_dump(mode="json"), status_code=503 if problems else 200)

    return app


class PortTaken(Exception):
    """Another process listens on the API's address."""


def bind(host: str, port: int, reuse_port: bool) -> socket.socket:
    """A TCP socket bound to host:port, as uvicorn binds a host (IPv6 only for an address with a colon)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def check_port_free(host: str, port: int) -> None:
    """Refuse a taken address: SO_REUSEPORT alone would share it with another server of this user."""
    try:
        bind(host, port, reuse_port=False).close()
    except OSError as error:
        raise PortTaken(f"{host}:{port} is taken by another process ({error.strerror}): stop it, or serve on "
                        "another --port") from None


class AnnouncedServer(uvicorn.Server):
    """A uvicorn server that says on stderr when it answers (its log level hides uvicorn's own line)."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            print(f"[serve] process {os.getpid()} answers", file=sys.stderr, flush=True)


def serve_worker(host: str, port: int, data_dir: str, refresh_s: float) -> int:
    """One worker: its own listening socket on host:port (SO_REUSEPORT) and its own serving copy. Returns 0 after a
    clean stop (Ctrl+C or SIGTERM), 3 when the app did not start."""
    server = AnnouncedServer(uvicorn.Config(create_app(data_dir, refresh_s=refresh_s), log_level="warning",
                                            access_log=False))
    try:
        server.run(sockets=[bind(host, port, reuse_port=True)])
    except KeyboardInterrupt:  # uvicorn raises Ctrl+C again once it has shut down gracefully
        pass
    return 0 if server.started else 3


def worker_process(host: str, port: int, data_dir: str, refresh_s: float) -> None:
    """A worker process of `serve`: it ends with its parent (a killed `serve` leaves no worker on the port)."""
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    sys.exit(serve_worker(host, port, data_dir, refresh_s))


def serve(host: str, port: int, data_dir: str, refresh_s: float = 1.0, workers: int = 1) -> int:
    """Serve on host:port with `workers` processes. Each binds its own socket with SO_REUSEPORT, so the kernel
    spreads connections over the workers; with one shared socket (uvicorn's --workers) one worker's event loop
    accepted 29 to 32 of 32 connections here, and its queue set the p99. Returns the exit code: non-zero when a
    worker failed, which stops the others."""
    check_port_free(host, port)
    print(f"[serve] the API on http://{host}:{port} (docs at /docs), reading {data_dir}, {workers} worker "
          f"process{'es' if workers > 1 else ''}", file=sys.stderr)
    if workers == 1:
        return serve_worker(host, port, data_dir, refresh_s)
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=worker_process, args=(host, port, data_dir, refresh_s), name=f"api-{i}")
                 for i in range(workers)]

    def stop(_signum=None, _frame=None) -> None:
        for process in processes:
            if process.pid is not None and process.is_alive():
                process.terminate()

    signal.signal(signal.SIGTERM, stop)  # before the start: a SIGTERM at any time stops every worker
    # The workers inherit an ignored SIGINT, so a Ctrl+C while one still imports does not end it with a traceback;
    # uvicorn handles SIGINT once it runs. This process stops them all on Ctrl+C, whenever it comes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for process in processes:
        process.start()
    signal.signal(signal.SIGINT, stop)
    while all(process.exitcode is None for process in processes):
        multiprocessing.connection.wait([process.sentinel for process in processes], timeout=1.0)
    stop()  # one ended: the others too
    for process in processes:
        process.join(timeout=30)
        if process.exitcode is None:
            process.kill()
            process.join()
    failed = [p for p in processes if p.exitcode not in (0, -signal.SIGTERM)]
    for process in failed:
        print(f"[serve] worker {process.name} (pid {process.pid}) exited with {process.exitcode}", file=sys.stderr)
    return 1 if failed else 0
