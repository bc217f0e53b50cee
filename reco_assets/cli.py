"""`reco-assets`: query the lakehouse, run the local Kafka broker, produce events."""

import argparse
import csv
import json
import os
import sys
import time
import warnings
from datetime import UTC, datetime

import duckdb
from tabulate import tabulate

from reco_assets.lakehouse import DEFAULT_DATA_DIR, LakehouseResource, duck


class CliError(Exception):
    """A problem the user can fix; printed as one line."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise CliError(f"{message} (see `{self.prog} --help`)")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer id") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a valid id (ids start at 1)")
    return value


def connect(data_dir: str) -> duckdb.DuckDBPyConnection:
    """The catalog, read-only: its views read the lakehouse below the data directory, and nothing else."""
    lakehouse = LakehouseResource(data_dir=data_dir)
    if not lakehouse.warehouse_path.is_file():
        raise CliError(f"no catalog at {lakehouse.warehouse_path}: materialize the assets first (`make run`, then "
                       "Materialize all)")
    return duck.connect_read_only(str(lakehouse.warehouse_path), [str(lakehouse.lakehouse)])


def emit(columns: list[str], rows: list[tuple], fmt: str) -> None:
    if fmt == "json":
        print(json.dumps([dict(zip(columns, row, strict=True)) for row in rows], default=str, indent=2))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
    else:
        print(tabulate(rows, headers=columns, tablefmt="simple", floatfmt=".4f"))


def query(con: duckdb.DuckDBPyConnection, sql: str, params=()) -> tuple[list[str], list[tuple]]:
    cursor = con.execute(sql, params)
    return [d[0] for d in cursor.description], cursor.fetchall()


def cmd_sql(con, args) -> None:
    try:
        duck.check_read_only(con, args.query)
    except duck.RefusedQuery as refused:
        raise CliError(str(refused)) from None
    emit(*query(con, args.query), args.format)


def cmd_recommend(con, args) -> None:
    columns, rows = query(
        con,
        "SELECT rank, movie_id, title, year, round(score, 4) AS score, model_version AS source "
        "FROM gold.recommendations WHERE user_id = ? ORDER BY rank LIMIT ?",
        (args.user_id, args.k),
    )
    if not rows:
        has_history = query(con, "SELECT count(*) FROM silver.ratings WHERE user_id = ?", (args.user_id,))[1][0][0]
        reason = "no ALS recommendations yet" if has_history else "no history"
        print(f"user {args.user_id} has {reason}: popular movies (cold-start fallback)", file=sys.stderr)
        columns, rows = query(
            con,
            "SELECT row_number() OVER (ORDER BY p.rank) AS rank, p.movie_id, p.title, p.year, "
            "p.num_ratings AS score, 'popular' AS source FROM gold.popular_movies p "
            "WHERE p.movie_id NOT IN (SELECT movie_id FROM silver.ratings WHERE user_id = ?) "
            "ORDER BY p.rank LIMIT ?",
            (args.user_id, args.k),
        )
    emit(columns, rows, args.format)


def cmd_similar(con, args) -> None:
    found = query(con, "SELECT title FROM silver.movies WHERE movie_id = ?", (args.movie_id,))[1]
    if not found:
        raise CliError(f"movie {args.movie_id} is not in silver.movies")
    columns, rows = query(
        con,
        "SELECT rank, similar_movie_id AS movie_id, similar_title AS title, round(score, 4) AS cosine "
        "FROM gold.similar_movies WHERE movie_id = ? ORDER BY rank LIMIT ?",
        (args.movie_id, args.k),
    )
    if not rows:
        print(f"movie {args.movie_id} ({found[0][0]}) has no ALS factors (no ratings yet)", file=sys.stderr)
    emit(columns, rows, args.format)


def seconds_since(moment) -> float | None:
    """Age of a timestamp read from the catalog (Delta timestamps are instants: DuckDB gives them a time zone)."""
    return None if moment is None else round((datetime.now(UTC) - moment).total_seconds(), 1)


def has_view(con, view: str) -> bool:
    schema, name = view.split(".")
    return bool(query(con, "SELECT count(*) FROM duckdb_views() WHERE schema_name = ? AND view_name = ?",
                      (schema, name))[1][0][0])


def cmd_trending(con, args) -> None:
    where = "genre IS NULL" if args.genre is None else "genre = ?"
    params = () if args.genre is None else (args.genre,)
    if has_view(con, "gold.trending_now"):
        columns, rows = query(con, "SELECT rank, movie_id, title, round(trend_score, 3) AS trend_score, events, "
                                   "views, clicks, ratings, unique_users, last_event_at FROM gold.trending_now "
                                   f"WHERE {where} ORDER BY rank LIMIT ?", (*params, args.limit))
    else:
        columns, rows = [], []
    if rows:
        as_of, updated_at = query(con, "SELECT max(as_of), max(updated_at) FROM gold.trending_now")[1][0]
        print(f"trending {'overall' if args.genre is None else 'in ' + args.genre} as of {as_of} UTC "
              f"(table updated {seconds_since(updated_at):.0f} s ago)", file=sys.stderr)
        emit(columns, rows, args.format)
        return
    if args.genre is not None:
        if not has_view(con, "silver.movies"):
            raise CliError(f"nothing trending in {args.genre!r}, and no genres to check it against: materialize "
                           "the MovieLens batch graph (silver_movies)")
        known = query(con, "SELECT count(*) FROM silver.movies WHERE list_contains(genres, ?)", params)[1][0][0]
        if not known:
            genres = query(con, "SELECT DISTINCT unnest(genres) AS g FROM silver.movies ORDER BY g")[1]
            raise CliError(f"no genre {args.genre!r}; genres: {', '.join(g for (g,) in genres)}")
    if not has_view(con, "gold.popular_movies"):
        raise CliError("nothing is trending (no events streamed yet) and no popular movies to fall back on: "
                       "materialize the MovieLens batch graph")
    print("nothing is trending (no events streamed yet): popular movies (fallback)", file=sys.stderr)
    genre_filter = "" if args.genre is None else "WHERE list_contains(m.genres, ?)"
    columns, rows = query(con, "SELECT row_number() OVER (ORDER BY p.rank) AS rank, p.movie_id, p.title, "
                               "p.num_ratings, 'popular' AS source FROM gold.popular_movies p "
                               f"JOIN silver.movies m USING (movie_id) {genre_filter} ORDER BY p.rank LIMIT ?",
                          (*params, args.limit))
    emit(columns, rows, args.format)


def kafka_lag(data_dir: str) -> tuple[list[tuple], str | None]:
    """Per topic: records in Kafka, of them in bronze, lag — or why Kafka could not be asked."""
    from reco_assets.kafka.client import KafkaSetupError, KafkaUnavailable, kafka_resource, lag_by_topic

    kafka = kafka_resource(resolve=True).model_copy(update={"request_timeout_s": 3.0})
    try:
        offsets = kafka.offsets()
        tps = offsets.partitions()
        end, start = offsets.end(tps), offsets.start(tps)
    except (KafkaUnavailable, KafkaSetupError) as error:
        return [], str(error)
    lag = lag_by_topic(end, start, LakehouseResource(data_dir=data_dir).bronze_offsets())
    return [(topic, *counts) for topic, counts in lag.items()], None


def cmd_stats(con, args) -> None:
    if not has_view(con, "silver.events"):
        raise CliError("no events in the lakehouse yet: stream some (`reco-assets generate-events`) and let the "
                       "sensor's runs land them")
    totals = query(con, "SELECT count(*) AS total_events, count(DISTINCT user_id) AS unique_users, "
                        "count(DISTINCT movie_id) AS unique_movies, max(event_ts) AS last_event_ts, "
                        "max(received_at) AS last_received_at FROM silver.events")
    per_type = query(con, "SELECT event_type, count(*) FROM silver.events GROUP BY event_type ORDER BY event_type")[1]
    rejected = query(con, "SELECT count(*) FROM silver.events_rejected")[1][0][0] \
        if has_view(con, "silver.events_rejected") else 0
    stats = dict(zip(totals[0], totals[1][0], strict=True))
    stats["freshness_seconds"] = seconds_since(stats["last_received_at"])
    stats.update({f"{kind}_events": n for kind, n in per_type}, rejected_records=rejected)
    if has_view(con, "gold.trending_now"):
        stats["trending_now_age_seconds"] = seconds_since(
            query(con, "SELECT max(updated_at) FROM gold.trending_now")[1][0][0])
    lag, problem = kafka_lag(args.data_dir)
    lag_columns = ["topic", "records_in_kafka", "records_in_bronze", "lag"]
    if args.format == "json":
        print(json.dumps({**stats, "kafka_lag": [dict(zip(lag_columns, row, strict=True)) for row in lag],
                          "kafka_problem": problem}, default=str, indent=2))
        return
    emit(["metric", "value"], list(stats.items()), args.format)
    if problem:
        print(f"kafka lag unknown: {problem}", file=sys.stderr)
    else:
        print()
        emit(lag_columns, lag, args.format)


def cmd_kafka(args) -> None:
    from reco_assets import jars
    from reco_assets.kafka.broker import BrokerError, LocalBroker
    from reco_assets.kafka.client import KafkaResource, KafkaSetupError, ensure_topics, kafka_resource

    log = lambda message: print(message, file=sys.stderr)  # noqa: E731
    broker = LocalBroker(args.data_dir, port=args.port)
    try:
        if args.action == "install":
            for name in [*jars.SPARK] if args.spark_only else [*jars.SPARK, jars.BROKER]:
                print(f"{name}: {jars.resolve(name, log=log)}")
        elif args.action == "up":
            status = broker.up(log=log)
            created = ensure_topics(KafkaResource(bootstrap_servers=status.bootstrap_servers).admin())
            print(f"Kafka runs on {status.bootstrap_servers} (pid {status.pid}); topics created: "
                  f"{', '.join(created) or 'none (they exist)'}")
        elif args.action == "down":
            print("stopped" if broker.down(log=log) else "not running")
        elif args.action == "create-topics":
            created = ensure_topics(kafka_resource(resolve=True).admin())
            print(f"topics created: {', '.join(created) or 'none (they exist)'}")
        else:
            status = broker.status()
            print(f"local broker: {status.detail}" + (f" (pid {status.pid}, {status.bootstrap_servers}, "
                                                       f"state in {status.home})" if status.pid else ""))
            show_topics(kafka_resource(resolve=True) if os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
                        else KafkaResource(bootstrap_servers=broker.bootstrap_servers))
    except (BrokerError, KafkaSetupError, jars.JarResolutionError) as error:
        raise CliError(str(error)) from None


def cmd_spark(args) -> None:
    from reco_assets import jars
    from reco_assets.spark_connect import ConnectServer, ConnectServerError

    log = lambda message: print(message, file=sys.stderr)  # noqa: E731
    server = ConnectServer(args.data_dir, port=args.port)
    try:
        if args.action == "up":
            started = time.monotonic()
            status = server.up(log=log)
            print(f"Spark Connect runs on {status.url} (pid {status.pid}), answered a query after "
                  f"{time.monotonic() - started:.1f} s; runs use it with SPARK_REMOTE={status.url}")
        elif args.action == "down":
            print("stopped" if server.down(log=log) else "not running")
        else:
            status = server.status()
            print(f"Spark Connect server: {status.detail}" + (f" (pid {status.pid}, {status.url}, state in "
                                                              f"{status.home})" if status.pid else ""))
    except (ConnectServerError, jars.JarResolutionError) as error:
        raise CliError(str(error)) from None


def show_topics(kafka) -> None:
    from reco_assets.kafka.client import EVENT_TOPICS, KafkaSetupError, KafkaUnavailable

    kafka = kafka.model_copy(update={"request_timeout_s": 3.0})
    try:
        offsets = kafka.offsets()
        tps = offsets.partitions()
        end, start = offsets.end(tps), offsets.start(tps)
    except (KafkaUnavailable, KafkaSetupError) as error:
        print(f"topics at {kafka.bootstrap_servers}: {error}")
        return
    rows = [(topic, sum(1 for t, _ in tps if t == topic), sum(end[tp] - start[tp] for tp in tps if tp[0] == topic))
            for topic in EVENT_TOPICS]
    print(f"topics at {kafka.bootstrap_servers}:")
    emit(["topic", "partitions", "records retained"], rows, "table")


def make_producer(args):
    from reco_assets.events.producer import EventProducer
    from reco_assets.kafka.client import kafka_resource

    return EventProducer(kafka_resource(resolve=True).client_config(), delivery_timeout_s=args.timeout)


def parse_mix(text: str) -> dict[str, float]:
    try:
        mix = {name.strip(): float(weight) for name, weight in (part.split("=") for part in text.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not like view=0.6,click=0.3,rating=0.1") from None
    if set(mix) != {"view", "click", "rating"}:
        raise argparse.ArgumentTypeError(f"the mix needs view, click and rating, got {sorted(mix)}")
    return mix


def cmd_generate_events(args) -> None:
    from reco_assets.bronze.movielens import BUNDLED_SAMPLE
    from reco_assets.events.generator import EventGenerator, load_population
    from reco_assets.events.producer import ProduceError, Progress
    from reco_assets.events.publish import generate_batch, generate_stream

    try:
        generator = EventGenerator(load_population(args.data_dir, BUNDLED_SAMPLE), args.mix, args.invalid_rate,
                                   args.seed)
    except ValueError as error:
        raise CliError(str(error)) from None
    producer = make_producer(args)
    progress = Progress(producer, args.num_events if args.mode == "batch" else None)
    started = time.monotonic()
    try:
        if args.mode == "batch":
            kinds = generate_batch(producer, generator, args.num_events, progress)
        else:
            kinds = generate_stream(producer, generator, args.events_per_second, args.duration, progress)
    except ProduceError as error:
        raise CliError(str(error)) from None
    seconds = time.monotonic() - started
    acked = sum(producer.acked.values())
    print(f"{acked} events acknowledged in {seconds:.1f} s ({acked / seconds:,.0f} ev/s): "
          + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()) if v))


def cmd_replay_movielens(args) -> None:
    from reco_assets.bronze.movielens import BUNDLED_SAMPLE
    from reco_assets.events.generator import ratings_source
    from reco_assets.events.producer import ProduceError, Progress
    from reco_assets.events.publish import replay_movielens

    source = ratings_source(args.data_dir, BUNDLED_SAMPLE)
    producer = make_producer(args)
    started = time.monotonic()
    try:
        sent = replay_movielens(producer, source, args.speedup, args.limit, Progress(producer, args.limit))
    except ProduceError as error:
        raise CliError(str(error)) from None
    print(f"{sent} MovieLens ratings from {source} acknowledged in {time.monotonic() - started:.1f} s")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be greater than 0")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{value} is not within [0, 1]")
    return value


def build_parser() -> Parser:
    parser = Parser(prog="reco-assets", description=__doc__)
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("RECO_DATA_DIR", DEFAULT_DATA_DIR),
        help="the data directory (default: $RECO_DATA_DIR or ./data)",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    def add(name: str, handler, help_text: str, catalog: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if catalog:
            sub.add_argument("--format", choices=["table", "csv", "json"], default="table")
        sub.set_defaults(handler=handler, catalog=catalog)
        return sub

    add("sql", cmd_sql, "run a read-only SQL query against the catalog").add_argument("query")
    recommend = add("recommend", cmd_recommend, "top movies for a user (popular movies for a new user)")
    recommend.add_argument("user_id", type=positive_int)
    recommend.add_argument("--k", type=positive_int, default=10)
    similar = add("similar", cmd_similar, "movies most similar to a movie")
    similar.add_argument("movie_id", type=positive_int)
    similar.add_argument("--k", type=positive_int, default=10)

    trending = add("trending", cmd_trending, "what is trending now, overall or in one genre (gold.trending_now)")
    trending.add_argument("--genre", default=None, help="e.g. Comedy (default: overall)")
    trending.add_argument("--limit", type=positive_int, default=10)
    add("stats", cmd_stats, "event totals, per type, users, movies, freshness and Kafka lag per topic")

    kafka = add("kafka", cmd_kafka, "the project's own Kafka broker on 127.0.0.1 (state in $RECO_DATA_DIR/kafka)",
                catalog=False)
    kafka.add_argument("action", choices=["up", "down", "status", "install", "create-topics"])
    kafka.add_argument("--port", type=positive_int, default=int(os.environ.get("KAFKA_PORT", "9092")),
                       help="broker port (controller: port + 1; default $KAFKA_PORT or 9092)")
    kafka.add_argument("--spark-only", action="store_true",
                       help="install: only the Spark jars (Kafka source, Delta Lake)")
    spark = add("spark", cmd_spark, "the project's warm Spark: a Spark Connect server on 127.0.0.1 that runs use "
                "through SPARK_REMOTE (state in $RECO_DATA_DIR/spark-connect)", catalog=False)
    spark.add_argument("action", choices=["up", "down", "status"])
    spark.add_argument("--port", type=positive_int, default=int(os.environ.get("SPARK_CONNECT_PORT", "15002")),
                       help="server port (default $SPARK_CONNECT_PORT or 15002)")

    def add_producer(name: str, handler, help_text: str) -> argparse.ArgumentParser:
        sub = add(name, handler, help_text, catalog=False)
        sub.add_argument("--timeout", type=positive_float, default=30.0,
                         help="seconds an event may wait for the broker's acknowledgement (default 30)")
        return sub

    generate = add_producer("generate-events", cmd_generate_events,
                            "produce synthetic view / click / rating events to Kafka ($KAFKA_BOOTSTRAP_SERVERS)")
    generate.add_argument("--mode", choices=["batch", "stream"], default="batch")
    generate.add_argument("--num-events", type=positive_int, default=10_000, help="batch mode (default 10000)")
    generate.add_argument("--events-per-second", type=positive_float, default=100.0, help="stream mode")
    generate.add_argument("--duration", type=positive_float, help="stream mode: seconds (default: until Ctrl+C)")
    generate.add_argument("--mix", type=parse_mix, default=None, help="default view=0.6,click=0.3,rating=0.1")
    generate.add_argument("--invalid-rate", type=fraction, default=0.0,
                          help="share of malformed events, of many kinds (default 0)")
    generate.add_argument("--seed", type=int, default=None)
    replay = add_producer("replay-movielens", cmd_replay_movielens,
                          "publish MovieLens ratings as rating events, in timestamp order")
    replay.add_argument("--speedup", type=positive_float, default=None,
                        help="keep the ratings' time gaps divided by this (default: as fast as possible)")
    replay.add_argument("--limit", type=positive_int, default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Dagster marks some of the asset options the project uses as beta; a CLI user cannot act on that.
    warnings.filterwarnings("ignore", message=r".* is currently in beta")
    try:
        args = build_parser().parse_args(argv)
        if args.catalog:
            with connect(args.data_dir) as con:
                args.handler(con, args)
        else:
            args.handler(args)
    except CliError as exc:
        print(f"reco-assets: error: {exc}", file=sys.stderr)
        return 2
    except duckdb.Error as exc:
        print(f"reco-assets: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
