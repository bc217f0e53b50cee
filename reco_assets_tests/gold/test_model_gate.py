"""The model gate: a retrained ALS that loses to popularity is not served; the previous model stays."""

import dagster as dg
import pytest

from reco_assets.lakehouse import LakehouseResource
from reco_assets_tests.conftest import SMALL_EVALUATION_HYBRID, copy_tables, materialize

pytestmark = pytest.mark.integration

# Regularised to nothing: every user's scores come out flat, so ALS ranks no better than chance.
BAD_ALS = {"ops": {"als_model_and_evaluation": {"config": {
    "rank": 2, "max_iter": 1, "reg_param": 1000.0, "report_rmse": False, "global_temporal": False,
    "hybrid": SMALL_EVALUATION_HYBRID}}}}
SERVED = ("gold.als_factors", "gold.recommendations")


def test_a_model_that_loses_to_popularity_is_not_served(batch_graph, spark, dagster_instance, tmp_path):
    _, batch_dir = batch_graph
    copy_tables(batch_dir, tmp_path, "silver.movies", "silver.ratings", "silver.tags", *SERVED)
    lakehouse = LakehouseResource(data_dir=str(tmp_path))
    before = {name: lakehouse.table(name).version() for name in SERVED}
    served_model = lakehouse.table("gold.recommendations").read(spark).first()["model_version"]

    result = materialize(["als_model", "gold_reco_evaluation", "gold_recommendations"], tmp_path, dagster_instance,
                         run_config=BAD_ALS, raise_on_error=False)

    assert not result.success
    (gate,) = [c for c in result.get_asset_check_evaluations() if c.check_name == "als_beats_popularity"]
    metadata = {key: value.value for key, value in gate.metadata.items()}
    assert not gate.passed and metadata["als_ndcg"] < metadata["popularity_ndcg"], metadata
    assert gate.severity == dg.AssetCheckSeverity.ERROR
    assert {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()} == {
        "gold_reco_evaluation"}
    # What is served is untouched: the same versions, the same model.
    assert {name: lakehouse.table(name).version() for name in SERVED} == before
    assert lakehouse.table("gold.recommendations").read(spark).first()["model_version"] == served_model
    # The failed check is what the UI shows for the asset.
    key = dg.AssetCheckKey(dg.AssetKey("gold_reco_evaluation"), "als_beats_popularity")
    record = dagster_instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]
    assert record.run_id == result.run_id and record.status.value == "FAILED"

