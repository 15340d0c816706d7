"""A step that `dvc repro` ran, told to the project's Dagster instance as a materialization.

It carries the metadata a Dagster run would attach and the provenance Dagster records for its own
materializations (code version, the data version and event of each upstream asset, a logical data
version), so the asset graph shows the step built, by whom, and marks it stale exactly as it would a
step it ran itself: after a change of the step's code or params, or of an upstream's data.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import dagster as dg

# The tags under which Dagster stores a materialization's provenance (dagster._core.definitions.data_version).
CODE_VERSION = "dagster/code_version"
DATA_VERSION = "dagster/data_version"
INPUT_DATA_VERSION = "dagster/input_data_version"
INPUT_EVENT_POINTER = "dagster/input_event_pointer"
NULL_POINTER = "NULL"
INITIAL = "INITIAL"  # Dagster's data version for an asset never materialized


def _latest(instance: dg.DagsterInstance, key: str):
    found = instance.fetch_materializations(dg.AssetKey(key), limit=1).records
    return found[0] if found else None


def provenance_tags(instance: dg.DagsterInstance, code_version: str, upstream: list[str]) -> dict[str, str]:
    """Dagster's provenance tags for a materialization made now from the latest event of each upstream."""
    tags, versions = {CODE_VERSION: code_version}, []
    for key in sorted(upstream):
        record = _latest(instance, key)
        version = (record.event_log_entry.tags or {}).get(DATA_VERSION, INITIAL) if record else INITIAL
        tags[f"{INPUT_DATA_VERSION}/{key}"] = version
        tags[f"{INPUT_EVENT_POINTER}/{key}"] = str(record.storage_id) if record else NULL_POINTER
        versions.append(version)
    # as Dagster derives one: the hash of the code version and the inputs' data versions, in key order
    tags[DATA_VERSION] = hashlib.sha256("".join([code_version, *versions]).encode()).hexdigest()
    return tags


def report_to_dagster(root: Path, step: str, shard: str | None, result: dict, mlflow_url: str | None,
                      code_version: str, upstream: list[str]) -> bool:
    """Records the materialization in the instance at $DAGSTER_HOME (else the project's .dagster_home);
    False where there is none (setup.sh makes one)."""
    home = Path(os.environ.get("DAGSTER_HOME") or root / ".dagster_home")
    if not (home / "dagster.yaml").is_file():
        return False
    meta = {k: float(v) for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    meta["orchestrator"] = "dvc"
    if mlflow_url:
        meta["mlflow_run"] = dg.MetadataValue.url(mlflow_url)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        tags = provenance_tags(instance, code_version, upstream)
        instance.report_runless_asset_event(dg.AssetMaterialization(step, partition=shard, metadata=meta, tags=tags))
    return True
