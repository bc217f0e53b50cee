"""The project's own files: definitions load, docker-compose matches the settings, the sample is complete."""

from pathlib import Path

import dagster as dg
import yaml

from reco_assets.bronze.movielens import BUNDLED_SAMPLE, EXPECTED_HEADERS
from reco_assets.definitions import defs

ROOT = Path(__file__).resolve().parents[1]


def test_definitions_load_with_every_layer():
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {
        "bronze_movielens",
        "silver_ratings",
        "gold_recommendations",
        "gold_reco_evaluation",
        "duckdb_catalog",
    } <= keys
    groups = {defs.resolve_assets_def(k).group_names_by_key[dg.AssetKey(k)] for k in keys}
    assert groups == {"bronze", "silver", "gold", "catalog"}
    assert defs.resolve_job_def("movielens_batch_job")


def test_bundled_sample_keeps_its_licence():
    assert (BUNDLED_SAMPLE / "README.txt").read_text().count("redistribute") >= 1
    for name in EXPECTED_HEADERS:
        assert (BUNDLED_SAMPLE / name).is_file()


def test_docker_compose_matches_project_settings():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"dagster-webserver", "dagster-daemon"} <= set(services)
    assert "127.0.0.1:3000:3000" in services["dagster-webserver"]["ports"]
    for service in services.values():
        assert service["environment"]["RECO_DATA_DIR"] == "/data"
        assert "reco-data:/data" in service["volumes"]
    assert (ROOT / "Dockerfile").is_file()


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci/run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
