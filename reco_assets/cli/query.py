"""Questions to the catalog: sql, recommend, similar, trending, stats (the API asks the same ones over HTTP)."""

import json
import sys

from reco_assets.cli.common import CliError, emit, positive_int
from reco_assets.kafka.client import kafka_resource
from reco_assets.lakehouse import LakehouseResource, duck
from reco_assets.serving import health, queries


def cmd_sql(con, args) -> None:
    try:
        duck.check_read_only(con, args.query)
    except duck.RefusedQuery as refused:
        raise CliError(str(refused)) from None
    emit(*queries.fetch(con, args.query), args.format)


def show(listing: queries.Listing, fmt: str) -> None:
    if listing.note:
        print(listing.note, file=sys.stderr)
    emit(listing.columns, listing.rows, fmt)


def asked(question):
    """The answer, or the reason there is none as a one-line error."""
    try:
        return question()
    except (queries.Unavailable, queries.NotFound) as error:
        raise CliError(str(error)) from None


def with_source(listing: queries.Listing, source: str) -> queries.Listing:
    """The listing with a `source` column: the model version, or `popular` for a fallback."""
    listing.columns.append("source")
    listing.rows = [(*row, source) for row in listing.rows]
    return listing


def cmd_recommend(con, args) -> None:
    listing = asked(lambda: queries.recommendations(queries.CatalogSource(con), args.user_id, args.k, args.model))
    show(with_source(listing, listing.about.get("model_version", listing.source)), args.format)


def cmd_similar(con, args) -> None:
    show(asked(lambda: queries.similar(queries.CatalogSource(con), args.movie_id, args.k)), args.format)


def cmd_trending(con, args) -> None:
    listing = asked(lambda: queries.trending(queries.CatalogSource(con), args.genre, args.limit))
    if listing.source == "trending":
        print(f"trending {'overall' if args.genre is None else 'in ' + args.genre} as of {listing.about['as_of']} "
              f"UTC (table updated {listing.about['age_seconds']:.0f} s ago)", file=sys.stderr)
    show(listing if listing.source == "trending" else with_source(listing, "popular"), args.format)


def cmd_stats(con, args) -> None:
    stats = asked(lambda: queries.event_stats(con))
    lag, problem = health.kafka_lag(kafka_resource(resolve=True), LakehouseResource(data_dir=args.data_dir))
    if args.format == "json":
        print(json.dumps({**stats, "kafka_lag": [dict(zip(health.LAG_COLUMNS, row, strict=True)) for row in lag],
                          "kafka_problem": problem}, default=str, indent=2))
        return
    emit(["metric", "value"], list(stats.items()), args.format)
    if problem:
        print(f"kafka lag unknown: {problem}", file=sys.stderr)
    else:
        print()
        emit(health.LAG_COLUMNS, lag, args.format)


def register(add) -> None:
    add("sql", cmd_sql, "run a read-only SQL query against the catalog").add_argument("query")
    recommend = add("recommend", cmd_recommend, "top movies for a user (popular movies for a new user)")
    recommend.add_argument("user_id", type=positive_int)
    recommend.add_argument("--k", type=positive_int, default=10)
    recommend.add_argument("--model", choices=sorted(queries.MODELS), default="als",
                           help="als (gold_recommendations, default) or hybrid (gold_hybrid_recommendations)")
    similar = add("similar", cmd_similar, "movies most similar to a movie")
    similar.add_argument("movie_id", type=positive_int)
    similar.add_argument("--k", type=positive_int, default=10)
    trending = add("trending", cmd_trending, "what is trending now, overall or in one genre (gold.trending_now)")
    trending.add_argument("--genre", default=None, help="e.g. Comedy (default: overall)")
    trending.add_argument("--limit", type=positive_int, default=10)
    add("stats", cmd_stats, "event totals, per type, users, movies, freshness and Kafka lag per topic")
