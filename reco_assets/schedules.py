"""The daily ALS retrain: the model, its evaluation, and everything served from it."""

import dagster as dg

# als_model and gold_reco_evaluation are one multi-asset; downstream: recommendations, similar movies, the
# hybrid and the DuckDB catalog.
als_retrain_job = dg.define_asset_job(
    "als_retrain_job",
    selection=dg.AssetSelection.assets("als_model", "gold_reco_evaluation").downstream(),
    description="Retrain ALS on every rating and streamed event, re-evaluate it, and refresh what is served from it.",
)

daily_als_retrain = dg.ScheduleDefinition(
    name="daily_als_retrain",
    job=als_retrain_job,
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every day at 03:00 UTC: retrain ALS with the day's events and refresh the recommendations.",
)
