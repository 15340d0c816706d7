"""Screenshots of the lifecycle in the Dagster and MLflow UIs, in Debian's headless Chromium, on loopback.

On a project after `compodiff lifecycle` (its .dagster_home and mlflow.db), four pages:
- `run`: the latest run of the lifecycle job, its steps on the Gantt chart;
- `stale`: the whole asset graph after a params change (``--set KEY=VALUE``, restored afterwards):
  the steps that read the key show a changed code version, and their downstream is marked;
- `mlflow-runs`: the experiment's run tree, the lifecycle's grouping run with its steps as children;
- `mlflow-model`: the registered model `compodiff-stage2`, its versions and the `champion` alias.

  .venv/bin/python tools/lifecycle_screenshot.py --root . --pages run stale mlflow-runs mlflow-model \
      --set combiner.steps=401 --out-dir docs/screenshots
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, proc: subprocess.Popen, log=None) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            said = (log.seek(0), log.read())[1] if log else (proc.stdout.read() if proc.stdout else "")
            raise RuntimeError(f"server exited with {proc.returncode}: {said[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"{url} did not answer in {timeout}s")


def graphql(url: str, query: str, timeout: float = 60, **variables) -> dict:
    """One query to the Dagster webserver's GraphQL API; its ``data``, after asserting it has no errors."""
    import httpx

    r = httpx.post(f"{url}/graphql", json={"query": query, "variables": variables}, timeout=timeout)
    assert r.status_code == 200 and "errors" not in r.json(), r.text
    return r.json()["data"]


def latest_lifecycle_run(home: Path) -> str:
    import dagster as dg

    runs = dg.DagsterInstance.from_config(str(home)).get_runs(dg.RunsFilter(job_name="lifecycle"), limit=1)
    if not runs:
        raise SystemExit(f"no lifecycle run in {home}: run `compodiff lifecycle` first")
    return runs[0].run_id


@contextlib.contextmanager
def loopback_server(cmd: list[str], health: str, cwd: Path, env: dict | None = None):
    """``cmd`` with ``-h 127.0.0.1 -p PORT`` appended, on a free port, until ``health`` answers; yields its
    URL. Its output goes to a temp file, not a pipe nobody reads (a full pipe would stall the server)."""
    import tempfile

    port = free_port()
    with tempfile.TemporaryFile("w+") as log:
        server = subprocess.Popen([*cmd, "-h", "127.0.0.1", "-p", str(port)], cwd=cwd, env=env, stdout=log,
                                  stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_http(f"{url}{health}", 180, server, log)
            yield url
        finally:
            stop(server)


def dagster_dev(root: Path, env: dict):
    """`dagster dev` on the project at ``root``, on a free loopback port; yields its URL."""
    return loopback_server([str(ROOT / ".venv" / "bin" / "dagster"), "dev", "-m", "orchestration.definitions"],
                           "/server_info", root, env)


def stop(server: subprocess.Popen) -> None:
    try:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, 9)


@contextlib.contextmanager
def chromium_page(width: int = 1600, height: int = 1000):
    """A page of Debian's headless Chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def dismiss_newsletter(page) -> None:
    try:  # the Dagster UI's first-visit newsletter dialog
        page.get_by_role("button", name="Skip").first.click(timeout=10_000)
    except Exception:  # noqa: BLE001 - not shown (already dismissed): nothing to do
        pass


def expand_chart(page) -> None:
    """The run page's Gantt chart over the whole page: the unlabelled toggle left of "Re-execute all"."""
    again = page.get_by_role("button", name="Re-execute all").first.bounding_box()
    if again is None:
        return
    left = [b for b in page.locator("button").all()
            if (box := b.bounding_box()) and abs(box["y"] - again["y"]) < 4 and box["x"] < again["x"]]
    if left:
        max(left, key=lambda b: b.bounding_box()["x"]).click()
        page.wait_for_timeout(3000)


def screenshot(root: Path, out: Path, run_id: str | None = None) -> str:
    """The page of a lifecycle run (default: the latest), after its Gantt chart has drawn."""
    from playwright.sync_api import expect

    home = Path(os.environ.get("DAGSTER_HOME") or root / ".dagster_home")
    run_id = run_id or latest_lifecycle_run(home)
    env = {**os.environ, "DAGSTER_HOME": str(home), "COMPODIFF_ROOT": str(root)}
    with dagster_dev(root, env) as url, chromium_page(1600, 1300) as page:
        page.goto(f"{url}/runs/{run_id}", wait_until="load", timeout=90_000)
        dismiss_newsletter(page)
        expect(page.get_by_text("Success").first).to_be_visible(timeout=90_000)
        page.wait_for_timeout(8000)  # the Gantt chart draws after the run's events have loaded
        expand_chart(page)
        page.mouse.move(5, 5)  # no hover card over the chart
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out))
    return run_id


