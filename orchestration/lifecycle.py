"""Materialize the asset graph in dependency order, one Dagster run per asset step.

Each run goes to the given instance (the persistent one in .dagster_home for
`compodiff lifecycle`), so the Dagster UI shows the history of what ran. A
partitioned asset materializes all its partitions in one run (single-run backfill).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import dagster as dg

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


class StepFailed(RuntimeError):
    pass


def materialize_all(project, instance: dg.DagsterInstance, select: set[str] | None = None,
                    log: Callable[[str], None] = print, log_level: str = "WARNING") -> list:
    graph = project.defs.resolve_asset_graph()
    checks_of: dict = {}
    for chk in project.checks:
        for key in chk.check_keys:
            checks_of.setdefault(key.asset_key, []).append(chk)
    order = [a for key in graph.toposorted_asset_keys for a in project.assets if key in a.keys]
    results = []
    for asset in order:
        name = asset.key.to_user_string()
        if select and name not in select:
            continue
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
        results.append(result)
    return results
