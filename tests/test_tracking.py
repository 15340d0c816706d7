"""MLflow tracking: the SQLite schema survives parallel first use (mlops.md: 4 failures in 4 trials
without a guard), and a step run records its params, metrics and lineage tags."""

import multiprocessing as mp
import time
from pathlib import Path

import mlflow
import pytest

from orchestration.params import load_params
from orchestration.tracking import MLflowTracking, resolve_tracking_uri

ROOT = Path(__file__).resolve().parents[1]


def _first_use(root: str, queue, dagster_run_id: str = "") -> None:
    try:
        tracking = MLflowTracking(tracking_uri="sqlite:///mlflow.db", experiment="compodiff", root=root)
        with tracking.step_run("world_pairs", load_params(ROOT / "profiles" / "tiny.yaml"), dagster_run_id,
                               partition="s00", job="lifecycle") as r:
            r.log_metrics({"pairs": 1})
        queue.put(tracking.ensure_experiment())
    except Exception as err:  # noqa: BLE001 - reported to the parent
        queue.put(f"error: {err!r}")


def test_parallel_first_use_creates_one_schema_and_one_experiment(tmp_path):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_first_use, args=(str(tmp_path), queue)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
    ids = [queue.get(timeout=5) for _ in procs]
    assert len(set(ids)) == 1 and not str(ids[0]).startswith("error"), ids
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([ids[0]])
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
    assert client.get_experiment(ids[0]).tags["mlflow.experimentKind"] == "custom_model_development"
    # the params of a run are those its step reads, not the whole config
    logged = runs[0].data.params
    assert "world.shards" in logged and "seed" in logged and not any(k.startswith("training.") for k in logged)


def test_the_step_runs_of_one_dagster_run_nest_in_one_grouping_run_made_once(tmp_path):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_first_use, args=(str(tmp_path), queue, run)) for run in ("r1", "r1", "r1", "r2")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
    ids = {queue.get(timeout=5) for _ in procs}
    assert len(ids) == 1 and not str(next(iter(ids))).startswith("error"), ids
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs(list(ids))
    groups = {r.data.tags["dagster.run_id"]: r for r in runs if r.data.tags.get("compodiff.kind") == "dagster_run"}
    steps = [r for r in runs if "dagster.asset" in r.data.tags]
    assert sorted(groups) == ["r1", "r2"] and len(steps) == 4 and len(runs) == 6
    assert all(g.info.status == "FINISHED" and g.info.run_name == f"lifecycle {k}" for k, g in groups.items())
    assert sorted(s.data.tags["mlflow.parentRunId"] for s in steps) == sorted(
        [groups["r1"].info.run_id] * 3 + [groups["r2"].info.run_id])


FIRST_USE = """
import sys
from orchestration.tracking import MLflowTracking
MLflowTracking(tracking_uri="sqlite:///mlflow.db", root=sys.argv[1]).ensure_experiment()
"""


def test_a_first_use_killed_while_mlflow_makes_its_schema_leaves_a_usable_store(tmp_path):
    """SIGKILL at several points of the store's creation: afterwards there is no store or a whole one, never
    a half-made one that every later run fails on ("table ... already exists")."""
    import os
    import signal
    import subprocess
    import sys
    import time

    for delay in (0.0, 0.1, 0.3, 0.6):  # after the store's first file appears: inside MLflow's migrations
        root = tmp_path / f"after{delay}"
        root.mkdir()
        proc = subprocess.Popen([sys.executable, "-c", FIRST_USE, str(root)], cwd=ROOT, start_new_session=True)
        deadline = time.time() + 120
        while not any("mlflow.db" in p.name for p in root.iterdir()) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        tracking = MLflowTracking(tracking_uri="sqlite:///mlflow.db", root=str(root))
        with tracking.step_run("encoder", load_params(ROOT / "profiles" / "tiny.yaml")) as run:
            run.log_metrics({"loss": 1.0})
        client = mlflow.MlflowClient(f"sqlite:///{root}/mlflow.db")
        assert len(client.search_runs([tracking.ensure_experiment()])) == 1
        assert not [p.name for p in root.iterdir() if ".tmp" in p.name], delay


def test_failed_step_is_marked_failed(tmp_path):
    tracking = MLflowTracking(tracking_uri="sqlite:///mlflow.db", root=str(tmp_path))
    try:
        with tracking.step_run("encoder", load_params(ROOT / "profiles" / "tiny.yaml")):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    client = mlflow.MlflowClient(resolve_tracking_uri("sqlite:///mlflow.db", tmp_path))
    (run,) = client.search_runs([tracking.ensure_experiment()])
    assert run.info.status == "FAILED" and run.data.tags["dagster.asset"] == "encoder"


def test_the_run_link_follows_the_tracking_uri(tmp_path):
    server = MLflowTracking(tracking_uri="http://mlflow.internal:8080/", root=str(tmp_path))
    assert server.ui() == "http://mlflow.internal:8080"
    local = MLflowTracking(tracking_uri="sqlite:///mlflow.db", root=str(tmp_path), ui_url="http://127.0.0.1:5001")
    with local.step_run("encoder", load_params(ROOT / "profiles" / "tiny.yaml")) as run:
        assert run.url.startswith("http://127.0.0.1:5001/#/experiments/") and run.url.endswith(run.run_id)


def test_a_killed_steps_run_is_closed_when_the_step_runs_again(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    code = (f"import sys, time; sys.path.insert(0, {str(ROOT)!r})\n"
            "from orchestration.params import load_params\nfrom orchestration.tracking import MLflowTracking\n"
            f"t = MLflowTracking(tracking_uri='sqlite:///mlflow.db', root={str(tmp_path)!r})\n"
            f"with t.step_run('encoder', load_params({str(ROOT / 'profiles' / 'tiny.yaml')!r})):\n"
            "    print('started', flush=True); time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "started"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    client = mlflow.MlflowClient(resolve_tracking_uri("sqlite:///mlflow.db", tmp_path))
    tracking = MLflowTracking(tracking_uri="sqlite:///mlflow.db", root=str(tmp_path))
    (orphan,) = client.search_runs([tracking.ensure_experiment()])
    assert orphan.info.status == "RUNNING"  # what a kill -9 leaves
    time.sleep(0.1)
    with tracking.step_run("encoder", load_params(ROOT / "profiles" / "tiny.yaml")):
        pass
    assert client.get_run(orphan.info.run_id).info.status == "KILLED"


def test_the_grouping_run_spans_its_steps_and_fails_once_one_fails(tmp_path):
    tracking = MLflowTracking(tracking_uri="sqlite:///mlflow.db", experiment="compodiff", root=str(tmp_path))
    params = load_params(ROOT / "profiles" / "tiny.yaml")
    with tracking.step_run("world_pairs", params, "r1", partition="s00", job="lifecycle"):
        time.sleep(0.3)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    step = client.search_runs([tracking.ensure_experiment()], "tags.`dagster.asset` = 'world_pairs'")[0]
    group = client.get_run(step.data.tags["mlflow.parentRunId"]).info
    assert group.status == "FINISHED" and group.end_time >= step.info.end_time
    assert group.end_time - group.start_time >= 300  # not the instant it was made
    with pytest.raises(RuntimeError), tracking.step_run("encoder", params, "r1", job="lifecycle"):
        raise RuntimeError("killed")
    with tracking.step_run("caption_pool", params, "r1", job="lifecycle"):
        pass
    assert client.get_run(group.run_id).info.status == "FAILED"  # a later success does not hide it
