"""The one Definitions object of the project: `dagster dev -m reco_assets.definitions`."""

import dagster as dg

from reco_assets.bronze import bronze_movielens
from reco_assets.bronze.events import bronze_events, kafka_event_topics
from reco_assets.catalog import duckdb_catalog
from reco_assets.gold import gold_assets, gold_checks
from reco_assets.gold.stream import stream_gold_assets
from reco_assets.kafka.client import kafka_resource
from reco_assets.lakehouse import DEFAULT_DATA_DIR, LakehouseResource
from reco_assets.resources import env_or_default, spark_resource
from reco_assets.schedules import (
    als_retrain_job,
    daily_als_retrain,
    hourly_lakehouse_maintenance,
    lakehouse_maintenance_job,
)
from reco_assets.sensors import events_job, kafka_events_sensor
from reco_assets.silver import silver_assets, silver_checks
from reco_assets.silver.events import silver_events

batch_graph_job = dg.define_asset_job(
    "movielens_batch_job",
    selection=dg.AssetSelection.all() - events_job.selection,
    description="Bronze → silver → gold on MovieLens, then the DuckDB catalog.",
)

defs = dg.Definitions(
    assets=[kafka_event_topics, bronze_movielens, *silver_assets, *gold_assets, bronze_events, silver_events,
            *stream_gold_assets, duckdb_catalog],
    asset_checks=[*silver_checks, *gold_checks],
    jobs=[batch_graph_job, events_job, als_retrain_job, lakehouse_maintenance_job],
    schedules=[daily_als_retrain, hourly_lakehouse_maintenance],
    sensors=[kafka_events_sensor],
    resources={
        "lakehouse": LakehouseResource(data_dir=env_or_default("RECO_DATA_DIR", DEFAULT_DATA_DIR)),
        "pyspark": spark_resource(),
        "kafka": kafka_resource(),
    },
    # One process per run: the run's assets share one Spark session instead of starting a JVM per step.
    executor=dg.in_process_executor,
)
