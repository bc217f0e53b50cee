"""bronze_movielens materialized for real against a temporary Dagster instance."""

import json

import dagster as dg

from reco_assets_tests.bronze.test_movielens import TINY, make_zip, publish
from reco_assets_tests.conftest import materialize


def bronze_config(source: str) -> dict:
    return {"ops": {"bronze_movielens": {"config": {"source": source}}}}


def test_url_source_lands_and_reports_rows(tmp_path, http_server, monkeypatch):
    www, base = http_server
    publish(www, "ml-latest-small.zip", TINY)
    monkeypatch.setenv("MOVIELENS_BASE_URL", base)
    with dg.instance_for_test() as instance:
        result = materialize("bronze_movielens", tmp_path, instance, bronze_config("ml-latest-small"))
    metadata = result.asset_materializations_for_node("bronze_movielens")[0].metadata
    assert metadata["rows_ratings"].value == 3
    assert metadata["source"].value == f"{base}/ml-latest-small.zip"
    manifest = json.loads((tmp_path / "lakehouse/bronze/movielens/_manifest.json").read_text())
    assert manifest["source"]["md5"]


def test_bad_source_fails_with_reason_and_keeps_previous_copy(tmp_path):
    with dg.instance_for_test() as instance:
        materialize("bronze_movielens", tmp_path, instance, bronze_config(str(make_zip(tmp_path / "ok.zip", TINY))))
        landed = tmp_path / "lakehouse/bronze/movielens"
        before = (landed / "_manifest.json").read_text()

        bad = make_zip(tmp_path / "bad.zip", {**TINY, "movies.csv": "id,name\n1,x\n"})
        result = materialize("bronze_movielens", tmp_path, instance, bronze_config(str(bad)), raise_on_error=False)

    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "movies.csv has header 'id,name'" in failure.step_failure_data.user_failure_data.description
    assert (landed / "_manifest.json").read_text() == before
    current = landed / json.loads(before)["folder"]
    assert (current / "movies.csv").read_text() == TINY["movies.csv"]
    assert sorted(p.name for p in landed.iterdir()) == ["_manifest.json", current.name], "the refused copy is gone"
