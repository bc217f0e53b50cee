"""README's commands, as written, run in a folder set up like a checkout: each fails the test when it fails."""

import json
import os
import re
import subprocess

import dagster as dg
import pytest

from reco_assets_tests.conftest import ROOT, Api, checkout_like, readme_blocks, run_readme

pytestmark = pytest.mark.integration


@pytest.fixture
def batch_checkout(batch_graph, tmp_path):
    """A checkout-like folder whose `data` is the materialized batch graph's."""
    folder = checkout_like(tmp_path)
    (folder / "data").symlink_to(batch_graph[1])
    return folder


def test_headless_batch_graph_ran_every_asset(batch_graph):
    """The batch_graph fixture is README's headless command; `make materialize` runs that same job."""
    run, _ = batch_graph
    assert run.success and run.run.job_name == "movielens_batch_job"
    command = readme_blocks("Headless")[0].splitlines()[-1]
    recipe = re.search(r"^materialize:.*?\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert command.removeprefix(".venv/bin/") in recipe.replace("\\\n", " "), (command, recipe)


def test_the_launchpad_example_is_run_config_the_batch_job_accepts():
    """The launchpad YAML of "Using the UI", as written: an unknown or mistyped key would fail in the UI."""
    import yaml

    from reco_assets.definitions import defs

    example, = readme_blocks("Using the UI", "yaml")
    config = yaml.safe_load(example)
    assert dg.validate_run_config(defs.resolve_job_def("movielens_batch_job"), config)
    with pytest.raises(dg.DagsterInvalidConfigError, match="rnak"):
        config["ops"]["als_model_and_evaluation"]["config"]["rnak"] = 64
        dg.validate_run_config(defs.resolve_job_def("movielens_batch_job"), config)


def test_headless_event_hours(kafka, connect_server, tmp_path):
    """One hour, then a range of hours in one run, against the real broker and, as in a shell of `make run`, the
    warm Spark Connect server. The commands and the runs are what is tested (the hours hold few records, if any);
    the event path itself is tested in test_events_pipeline, and the headless batch job runs in local Spark."""
    folder = checkout_like(tmp_path)
    setup = "\n".join(line for line in readme_blocks("Headless")[0].splitlines() if not line.startswith(".venv/"))
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers, "SPARK_REMOTE": connect_server.url}
    run_readme(setup + "\n" + readme_blocks("Headless")[1], folder, env, timeout=600)
    with dg.DagsterInstance.from_config(str(folder / "data" / "dagster_home")) as instance:
        runs = instance.get_runs()
        assert len(runs) == 2 and all(r.is_success for r in runs)
        tags = [r.tags for r in reversed(runs)]
    assert "dagster/partition" in tags[0]
    start, end = tags[1]["dagster/asset_partition_range_start"], tags[1]["dagster/asset_partition_range_end"]
    assert start < end < tags[0]["dagster/partition"]


def test_querying_with_duckdb(batch_checkout):
    """The CLI commands and the Python snippet of "Querying with DuckDB"."""
    shell, = readme_blocks("Querying with DuckDB")
    done = run_readme(shell, batch_checkout, dict(os.environ), timeout=300)
    assert "Forrest Gump" in done.stdout and "ndcg" in done.stdout
    python, = readme_blocks("Querying with DuckDB", "python")
    done = subprocess.run([str(ROOT / ".venv/bin/python"), "-c", python], cwd=batch_checkout, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "rank" in done.stdout and "title" in done.stdout


def test_time_travel(batch_checkout):
    """"Versions and time travel": the history and a read as of version 0, in local Spark."""
    snippet, = readme_blocks("Versions and time travel")
    env = {k: v for k, v in os.environ.items() if k != "SPARK_REMOTE"}
    done = run_readme(snippet, batch_checkout, env, timeout=300)
    assert "WRITE" in done.stdout and "|user_id|" in done.stdout.replace(" ", "")


def test_the_http_api(batch_checkout, kafka):
    """"The HTTP API": every curl command, against `reco-assets serve` over the batch graph (on a free port)."""
    block, = readme_blocks("The HTTP API")
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers}
    api = Api(batch_checkout / "data", kafka.bootstrap_servers, batch_checkout / "serve.log")
    try:
        done = run_readme(block.replace("http://127.0.0.1:8000", api.base), batch_checkout, env, timeout=120)
    finally:
        api.stop()
    answers, text, decoder = [], done.stdout, json.JSONDecoder()
    while text.strip():
        answer, end = decoder.raw_decode(text.strip())
        answers.append(answer)
        text = text.strip()[end:]
    assert [a.get("source") for a in answers[:5]] == ["als", "hybrid", "popular", "similar", "popular"], answers
    assert "materialize silver_events" in answers[5]["detail"]  # no events in the batch graph
    health = answers[6]
    assert health["kafka"]["reachable"] and all(health["tables"][t]["version"] == 0 for t in (
        "gold.recommendations", "gold.similar_movies", "gold.popular_movies", "silver.movies")), health
    # The session's broker holds other tests' records, which this checkout's bronze does not: they wait.
    assert all("records wait in Kafka" in problem for problem in health["problems"]), health
