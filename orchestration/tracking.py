"""MLflow tracking: one MLflow run per asset step, nested in one run per Dagster run, as a Dagster resource.

dagster-mlflow opens one MLflow run per Dagster *run* and finds it again by a
racy tag search (shared/reference/mlops.md); here each step opens and closes
its own run through an explicit ``MlflowClient`` (no global active-run state, so
it is safe under the multiprocess executor), and the SQLite schema is created
once under a file lock before any step touches it.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
from filelock import FileLock

from compodiff.atomic import atomic_path
from orchestration import registry
from orchestration.params import Params

PARAM_BATCH = 100  # MLflow accepts at most 100 params per log_batch call


def resolve_tracking_uri(uri: str, root: str | Path) -> str:
    """``sqlite:///mlflow.db`` is relative to the project root, not to whatever cwd a step has."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str((Path(root) / uri[len(prefix):]).resolve())
    return uri


def git_commit(root: str | Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class StepRun:
    """The MLflow run of one step: a thin, explicit handle."""

    def __init__(self, client, run_id: str, url: str):
        self.client, self.run_id, self.url = client, run_id, url

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
        for i in range(0, len(items), PARAM_BATCH):
            self.client.log_batch(self.run_id, params=items[i:i + PARAM_BATCH])

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k.replace("@", "_at_"), float(v), now, step or 0)
                 for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)


def close_orphans(client, exp_id: str, asset: str) -> list[str]:
    """Mark KILLED the RUNNING runs of ``asset`` whose process on this host is gone (a killed step leaves
    its run RUNNING forever otherwise); returns their ids."""
    host = socket.gethostname()
    closed = []
    for run in client.search_runs([exp_id], f"tags.`dagster.asset` = '{asset}' and attributes.status = 'RUNNING'"):
        tags = run.data.tags
        if tags.get("compodiff.host") != host or not tags.get("compodiff.pid", "").isdigit():
            continue
        try:
            os.kill(int(tags["compodiff.pid"]), 0)  # still alive: a step running beside this one
            continue
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        client.set_terminated(run.info.run_id, "KILLED")
        closed.append(run.info.run_id)
    return closed


_ACTIVE: contextvars.ContextVar[StepRun | None] = contextvars.ContextVar("compodiff_step_run", default=None)


def active_run() -> StepRun | None:
    """The MLflow run of the step running in this context (a step that logs models into it asks)."""
    return _ACTIVE.get()


# MLflow 3's UI opens an experiment without this tag in GenAI mode, listing runs as "evaluation runs"
EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"


