"""The Dagster UI end to end: a real dagster-webserver over the batch graph's instance, driven by headless Chromium."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest
from playwright.sync_api import Locator, Page, expect, sync_playwright

from reco_assets.definitions import defs
from reco_assets.services import free_port

pytestmark = pytest.mark.integration

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "ui"
WEBSERVER = Path(sys.executable).with_name("dagster-webserver")
BOGUS_NAME = "no_such_asset_or_sensor"
# Below this zoom the graph draws minimal nodes with middle-truncated names; above it, full nodes with their status.
FULL_NODE_ZOOM = 0.7
LOCATIONS_QUERY = (
    "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus"
    " locationOrLoadError { __typename ... on PythonError { message } } } } } }"
)

expect.set_options(timeout=20_000)


def location_status(base_url: str) -> list[dict]:
    """The code locations the webserver reports, with their load status and any load error."""
    request = urllib.request.Request(f"{base_url}/graphql", data=json.dumps({"query": LOCATIONS_QUERY}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)["data"]["workspaceOrError"]["locationEntries"]


@pytest.fixture(scope="module")
def webserver(batch_graph, tmp_path_factory):
    """`dagster-webserver` on a free port over the batch graph's instance and data dir: its base URL."""
    run, data_dir = batch_graph
    log_path = tmp_path_factory.mktemp("webserver") / "webserver.log"
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": run.instance.root_directory, "RECO_DATA_DIR": str(data_dir)}
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [str(WEBSERVER), "-m", "reco_assets.definitions", "-h", "127.0.0.1", "-p", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline, entries = time.monotonic() + 90, []
        while time.monotonic() < deadline and process.poll() is None:
            try:
                entries = location_status(base_url)
            except OSError:
                entries = []
            if entries and all(entry["loadStatus"] == "LOADED" for entry in entries):
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"dagster-webserver did not serve a loaded code location at {base_url} "
                        f"(exit code {process.poll()}, locations {entries}); its log:\n{log_path.read_text()}")
        errors = [entry["locationOrLoadError"] for entry in entries
                  if entry["locationOrLoadError"]["__typename"] == "PythonError"]
        assert not errors, f"the code location failed to load: {errors}\n{log_path.read_text()}"
        yield base_url
    finally:
        with contextlib.suppress(ProcessLookupError):  # a webserver that died early was reaped already
            os.killpg(process.pid, signal.SIGKILL)  # its graceful stop waited 20 s for nothing the tests need
        process.wait()


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, headless, through Playwright (never a downloaded browser)."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is not on PATH: the UI test needs Debian's `chromium` (scripts/setup.sh installs it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, webserver) -> Page:
    """A fresh page on the webserver, with the "Join the Dagster community" dialog already dismissed."""
    context = browser.new_context(base_url=webserver, viewport={"width": 1600, "height": 1000})
    context.add_init_script("window.localStorage.setItem('communityNux', JSON.stringify('1'))")
    yield context.new_page()
    context.close()


def screenshot(page: Page, name: str) -> None:
    """Save what the page shows as test-artifacts/ui/<name>.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{name}.png")


def asset_node(graph: Locator, name: str) -> Locator:
    """The graph node that carries exactly this asset name."""
    return graph.locator("foreignObject").filter(has=graph.page.get_by_text(name, exact=True))


def expand_and_fit(page: Page, graph: Locator, groups: set[str], see: Path) -> None:
    """Expand every group, size the window so the whole graph fits at full-node zoom, then zoom to fit."""
    for group in groups:
        expect(graph.get_by_text(group, exact=True), f"group {group} not drawn (see {see})").to_be_visible()
    svg = graph.locator("svg").first
    collapsed_height = svg.get_attribute("height")
    page.keyboard.press("Alt+e")  # the graph's "Expand all groups" shortcut
    expect(svg, f"groups did not expand (see {see})").not_to_have_attribute("height", collapsed_height)
    width, height = (float(svg.get_attribute(side)) for side in ("width", "height"))
    box, window = graph.bounding_box(), page.viewport_size
    page.set_viewport_size({"width": int(window["width"] - box["width"] + width * FULL_NODE_ZOOM) + 40,
                            "height": int(window["height"] - box["height"] + height * FULL_NODE_ZOOM) + 40})
    box = graph.bounding_box()
    graph.dblclick(position={"x": 20, "y": box["height"] - 20})  # double-click on the background: zoom to fit


def test_asset_graph_shows_every_asset(page, batch_graph):
    """The global lineage draws every asset of the definitions, the batch ones as materialized."""
    result, _ = batch_graph
    asset_graph = defs.resolve_asset_graph()
    keys = asset_graph.get_all_asset_keys()
    materialized = {event.asset_key for event in result.get_asset_materialization_events()}
    page.goto("/asset-groups")
    graph = page.locator("[data-svg-viewport]")
    path = ARTIFACTS / "asset_graph.png"
    try:
        expand_and_fit(page, graph, {asset_graph.get(key).group_name for key in keys}, path)
        for key in sorted(keys):
            node = asset_node(graph, key.to_user_string())
            expect(node, f"{key.to_user_string()} not drawn on the asset graph (see {path})").to_be_visible()
            if key in materialized:
                expect(node, f"{key.to_user_string()} not shown as materialized (see {path})").to_contain_text(
                    "Materialized")
        expect(asset_node(graph, BOGUS_NAME), f"a bogus asset is drawn (see {path})").to_have_count(0)
    finally:
        screenshot(page, path.stem)


def test_automation_shows_every_sensor_and_schedule(page):
    """The automation page lists the project's sensors and schedules, and nothing that does not exist."""
    names = [automation.name for automation in [*(defs.sensors or []), *(defs.schedules or [])]]
    assert "kafka_events_sensor" in names
    page.goto("/automation")
    path = ARTIFACTS / "automation.png"
    try:
        for name in names:
            expect(page.get_by_text(name, exact=True), f"{name} not listed (see {path})").to_be_visible()
        expect(page.get_by_text(BOGUS_NAME, exact=True), f"a bogus automation is listed (see {path})").to_have_count(0)
    finally:
        screenshot(page, path.stem)


def test_gold_asset_page_shows_latest_metadata(page, batch_graph):
    """gold_reco_evaluation's page shows the metadata of the instance's latest materialization."""
    key = dg.AssetKey("gold_reco_evaluation")
    metadata = batch_graph[0].instance.get_latest_materialization_event(key).asset_materialization.metadata
    page.goto(f"/assets/{key.to_user_string()}")
    path = ARTIFACTS / "gold_reco_evaluation.png"

    def value_cell(name: str) -> Locator:
        row = page.locator("tr").filter(has=page.locator("xpath=./td[1]").get_by_text(name, exact=True))
        return row.locator("xpath=./td[last()]")

    try:
        for name in ("model_version", "users_evaluated"):
            expect(value_cell(name), f"{name} not shown (see {path})").to_have_text(str(metadata[name].value))
        ratio = value_cell("ndcg_ratio_als_vs_popularity")
        expect(ratio, f"ndcg_ratio_als_vs_popularity not shown (see {path})").to_be_visible()
        assert float(ratio.inner_text()) == pytest.approx(metadata["ndcg_ratio_als_vs_popularity"].value), (
            f"ndcg_ratio_als_vs_popularity differs from the instance's latest materialization (see {path})")
        expect(value_cell(BOGUS_NAME), f"a bogus metadata key is shown (see {path})").to_have_count(0)
        value_cell("model_version").scroll_into_view_if_needed()
    finally:
        screenshot(page, path.stem)
