"""The lifecycle: one Dagster run of the asset job ``lifecycle`` (every asset of one partitioning).

On a persistent instance (``compodiff lifecycle``, the history in .dagster_home) the run goes to Dagster's
multiprocess executor: each step in its own process, at most ``lifecycle.main`` steps of the main chain and
``lifecycle.side`` of the side lane at once (tag concurrency limits), so the caption LM and the benchmark
renderer, which need only world_pairs and are needed only late, run beside the world CLIP and training.
Every step sizes its thread pool from its own params, never from what runs beside it, so the outputs do
not depend on the schedule. On an ephemeral instance (tests) the same selection runs in-process, in order.
Blocking checks stop their downstream steps inside the run, as Dagster does.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg

from orchestration import registry

JOB = "lifecycle"
LANE_TAG = "compodiff/lane"  # main | side: what the tag concurrency limits count
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


class StepFailed(RuntimeError):
    pass


def lane(name: str) -> str:
    return "side" if registry.step(name).side_lane else "main"


def selection(assets, params) -> dg.AssetSelection:
    """Every asset of the shard partitioning: a run holds one partitioning, so the others (real_benchmark by
    benchmark, image_triplets by source) have jobs of their own."""
    others = [a.key for a in assets if a.partitions_def is not None
              and a.partitions_def.get_partition_keys() != list(params.world.shards)]
    return dg.AssetSelection.all() - dg.AssetSelection.assets(*others)


def range_tags(keys) -> dict:
    """Every partition in one run: a single-run backfill from the first key to the last."""
    return {RANGE_START: keys[0], RANGE_END: keys[-1]}


def execution(params, serial: bool = False) -> dict | None:
    """The multiprocess executor's config: the lanes' tag limits (None under another executor)."""
    if os.environ.get("COMPODIFF_EXECUTOR", "multiprocess") != "multiprocess":
        return None
    lanes = params.lifecycle
    return {"config": {
        "max_concurrent": 1 if serial else lanes.main + lanes.side,
        "tag_concurrency_limits": [{"key": LANE_TAG, "value": "main", "limit": lanes.main},
                                   {"key": LANE_TAG, "value": "side", "limit": lanes.side}],
        # each step's process forks from one that has imported torch and the definitions already
        "start_method": {"forkserver": {"preload_modules": ["torch", "orchestration.definitions"]}}}}


def run_config(project, log_level: str = "WARNING", multiprocess: bool = True, serial: bool = False) -> dict:
    config: dict = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    if multiprocess and (ex := execution(project.params, serial)) is not None:
        config["execution"] = ex
    return config


@dataclass
class Outcome:
    run_id: str
    materialized: list[str]
    failed_steps: list[str]
    skipped: list[str]
    failed_checks: list[str]
    warnings: list[str]
    result: object


def materialize(project, instance: dg.DagsterInstance, select: set[str] | None = None,
                log: Callable[[str], None] = print, log_level: str = "WARNING", serial: bool = False) -> list[Outcome]:
    """The selected assets (default: all) with their checks: the lifecycle job's in one run, and each asset of
    another partitioning in a run of its own, before the job's run if it reads nothing of it, else after.
    Raises StepFailed naming the failed step or check; returns the runs' outcomes."""
    job = selection(project.assets, project.params).resolve(project.assets)
    chosen = [a for a in project.assets if not select or a.key.to_user_string() in select]
    main = [a for a in chosen if a.key in job]
    graph = project.defs.resolve_asset_graph()
    other = [a for a in chosen if a.key not in job]
    before = [a for a in other if not graph.get(a.key).parent_keys & {b.key for b in chosen}]
    runs = [[a] for a in before] + ([main] if main else []) + [[a] for a in other if a not in before]
    outcomes = []
    for assets in runs:
        outcomes.append(_run(project, instance, assets, log, log_level, serial and assets is main,
                             multiprocess=assets is main and not instance.is_ephemeral))
    return outcomes


def _run(project, instance, assets: list, log, log_level: str, serial: bool, multiprocess: bool) -> Outcome:
    keys = [a.key for a in assets]
    wanted = [k.to_user_string() for k in keys]
    partitioned = [a.partitions_def for a in assets if a.partitions_def is not None]
    tags = range_tags(partitioned[0].get_partition_keys()) if partitioned else {}
    log(f"==> one Dagster run of {len(wanted)} asset(s): {', '.join(wanted)}")
    if multiprocess:
        from orchestration.definitions import reconstructable_lifecycle

        result = dg.execute_job(reconstructable_lifecycle(), instance=instance, tags=tags, asset_selection=keys,
                                run_config=run_config(project, log_level, serial=serial))
    else:
        checks = [c for c in project.checks if any(k.asset_key in keys for k in c.check_keys)]
        result = dg.materialize([*assets, *checks], instance=instance, resources=project.resources, tags=tags,
                                selection=keys, raise_on_error=False,
                                run_config=run_config(project, log_level, multiprocess=False))
    outcome = _outcome(result, wanted)
    for name in outcome.materialized:
        log(f"    {name} done")
    for w in outcome.warnings:
        log(f"    warning: {w}")
    if outcome.failed_steps:
        raise StepFailed(f"{', '.join(outcome.failed_steps)} failed (Dagster run {outcome.run_id}); "
                         "open the Dagster UI for its logs")
    if outcome.failed_checks:
        raise StepFailed(f"checks failed: {outcome.failed_checks} (run {outcome.run_id})")
    if outcome.skipped:
        raise StepFailed(f"not materialized: {outcome.skipped} (run {outcome.run_id})")
    return outcome


def _outcome(result, wanted: list[str]) -> Outcome:
    events = result.all_events
    done = {e.asset_key.to_user_string() for e in events if e.event_type_value == "ASSET_MATERIALIZATION"}
    failed = sorted({e.step_key for e in events if e.event_type_value == "STEP_FAILURE"})
    bad = [e for e in result.get_asset_check_evaluations() if not e.passed]
    errors = [e.check_name for e in bad if e.severity == dg.AssetCheckSeverity.ERROR]
    warns = [f"check {e.check_name} did not pass: "
             + ", ".join(f"{k}={v.value}" for k, v in e.metadata.items()) for e in bad
             if e.severity != dg.AssetCheckSeverity.ERROR]
    return Outcome(result.run_id, [n for n in wanted if n in done], failed,
                   [n for n in wanted if n not in done and n not in failed], errors, warns, result)
