"""The daily retrain: what its schedule runs, and when."""

import dagster as dg

from reco_assets.definitions import defs
from reco_assets.schedules import als_retrain_job, daily_als_retrain


def test_schedule_retrains_als_and_refreshes_everything_served_from_it():
    schedule = defs.resolve_schedule_def("daily_als_retrain")
    assert schedule.job_name == "als_retrain_job"
    selected = {key.to_user_string() for key in als_retrain_job.selection.resolve(defs.resolve_asset_graph())}
    assert {"als_model", "gold_reco_evaluation", "gold_recommendations", "gold_similar_movies",
            "gold_hybrid_recommendations", "duckdb_catalog"} <= selected
    assert not selected & {"bronze_movielens", "silver_ratings", "silver_events", "gold_popular_movies"}, selected


def test_schedule_runs_daily_at_three_utc_is_on_by_default_and_runs_the_checks():
    assert daily_als_retrain.cron_schedule == "0 3 * * *"
    assert daily_als_retrain.execution_timezone == "UTC"
    assert daily_als_retrain.default_status == dg.DefaultScheduleStatus.RUNNING
    checks = {key.name for key in defs.resolve_job_def("als_retrain_job").asset_layer.asset_graph.asset_check_keys}
    assert {"hybrid_excludes_seen", "recommendations_exclude_rated", "als_beats_popularity"} <= checks
