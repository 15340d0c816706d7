"""A screenshot of the Dagster UI's page of the latest `compodiff lifecycle` run: its steps on the Gantt chart.

Serves the project's instance (.dagster_home) with `dagster dev` on loopback and opens the run in Debian's
headless Chromium:

  .venv/bin/python tools/lifecycle_screenshot.py --out docs/screenshots/dagster_lifecycle_run.png
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


def wait_http(url: str, timeout: float, proc: subprocess.Popen) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {proc.stdout.read()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"{url} did not answer in {timeout}s")


def latest_lifecycle_run(home: Path) -> str:
    import dagster as dg

    runs = dg.DagsterInstance.from_config(str(home)).get_runs(dg.RunsFilter(job_name="lifecycle"), limit=1)
    if not runs:
        raise SystemExit(f"no lifecycle run in {home}: run `compodiff lifecycle` first")
    return runs[0].run_id


@contextlib.contextmanager
def dagster_dev(root: Path, env: dict):
    """`dagster dev` on the project at ``root``, on a free loopback port; yields its URL."""
    port = free_port()
    server = subprocess.Popen([str(ROOT / ".venv" / "bin" / "dagster"), "dev", "-m", "orchestration.definitions",
                               "-h", "127.0.0.1", "-p", str(port)], cwd=root, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/server_info", 180, server)
        yield url
    finally:
        stop(server)


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


def screenshot(root: Path, out: Path, run_id: str | None = None) -> str:
    from playwright.sync_api import expect

    home = Path(os.environ.get("DAGSTER_HOME") or root / ".dagster_home")
    run_id = run_id or latest_lifecycle_run(home)
    env = {**os.environ, "DAGSTER_HOME": str(home), "COMPODIFF_ROOT": str(root)}
    with dagster_dev(root, env) as url, chromium_page() as page:
        page.goto(f"{url}/runs/{run_id}", wait_until="load", timeout=90_000)
        dismiss_newsletter(page)
        expect(page.get_by_text("Success").first).to_be_visible(timeout=90_000)
        page.wait_for_timeout(8000)  # the Gantt chart draws after the run's events have loaded
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out))
    return run_id


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=ROOT)
    ap.add_argument("--run-id", help="default: the latest run of the lifecycle job")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots" / "dagster_lifecycle_run.png")
    args = ap.parse_args()
    print(f"run {screenshot(args.root.resolve(), args.out, args.run_id)} -> {args.out}")


if __name__ == "__main__":
    main()
