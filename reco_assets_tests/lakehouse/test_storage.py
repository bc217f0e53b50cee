"""The lakehouse on S3 for real: a real S3-compatible server (S3Proxy), Spark's s3a:// in a run process of its own,
delta-rs, and DuckDB's httpfs in the catalog."""

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from pyarrow import fs

from reco_assets.bronze import movielens
from reco_assets.bronze.events import range_rows
from reco_assets.cli import main
from reco_assets.lakehouse import storage
from reco_assets.services import free_port
from reco_assets_tests.bronze.test_movielens import TINY, make_zip
from reco_assets_tests.conftest import ROOT, materialize

pytestmark = pytest.mark.integration


def bronze_config(source: str) -> dict:
    return {"ops": {"bronze_movielens": {"config": {"source": source}}}}


def refusal(uri: str) -> str:
    with pytest.raises(storage.StorageError) as refused:
        storage.check(uri)
    return str(refused.value)


def test_check_names_the_setting_to_fix(lakehouse_on_s3, monkeypatch):
    storage.check(lakehouse_on_s3.location)
    storage.check("/a/local/folder")
    missing = refusal("s3a://nobucket/reco")
    assert "bucket 'nobucket'" in missing and "does not exist" in missing
    assert "use the s3a:// scheme" in refusal("s3://lake/reco")
    assert "either s3a://bucket/prefix or a local folder" in refusal("gs://lake/reco")
    with monkeypatch.context() as wrong:
        wrong.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        refused = refusal("s3a://lake/reco")
        assert "refused the credentials" in refused and "not-the-secret" not in refused
    with monkeypatch.context() as unset:
        unset.delenv("AWS_ACCESS_KEY_ID")
        assert "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set" in refusal("s3a://lake/reco")
    with monkeypatch.context() as schemeless:
        schemeless.setenv("AWS_ENDPOINT_URL", "127.0.0.1:9000")
        assert "give the S3 endpoint as http://host:port" in refusal("s3a://lake/reco")
    with monkeypatch.context() as unreachable:
        unreachable.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
        assert "cannot reach the lakehouse's S3 endpoint" in refusal("s3a://lake/reco")


def test_a_run_on_a_missing_bucket_fails_before_any_step_with_the_reason(lakehouse_on_s3, monkeypatch, tmp_path):
    monkeypatch.setenv("RECO_LAKEHOUSE_URI", "s3a://nobucket/reco")
    with dg.instance_for_test() as instance:
        result = materialize("bronze_movielens", tmp_path, instance, bronze_config("bundled"), raise_on_error=False)
    assert not result.success
    assert not result.get_step_success_events()
    failure = next(e for e in result.all_events if e.event_type_value == "RESOURCE_INIT_FAILURE")
    reason = str(failure.event_specific_data)
    assert "bucket 'nobucket' of RECO_LAKEHOUSE_URI=s3a://nobucket/reco does not exist" in reason
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in str([e.message for e in result.all_events])


def test_movielens_lands_on_s3_and_a_landing_replaces_the_manifest_then_old_copies(lakehouse_on_s3, tmp_path):
    with dg.instance_for_test() as instance:
        result = materialize("bronze_movielens", tmp_path, instance,
                             bronze_config(str(make_zip(tmp_path / "ok.zip", TINY))))
    path = result.asset_materializations_for_node("bronze_movielens")[0].metadata["path"].value
    assert path.startswith(lakehouse_on_s3.movielens_dir + "/landed-")
    manifest = lakehouse_on_s3.movielens_manifest()
    assert {f["name"]: f.get("rows") for f in manifest["files"]}["ratings.csv"] == 3
    s3, folder = storage.filesystem(lakehouse_on_s3.movielens_dir)
    assert s3.get_file_info(f"{folder}/{manifest['folder']}/ratings.csv").size == len(TINY["ratings.csv"])
    assert not any((tmp_path / "downloads").rglob("*.csv"))  # the local landing is gone once uploaded

    # Publishing a newer copy keeps the one it replaces (readers may have it open) and a landing of another run
    # still in progress; it removes a leftover whose landing started hours ago.
    files = tmp_path / "a-copy"
    files.mkdir()
    (files / "ratings.csv").write_text("userId,movieId,rating,timestamp\n")
    stale = movielens.landed_name(datetime.now(UTC) - movielens.STALE_LANDING - timedelta(minutes=1))
    in_progress = movielens.landed_name(datetime.now(UTC) - timedelta(minutes=30))
    newer = movielens.landed_name()
    for name in (stale, in_progress, newer):
        movielens.upload(files, storage.join(lakehouse_on_s3.movielens_dir, name))
    movielens.publish(lakehouse_on_s3.movielens_dir, newer, manifest)
    names = {e.base_name for e in s3.get_file_info(fs.FileSelector(folder)) if e.type == fs.FileType.Directory}
    assert names == {manifest["folder"], in_progress, newer}
    assert lakehouse_on_s3.movielens_manifest()["folder"] == newer
    assert s3.get_file_info(f"{folder}/{newer}/ratings.csv").type == fs.FileType.File