class MLflowTracking(dg.ConfigurableResource):
    """One MLflow run per asset step, tagged with its Dagster lineage."""

    tracking_uri: str = "sqlite:///mlflow.db"
    experiment: str = "compodiff"
    root: str = "."
    ui_url: str = "http://127.0.0.1:5000"  # where `mlflow ui` serves a file or sqlite store (README)

    def uri(self) -> str:
        return resolve_tracking_uri(self.tracking_uri, self.root)

    def ui(self) -> str:
        """The web UI of the store: the tracking server itself, else the `mlflow ui` beside the file store."""
        if self.tracking_uri.startswith(("http://", "https://")):
            return self.tracking_uri.rstrip("/")
        return self.ui_url.rstrip("/")

    def _create_store(self) -> None:
        """A new SQLite store gets MLflow's schema in a temporary file renamed into place: a step killed while
        MLflow creates the tables would otherwise leave a half-made store that every later run fails on."""
        import mlflow

        prefix = "sqlite:///"
        uri = self.uri()
        if not uri.startswith(prefix) or Path(uri[len(prefix):]).exists():
            return
        with atomic_path(uri[len(prefix):], suffix=".db") as tmp:
            mlflow.MlflowClient(prefix + str(tmp)).search_experiments(max_results=1)

    def ensure_experiment(self) -> str:
        """Create the schema and the experiment exactly once, whatever runs in parallel."""
        import mlflow

        lock_path = Path(self.root) / ".mlflow.lock"
        with FileLock(str(lock_path), timeout=300):
            self._create_store()
            client = mlflow.MlflowClient(self.uri())
            exp = client.get_experiment_by_name(self.experiment)
            if exp is not None:
                if exp.tags.get(EXPERIMENT_KIND) != MODEL_TRAINING:
                    client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND, MODEL_TRAINING)
                return exp.experiment_id
            artifacts = (Path(self.root) / "mlartifacts").resolve()
            return client.create_experiment(self.experiment, artifact_location=artifacts.as_uri(),
                                            tags={EXPERIMENT_KIND: MODEL_TRAINING})

    def parent_run(self, client, exp_id: str, dagster_run_id: str, job: str) -> str:
        """The MLflow run that groups the step runs of one Dagster run (found or made once, whatever runs in
        parallel); it holds no process, so it is recorded finished, and each step run's end extends it (``_extend``)."""
        with FileLock(str(Path(self.root) / ".mlflow.lock"), timeout=300):
            found = client.search_runs([exp_id], f"tags.`dagster.run_id` = '{dagster_run_id}' and "
                                                 "tags.`compodiff.kind` = 'dagster_run'", max_results=1)
            if found:
                return found[0].info.run_id
            run = client.create_run(exp_id, run_name=f"{job or 'dagster run'} {dagster_run_id[:8]}", tags={
                "dagster.run_id": dagster_run_id, "dagster.job": job, "compodiff.kind": "dagster_run",
                "git.commit": git_commit(self.root)})
            client.set_terminated(run.info.run_id, "FINISHED")
            return run.info.run_id

    def _extend(self, client, parent_id: str, status: str) -> None:
        """The grouping run spans its steps: it ends when the latest of them ends, FAILED once one fails."""
        with FileLock(str(Path(self.root) / ".mlflow.lock"), timeout=300):
            info = client.get_run(parent_id).info
            client.set_terminated(parent_id, "FAILED" if "FAILED" in (status, info.status) else "FINISHED",
                                  end_time=max(int(time.time() * 1000), info.end_time or 0))

    @contextlib.contextmanager
    def step_run(self, asset: str, params: Params, dagster_run_id: str = "", partition: str = "",
                 extra_tags: dict | None = None, system_metrics: bool = False, job: str = "") -> Iterator[StepRun]:
        """``system_metrics``: CPU, memory (and GPU) sampled into the run while the step works. Under a
        Dagster run, the step's run is nested in that run's grouping run (``parent_run``)."""
        import mlflow

        exp_id = self.ensure_experiment()
        client = mlflow.MlflowClient(self.uri())
        parent = {"mlflow.parentRunId": self.parent_run(client, exp_id, dagster_run_id, job)} if dagster_run_id else {}
        tags = {**parent,
            "dagster.run_id": dagster_run_id, "dagster.asset": asset, "dagster.partition": partition,
            "mlflow.source.git.commit": git_commit(self.root), "git.commit": git_commit(self.root),
            "params.hash": params.digest(), "profile": params.profile, **(extra_tags or {}),
        }
        name = f"{asset}[{partition}]" if partition else asset
        close_orphans(client, exp_id, asset)
        tags.update({"compodiff.host": socket.gethostname(), "compodiff.pid": str(os.getpid())})
        run = client.create_run(exp_id, run_name=name, tags=tags)
        run_id = run.info.run_id
        handle = StepRun(client, run_id, f"{self.ui()}/#/experiments/{exp_id}/runs/{run_id}")
        handle.tracking_uri = self.uri()
        status = "FAILED"
        monitor = None
        if system_metrics:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            monitor = SystemMetricsMonitor(run_id, sampling_interval=2, tracking_uri=self.uri())
            monitor.start()
        try:
            flat = params.flat()
            handle.log_params(registry.reads(registry.BY_NAME[asset], flat) if asset in registry.BY_NAME else flat)
            token = _ACTIVE.set(handle)
            try:
                yield handle
            finally:
                _ACTIVE.reset(token)
            status = "FINISHED"
        finally:
            if monitor is not None:
                monitor.finish()
                # The monitor drops the samples of its last, unfinished interval (all of them for a
                # step shorter than one interval): take one closing sample so every run has some.
                monitor.collect_metrics()
                monitor.publish_metrics(monitor.aggregate_metrics())
                monitor.mlflow_logger.flush()
            client.set_terminated(run_id, status)
            if parent:
                self._extend(client, parent["mlflow.parentRunId"], status)
