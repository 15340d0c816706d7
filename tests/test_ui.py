"""The Dagster UI and the MLflow UI in a real headless Chromium (Debian's package), on loopback.

`dagster dev` serves the tiny project; the browser opens the asset graph, launches a materialization
from the asset's page and waits for the run to succeed; then the MLflow UI shows that step's run.
With UPDATE_SCREENSHOTS=1 the screenshots are written to docs/screenshots for the README.
"""

import os
import subprocess
import time
from pathlib import Path

import dagster as dg
import mlflow
import pytest

from tests.test_orchestration import ROOT, copy_project, env_for
from tools.lifecycle_screenshot import (
    CHROMIUM,
    chromium_page,
    dagster_dev,
    dismiss_newsletter,
    free_port,
    graphql,
    stop,
    wait_http,
)

pytestmark = [pytest.mark.ui, pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.is_file(), reason="Debian's chromium is not installed")]


def shots_dir(tmp_path: Path) -> Path:
    if os.environ.get("UPDATE_SCREENSHOTS"):
        d = ROOT / "docs" / "screenshots"
        d.mkdir(parents=True, exist_ok=True)
        return d
    return tmp_path


@pytest.mark.timeout(900)
def test_asset_graph_materialize_from_the_ui_and_see_the_mlflow_run(tmp_path):
    from playwright.sync_api import expect

    root = copy_project(tmp_path / "project")
    env = env_for(root)
    (Path(env["DAGSTER_HOME"]) / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    mlflow_port = free_port()
    shots = shots_dir(tmp_path)
    mlflow_proc = None
    try:
        with dagster_dev(root, env) as url, chromium_page(1500, 900) as page:
            group = f"{url}/locations/orchestration.definitions/asset-groups"
            page.goto(f"{group}/world/lineage", wait_until="networkidle")
            dismiss_newsletter(page)
            expect(page.get_by_text("world_pairs").first).to_be_visible(timeout=60_000)
            for _ in range(3):  # the button may answer only once the page has loaded the definitions
                page.goto(f"{url}/assets/world_benchmark", wait_until="networkidle")
                page.wait_for_timeout(3000)
                page.get_by_text("Materialize", exact=True).first.click(timeout=60_000)
                page.wait_for_timeout(5000)
                page.goto(f"{url}/runs", wait_until="networkidle")
                if page.get_by_text("Manually launched").count():
                    break
            else:
                raise AssertionError("clicking Materialize launched no run")
            # the run succeeds: watch it from the UI's runs page
            deadline = time.time() + 420
            while time.time() < deadline:
                page.goto(f"{url}/runs", wait_until="networkidle")
                page.wait_for_timeout(1000)
                if page.get_by_text("Success", exact=True).count() > 0:
                    break
                if page.get_by_text("Failure", exact=True).count() > 0:
                    raise AssertionError("the materialization launched from the UI failed")
                time.sleep(3)
            else:
                raise AssertionError("the run launched from the UI did not succeed in 420s")
            page.goto(f"{group}/evaluation/lineage", wait_until="networkidle")
            expect(page.get_by_text("world_benchmark").first).to_be_visible(timeout=30_000)
            page.wait_for_timeout(1500)
            page.screenshot(path=str(shots / "dagster_asset_graph.png"))
            instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
            assert instance.get_latest_materialization_event(dg.AssetKey("world_benchmark")) is not None
            reexecute_through_graphql(url)

            uri = f"sqlite:///{root}/mlflow.db"
            mlflow_proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "mlflow"), "server", "--backend-store-uri",
                                            uri, "-h", "127.0.0.1", "-p", str(mlflow_port)], cwd=root, env=env,
                                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                           start_new_session=True)
            wait_http(f"http://127.0.0.1:{mlflow_port}/health", 120, mlflow_proc)
            client = mlflow.MlflowClient(uri)
            exp = client.get_experiment_by_name("compodiff")
            run = client.search_runs([exp.experiment_id], "tags.`dagster.asset` = 'world_benchmark'")[0]
            page.goto(f"http://127.0.0.1:{mlflow_port}/#/experiments/{exp.experiment_id}/runs/{run.info.run_id}",
                      wait_until="load", timeout=90_000)  # the MLflow page keeps polling: it never goes network-idle
            expect(page.get_by_text("world_benchmark").first).to_be_visible(timeout=60_000)
            page.wait_for_timeout(1500)
            page.screenshot(path=str(shots / "mlflow_run.png"))
    finally:
        if mlflow_proc is not None:
            stop(mlflow_proc)


def reexecute_through_graphql(url: str) -> None:
    """The UI's "Re-execute all" is this mutation: the run it makes succeeds, as a child of the first."""
    runs = graphql(url, "{ runsOrError(limit: 1) { ... on Runs { results { runId jobName status } } } }")
    parent = runs["runsOrError"]["results"][0]
    assert parent["status"] == "SUCCESS" and not parent["jobName"].startswith("__ephemeral"), parent
    launched = graphql(url, """mutation($parent: String!) {
        launchRunReexecution(reexecutionParams: {parentRunId: $parent, strategy: ALL_STEPS}) {
          __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }""",
                       parent=parent["runId"])["launchRunReexecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    child = launched["run"]["runId"]
    deadline = time.time() + 420
    while time.time() < deadline:
        run = graphql(url, """query($id: ID!) { runOrError(runId: $id) { ... on Run { status parentRunId jobName
                      } } }""", id=child)["runOrError"]
        if run["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(3)
    assert run == {"status": "SUCCESS", "parentRunId": parent["runId"], "jobName": parent["jobName"]}, run