def test_spark_writes_delta_on_s3_and_the_catalog_and_cli_read_it(lakehouse_on_s3, tmp_path, capsys):
    """A run process of its own (local Spark with hadoop-aws) writes bronze and silver on S3; delta-rs reads its
    versions, and `reco-assets sql` reads the catalog's views over S3."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").symlink_to(ROOT / "dagster.yaml")
    env = {**os.environ, "RECO_DATA_DIR": str(tmp_path), "DAGSTER_HOME": str(home)}
    env.pop("SPARK_REMOTE", None)
    done = subprocess.run([str(ROOT / ".venv/bin/dagster"), "asset", "materialize", "-m", "reco_assets.definitions",
                           "--select", "bronze_movielens,silver_movies,duckdb_catalog"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in done.stdout + done.stderr

    movies = lakehouse_on_s3.table("silver.movies")
    assert movies.uri == f"{os.environ['RECO_LAKEHOUSE_URI']}/silver/movies"
    assert movies.version() == 0
    assert not Path(tmp_path, "lakehouse").exists()  # nothing of the tables on local disk

    assert main(["--data-dir", str(tmp_path), "sql", "--format", "json",
                 "SELECT count(*) AS n FROM silver.movies"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 9742}]
    assert main(["--data-dir", str(tmp_path), "sql", "--format", "json",
                 "SELECT count(*) AS n FROM bronze.movielens_ratings"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 100836}]


def test_rows_in_memory_commit_on_s3_with_delta_rs(lakehouse_on_s3):
    """What live runs do on S3: bronze.event_ranges replaced and appended from the run's process (delta-rs), one
    commit each, read back from the log and the files."""
    ranges = lakehouse_on_s3.table("bronze.event_ranges")
    hour = "2026-11-05-10:00"
    row = ("events_views", 0, 0, 5, 5, False, True, datetime(2026, 11, 5, 10, tzinfo=UTC), "test", "2026-11-05-10")
    first = ranges.replace_hours(range_rows([row]), [hour])
    second = ranges.append_to_hour(range_rows([(*row[:2], 5, 9, 4, *row[5:])]), hour)
    third = ranges.replace_hours(range_rows([(*row[:2], 0, 9, 9, *row[5:])]), [hour])
    assert (first.version, second.version, third.version) == (0, 1, 2) and third.rows == 1
    assert ranges.hour_counts([hour], 1) == {hour: 2} and ranges.hour_counts([hour], 2) == {hour: 1}
    assert ranges.arrow([hour], 2, ["end_offset"]).to_pylist() == [{"end_offset": 9}]


# A run's Spark resource set up as a run sets it up, over Spark Connect, in a process of its own.
CONNECT_SETUP = """
import sys
import dagster as dg
from reco_assets.resources import spark_resource
resource = spark_resource()
try:
    resource.setup_for_execution(dg.build_init_resource_context())
except dg.Failure as failure:
    print(failure.description)
    print("server jars with Delta:", "delta-spark" in resource.spark_session.conf.get("spark.jars", ""))
    sys.exit(3)
print("ready")
"""


def test_a_connect_server_started_without_the_s3_settings_is_refused(connect_server, lakehouse_on_s3):
    """`connect_server` comes first: it starts (if not running yet) before the S3 settings are in the environment."""
    done = subprocess.run([sys.executable, "-c", CONNECT_SETUP], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "SPARK_REMOTE": connect_server.url})
    assert done.returncode == 3, done.stdout + done.stderr[-3000:]
    assert f"the Spark Connect server at {connect_server.url} was started without the lakehouse's S3" in done.stdout
    assert "server jars with Delta: True" in done.stdout  # the server's settings were read, and lack only S3