@contextlib.contextmanager
def params_set(root: Path, assignments: list[str]):
    """params.yaml with ``KEY=VALUE`` (dotted keys, YAML values) set, restored byte for byte on exit."""
    import yaml

    path = root / "params.yaml"
    original = path.read_bytes()
    params = yaml.safe_load(original)
    for a in assignments:
        key, _, value = a.partition("=")
        *parents, leaf = key.split(".")
        node = params
        for k in parents:
            node = node[k]
        if leaf not in node:
            raise SystemExit(f"--set {a}: params.yaml has no key {key}")
        node[leaf] = yaml.safe_load(value)
    try:
        path.write_text(yaml.safe_dump(params, sort_keys=False))
        yield
    finally:
        path.write_bytes(original)


def stale_graph(root: Path, out: Path, assignments: list[str], group: str = "training") -> None:
    """An asset group's graph, as the UI shows it once params.yaml has changed."""
    home = Path(os.environ.get("DAGSTER_HOME") or root / ".dagster_home")
    env = {**os.environ, "DAGSTER_HOME": str(home), "COMPODIFF_ROOT": str(root)}
    with params_set(root, assignments), dagster_dev(root, env) as url, chromium_page(1700, 1500) as page:
        page.goto(f"{url}/locations/orchestration.definitions/asset-groups/{group}/lineage", wait_until="networkidle",
                  timeout=90_000)
        dismiss_newsletter(page)
        page.get_by_text("stage2").first.wait_for(timeout=90_000)
        page.wait_for_timeout(8000)  # the nodes' staleness arrives after the graph has drawn
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out))


def mlflow_ui(root: Path):
    """`mlflow server` on the project's store, on a free loopback port; yields its URL."""
    return loopback_server([str(ROOT / ".venv" / "bin" / "mlflow"), "server", "--backend-store-uri",
                            f"sqlite:///{root / 'mlflow.db'}", "--default-artifact-root", str(root / "mlartifacts")],
                           "/health", root)


def mlflow_pages(root: Path, runs_out: Path | None, model_out: Path | None) -> None:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("compodiff")
    if exp is None:
        raise SystemExit(f"no experiment 'compodiff' in {root / 'mlflow.db'}: run `compodiff lifecycle` first")
    with mlflow_ui(root) as url, chromium_page(1800, 1100) as page:
        if runs_out:
            page.goto(f"{url}/#/experiments/{exp.experiment_id}/runs", wait_until="load", timeout=90_000)
            page.get_by_text("lifecycle").first.wait_for(timeout=60_000)
            lifecycle = "tags.`compodiff.kind` = 'dagster_run' and tags.`dagster.job` = 'lifecycle'"
            latest = client.search_runs([exp.experiment_id], lifecycle,
                                        order_by=["attributes.start_time DESC"], max_results=1)
            if latest:  # the latest Dagster run's tree only: its parent run and one child run per step
                box = page.get_by_placeholder("metrics.rmse", exact=False)
                box.fill(f"tags.`dagster.run_id` = '{latest[0].data.tags['dagster.run_id']}'")
                box.press("Enter")
                page.wait_for_timeout(3000)
            close = page.get_by_role("button", name="Close")  # the assistant panel hides half the table
            if close.count():
                close.first.click()
            parent = page.locator('[role="row"]', has_text="lifecycle ").locator("button")
            if parent.count():  # the latest lifecycle's parent run, opened onto its step runs
                parent.first.click()
            page.wait_for_timeout(4000)
            runs_out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(runs_out))
        if model_out:
            page.goto(f"{url}/#/models/compodiff-stage2", wait_until="load", timeout=90_000)
            page.get_by_text("champion").first.wait_for(timeout=60_000)
            page.wait_for_timeout(3000)
            model_out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(model_out))


PAGES = {"run": "dagster_lifecycle_run.png", "stale": "dagster_asset_graph_stale.png",
         "mlflow-runs": "mlflow_run_tree.png", "mlflow-model": "mlflow_model.png"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=ROOT)
    ap.add_argument("--pages", nargs="+", choices=sorted(PAGES), default=["run"])
    ap.add_argument("--run-id", help="for `run`; default: the latest run of the lifecycle job")
    ap.add_argument("--set", dest="assignments", nargs="+", default=["combiner.steps=401"],
                    help="for `stale`: params changed while the graph is shown")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "docs" / "screenshots")
    args = ap.parse_args()
    root = args.root.resolve()
    out = {page: args.out_dir / name for page, name in PAGES.items() if page in args.pages}
    if "run" in out:
        print(f"run {screenshot(root, out['run'], args.run_id)} -> {out['run']}")
    if "stale" in out:
        stale_graph(root, out["stale"], args.assignments)
        print(f"asset graph with {' '.join(args.assignments)} -> {out['stale']}")
    if "mlflow-runs" in out or "mlflow-model" in out:
        mlflow_pages(root, out.get("mlflow-runs"), out.get("mlflow-model"))
        print(f"MLflow -> {', '.join(str(out[p]) for p in ('mlflow-runs', 'mlflow-model') if p in out)}")


if __name__ == "__main__":
    main()
