"""Shared fixtures: one local Spark session and one materialized batch graph per test session."""

import functools
import http.server
import threading
from pathlib import Path

import dagster as dg
import pytest
from dagster_pyspark.resources import spark_session_from_config

from reco_assets.definitions import defs
from reco_assets.resources import LakehouseResource, spark_config


@pytest.fixture(scope="session")
def spark():
    """The same local Spark session the assets use (getOrCreate returns it to them too)."""
    session = spark_session_from_config(spark_config())
    yield session
    session.stop()


def materialize(selection: str, data_dir: Path, instance: dg.DagsterInstance, run_config=None, raise_on_error=True):
    """Materialize a selection of the project's real assets (and their checks) into `data_dir`."""
    return dg.materialize(
        [*defs.assets, *defs.asset_checks],
        selection=selection,
        resources={**defs.resources, "lakehouse": LakehouseResource(data_dir=str(data_dir))},
        instance=instance,
        run_config=run_config,
        raise_on_error=raise_on_error,
    )


@pytest.fixture(scope="session")
def dagster_instance(tmp_path_factory):
    with dg.instance_for_test(temp_dir=str(tmp_path_factory.mktemp("dagster_home"))) as instance:
        yield instance


@pytest.fixture(scope="session")
def batch_graph(tmp_path_factory, dagster_instance, spark):
    """The whole batch graph materialized on the bundled sample: (execution result, data dir)."""
    data_dir = tmp_path_factory.mktemp("reco_data")
    result = materialize("*", data_dir, dagster_instance)
    return result, data_dir


@pytest.fixture
def http_server(tmp_path):
    """A loopback HTTP server over a temporary folder: (folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass
