"""Materialize the asset graph in dependency order, one Dagster run per asset step.

Each run goes to the given instance (the persistent one in .dagster_home for
`compodiff lifecycle`), so the Dagster UI shows the history of what ran. A
partitioned asset materializes all its partitions in one run (single-run backfill).

The side lane: the caption LM and the benchmark renderer need only world_pairs and are needed only
late, so a second process materializes them beside the main chain (the world CLIP, features,
training), one core each. Two one-core processes do 1.25x the work of one two-core process on
these small models (world CLIP: 2 x 205 vs 327 samples/s; the LM: 0.21 s vs 0.13 s a step), and the
main chain waits for a side asset only where it consumes one.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import dagster as dg

from orchestration.cores import CORES_ENV, cores

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


class StepFailed(RuntimeError):
    pass


def materialize_all(project, instance: dg.DagsterInstance, select: set[str] | None = None,
                    log: Callable[[str], None] = print, log_level: str = "WARNING",
                    side_lane: tuple[str, ...] = (), on_done: Callable[[str], None] | None = None) -> list:
    """Returns the results of the runs made in this process (the side lane's are in the instance).

    ``side_lane``: assets to materialize in a second process, beside the rest (needs a persistent
    instance and two cores; otherwise everything runs here, in order)."""
    graph = project.defs.resolve_asset_graph()
    checks_of: dict = {}
    for chk in project.checks:
        for key in chk.check_keys:
            checks_of.setdefault(key.asset_key, []).append(chk)
    order = [a for key in graph.toposorted_asset_keys for a in project.assets if key in a.keys]
    order = [a for a in order if not select or a.key.to_user_string() in select]
    parents = {a.key.to_user_string(): {k.to_user_string() for k in graph.get(a.key).parent_keys} for a in order}
    total = cores()
    side = [n for n in parents if n in side_lane] if total > 1 and not instance.is_ephemeral else []
    lane = SideLane(project, instance, side, parents, total - 1, log, log_level) if side else None
    results = []
    try:
        for asset in order:
            name = asset.key.to_user_string()
            if name in side:
                continue
            if lane is not None:
                lane.start_if_ready()
                lane.wait_for(parents[name])
            with _cores(total - 1 if lane is not None and lane.running else total):
                results.append(_materialize(asset, checks_of, project, instance, log, log_level))
            if lane is not None:
                with lane.cond:
                    lane.done.add(name)
            if on_done is not None:
                on_done(name)
        if lane is not None:
            lane.start_if_ready()
            lane.wait_for(set(side))
    finally:
        if lane is not None:
            lane.stop()
    return results


def _materialize(asset, checks_of: dict, project, instance, log, log_level: str):
    name = asset.key.to_user_string()
    tags = {}
    if asset.partitions_def is not None:
        keys = asset.partitions_def.get_partition_keys()
        tags = {RANGE_START: keys[0], RANGE_END: keys[-1]}
    log(f"==> {name}" + (f" [{tags[RANGE_START]} .. {tags[RANGE_END]}]" if tags else ""))
    t0 = time.perf_counter()
    result = dg.materialize([asset, *checks_of.get(asset.key, [])], instance=instance,
                            resources=project.resources, tags=tags, raise_on_error=False,
                            run_config={"loggers": {"console": {"config": {"log_level": log_level}}}})
    if not result.success:
        raise StepFailed(f"{name} failed (Dagster run {result.run_id}); open the Dagster UI for its logs")
    evaluations = result.get_asset_check_evaluations()
    failed = [e.check_name for e in evaluations if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR]
    if failed:
        raise StepFailed(f"{name}: checks failed: {failed} (run {result.run_id})")
    for e in evaluations:
        if not e.passed:
            log(f"    warning: check {e.check_name} did not pass: "
                + ", ".join(f"{k}={v.value}" for k, v in e.metadata.items()))
    log(f"    {name} done in {time.perf_counter() - t0:.1f}s (run {result.run_id[:8]})")
    return result


@contextlib.contextmanager
def _cores(n: int):
    """COMPODIFF_CORES and torch's thread pool for the step run in this process meanwhile."""
    import torch

    saved = os.environ.get(CORES_ENV)
    os.environ[CORES_ENV] = str(n)
    torch.set_num_threads(n)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(CORES_ENV, None)
        else:
            os.environ[CORES_ENV] = saved


class SideLane:
    """The side lane's process, started once every upstream it needs outside the lane is done; a
    thread here relays its log lines and marks its assets done as their runs succeed."""

    def __init__(self, project, instance, names: list[str], parents: dict[str, set[str]], n_cores: int,
                 log: Callable[[str], None], log_level: str):
        self.names, self.n_cores, self.log, self.log_level = names, n_cores, log, log_level
        self.project, self.instance = project, instance
        # what the lane needs from the main chain of this call (an unselected upstream is already there)
        main = set(parents) - set(names)
        self.needs = set().union(*(parents[n] for n in names)) & main
        self.done: set[str] = set()
        self.cond = threading.Condition()
        self.error: str | None = None
        self.process = None
        self.running = False

    def start_if_ready(self) -> None:
        if self.process is not None or not self.needs <= self.done:
            return
        ctx = multiprocessing.get_context("spawn")  # not fork: this process holds torch's thread pools
        self.queue = ctx.Queue()
        params_file = self.project.resources["project"].params_file
        self.process = ctx.Process(target=_side_main, name="compodiff-side-lane", daemon=True, args=(
            str(self.project.root), params_file, self.instance.get_ref(), self.names, self.n_cores, self.queue,
            self.log_level))
        self.process.start()
        self.running = True
        self.log(f"[side lane, {self.n_cores} core(s)] {', '.join(self.names)}")
        threading.Thread(target=self._relay, daemon=True).start()

    def _relay(self) -> None:
        while True:
            kind, value = self.queue.get()
            with self.cond:
                if kind == "log":
                    self.log(f"  [side] {value}")
                elif kind == "done":
                    self.done.add(value)
                elif kind == "failed":
                    self.error = value
                if kind in ("failed", "exit"):
                    self.running = False
                    # the main chain's running step takes the lane's cores back (cores.follow_cores)
                    os.environ[CORES_ENV] = str(self.n_cores + int(os.environ.get(CORES_ENV) or 0))
                self.cond.notify_all()
            if kind in ("failed", "exit"):
                return

    def wait_for(self, names: set[str]) -> None:
        wanted = names & set(self.names)
        if not wanted:
            return
        if self.process is None:
            raise StepFailed(f"side lane not started: it waits for {sorted(self.needs - self.done)}")
        with self.cond:
            while not wanted <= self.done:
                if self.error:
                    raise StepFailed(f"side lane: {self.error}")
                if not self.running:
                    raise StepFailed(f"side lane ended without {sorted(wanted - self.done)}")
                if not self.process.is_alive() and self.process.exitcode not in (None, 0):
                    raise StepFailed(f"side lane process died (exit code {self.process.exitcode})")
                self.cond.wait(timeout=5.0)

    def stop(self) -> None:
        if self.process is not None and self.process.is_alive():
            self.process.join(timeout=1.0 if self.error else None)
            if self.process.is_alive():
                self.process.terminate()


def _side_main(root: str, params_file: str, instance_ref, names: list[str], n_cores: int, queue,
               log_level: str) -> None:
    os.environ[CORES_ENV] = str(n_cores)
    warnings.filterwarnings("ignore", message=".*is currently in beta.*")  # as the CLI does
    import torch

    torch.set_num_threads(n_cores)
    from orchestration.definitions import build

    try:
        project = build(Path(root), params_file)
        instance = dg.DagsterInstance.from_ref(instance_ref)
        materialize_all(project, instance, set(names), log=lambda m: queue.put(("log", m)), log_level=log_level,
                        on_done=lambda n: queue.put(("done", n)))
    except StepFailed as err:
        queue.put(("failed", str(err)))
    except BaseException as err:  # anything else still ends the lane with its reason
        queue.put(("failed", f"{type(err).__name__}: {err}"))
    queue.put(("exit", None))
