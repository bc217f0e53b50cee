"""Every table of the lakehouse: its layer, its name, how it is partitioned and the DuckDB views that show it.

Each one is a Delta table under `<lakehouse root>/<layer>/<name>`, written by the asset `<layer>_<name>` (see
`TableSpec.asset`). Assets and tools reach a table through `LakehouseResource.table(...)`, never by its path.
"""

from dataclasses import dataclass, field

from reco_assets.lakehouse.hours import HOUR_COLUMN

LAYERS = ("bronze", "silver", "gold")
# bronze_movielens stays the published files with a manifest (a folder under bronze/, not a Delta table).
# The files every MovieLens release since ml-latest-small ships, with their exact header.
MOVIELENS_FILES = {
    "movies.csv": ["movieId", "title", "genres"],
    "ratings.csv": ["userId", "movieId", "rating", "timestamp"],
    "tags.csv": ["userId", "movieId", "tag", "timestamp"],
    "links.csv": ["movieId", "imdbId", "tmdbId"],
}
MOVIELENS_MANIFEST = "_manifest.json"

# silver.event_outcomes holds every bronze record of an hour once: the accepted events and the dead letter are
# written in one commit, so they cannot drift apart. These are the columns of each view.
EVENT_COLUMNS = ["event_id", "event_type", "event_ts", "user_id", "movie_id", "session_id", "device_type",
                 "page_url", "watch_seconds", "click_type", "referrer", "rating", "review_text"]
ACCEPTED_COLUMNS = [*EVENT_COLUMNS, "topic", "partition", "offset", "received_at"]
REJECTED_COLUMNS = ["topic", "partition", "offset", "received_at", "key", "value", "reason", "field", "detail",
                    "event_id"]
# Every column of silver.event_outcomes: the accepted events' (with `event_hash`, the 64-bit hash the window is
# searched by) and the dead letter's, then the partition columns.
OUTCOME_COLUMNS = [*ACCEPTED_COLUMNS, "event_hash", *[c for c in REJECTED_COLUMNS if c not in ACCEPTED_COLUMNS],
                   "rejected", HOUR_COLUMN]
# Their types, where not string.
OUTCOME_TYPES = {"event_ts": "timestamp", "user_id": "int", "movie_id": "int", "watch_seconds": "int",
                 "rating": "double", "partition": "int", "offset": "bigint", "received_at": "timestamp",
                 "event_hash": "bigint", "key": "binary", "value": "binary", "rejected": "boolean"}


@dataclass(frozen=True)
class View:
    """A DuckDB view of a table: a column list (None: all) and a row filter on the table's columns."""

    name: str
    columns: list[str] | None = None
    where: str | None = None


@dataclass(frozen=True)
class TableSpec:
    layer: str
    name: str
    partition_by: tuple[str, ...] = ()
    views: list[View] = field(default_factory=list)
    asset: str = ""  # the asset that writes it, when not `<layer>_<name>`
    # Delta keeps min/max statistics (for data skipping) of this many leading columns (None: Delta's default, 32).
    # Set when wide columns that no query filters on follow: collecting their statistics slows every write.
    stats_columns: int | None = None

    @property
    def properties(self) -> dict[str, str]:
        """Delta table properties, set when the table is created."""
        return {} if self.stats_columns is None else {"delta.dataSkippingNumIndexedCols": str(self.stats_columns)}

    @property
    def qualified(self) -> str:
        return f"{self.layer}.{self.name}"

    @property
    def hourly(self) -> bool:
        return HOUR_COLUMN in self.partition_by

    @property
    def writer(self) -> str:
        return self.asset or f"{self.layer}_{self.name}"

    @property
    def catalog_views(self) -> list[View]:
        return self.views or [View(self.qualified)]


def _spec(qualified: str, **kwargs) -> TableSpec:
    layer, name = qualified.split(".")
    return TableSpec(layer, name, **kwargs)


HOURLY = (HOUR_COLUMN,)
TABLES = {spec.qualified: spec for spec in [
    _spec("bronze.events", partition_by=HOURLY, stats_columns=4),  # not key, value
    _spec("bronze.event_ranges", partition_by=HOURLY, asset="bronze_events"),
    _spec("silver.movies"),
    _spec("silver.ratings"),
    _spec("silver.tags"),
    _spec("silver.links"),
    _spec("silver.event_outcomes", partition_by=(HOUR_COLUMN, "rejected"), asset="silver_events",
          stats_columns=5,  # event_id … movie_id
          views=[View("silver.events", [*ACCEPTED_COLUMNS, HOUR_COLUMN], "NOT rejected"),
                 View("silver.events_rejected", [*REJECTED_COLUMNS, HOUR_COLUMN], "rejected")]),
    _spec("gold.als_factors", asset="als_model"),
    _spec("gold.reco_evaluation"),
    _spec("gold.recommendations"),
    _spec("gold.similar_movies"),
    _spec("gold.popular_movies"),
    _spec("gold.hybrid_recommendations"),
    _spec("gold.trending", partition_by=HOURLY),
    _spec("gold.genre_minute_stats", partition_by=HOURLY),
    _spec("gold.trending_now"),
]}
