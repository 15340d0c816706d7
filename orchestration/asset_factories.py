"""Asset factories: every step function becomes a Dagster asset the same way (MLflow step run,
progress lines, numeric results as metadata)."""

from pathlib import Path

import dagster as dg

from orchestration import registry
from orchestration.lifecycle import LANE_TAG, lane
from orchestration.resources import ProjectResource
from orchestration.step_lock import step_lock
from orchestration.tracking import MLflowTracking


def progress(context):
    """Progress lines on stdout (the CLI and the UI's stdout pane) and in the Dagster event log."""
    def log(message: str) -> None:
        print(message, flush=True)
        context.log.info(message)
    return log


def table_metadata(layout, name: str, partitions: list[str] | None = None) -> dict:
    """Row count and column schema of the step's table outputs (parquet): what the Dagster UI shows."""
    import pyarrow.parquet as pq

    paths = [Path(t.replace("${data_dir}", str(layout.data)).replace("${item}", item))
             for t in registry.step(name).tables for item in partitions or [""]]
    paths = [p for p in paths if p.is_file()]
    if not paths:
        return {}
    schema = pq.read_schema(paths[0])
    columns = [dg.TableColumn(f.name, str(f.type)) for f in schema if not f.name.endswith("_png")]
    return {"dagster/row_count": sum(pq.read_metadata(p).num_rows for p in paths),
            "dagster/column_schema": dg.TableSchema(columns=columns)}


def _numbers(d: dict) -> dict:
    return {k: float(v) for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def step_asset(params, name: str, fn, group: str, description: str, artifact=None,
               image=None) -> dg.AssetsDefinition:
    """An unpartitioned asset that runs one step function inside its MLflow step run; its upstream assets,
    pool and code version (the step's code closure and the params it reads) come from the registry.

    ``artifact(layout)``: a file or folder logged to the run. A training step (the registry's ``training``)
    reports metrics per training step and its run samples system metrics. ``image(layout)``: a PNG shown in
    the asset's metadata."""

    training = registry.step(name).training

    @dg.asset(name=name, deps=registry.upstream(name), group_name=group, description=description,
              pool=registry.step(name).pool, op_tags={LANE_TAG: lane(name)},
              code_version=registry.version(name, params), kinds={"pytorch"} if training else None)
    def _asset(context: dg.AssetExecutionContext, project: ProjectResource,
               tracking: MLflowTracking) -> dg.MaterializeResult:
        layout = project.layout()
        with step_lock(layout, name), tracking.step_run(name, layout.params, context.run.run_id,
                                                        system_metrics=training, job=context.run.job_name) as run:
            kwargs = {"on_metrics": lambda s, m: run.log_metrics(m, step=s)} if training else {}
            result = fn(layout, log=progress(context), **kwargs)
            run.log_metrics(result)
            if artifact is not None and artifact(layout).exists():
                run.log_artifact(artifact(layout))
            meta = {}
            if image is not None and image(layout).is_file():
                import base64

                b64 = base64.b64encode(image(layout).read_bytes()).decode()
                meta["plot"] = dg.MetadataValue.md(f"![plot](data:image/png;base64,{b64})")
        return dg.MaterializeResult(metadata={**_numbers(result), **meta, **table_metadata(layout, name),
                                              "mlflow_run": dg.MetadataValue.url(run.url)})

    return _asset


def sharded_asset(params, name: str, partitions, run_shards, group: str, description: str,
                  totals: tuple[str, ...], per_partition: bool = False) -> dg.AssetsDefinition:
    """A shard-partitioned asset: one run materializes any range of shards (single-run backfill);
    ``run_shards(layout, keys, log)`` returns one manifest per shard, ``totals`` are summed over them.
    ``per_partition``: each partition's numbers in the materialization too, as ``<partition>.<name>``.

    Dagster copies a single-run backfill's one materialization to every partition of the range, so its
    totals are named for the run (``run.<name>``); each partition's own numbers come as an observation of
    that partition (its page in the UI, ``instance.fetch_observations``)."""

    @dg.asset(name=name, partitions_def=partitions, backfill_policy=dg.BackfillPolicy.single_run(),
              deps=registry.upstream(name),
              group_name=group, description=description, kinds={"parquet"}, pool=registry.step(name).pool,
              op_tags={LANE_TAG: lane(name)},
              code_version=registry.version(name, params))
    def _asset(context: dg.AssetExecutionContext, project: ProjectResource,
               tracking: MLflowTracking) -> dg.MaterializeResult:
        layout = project.layout()
        keys = list(context.partition_keys)
        with step_lock(layout, name, keys), tracking.step_run(name, layout.params, context.run.run_id,
                                                              ",".join(keys), job=context.run.job_name) as run:
            manifests = run_shards(layout, keys, progress(context))
            tables = [table_metadata(layout, name, [key]) for key in keys]
            for key, m, table in zip(keys, manifests, tables):
                context.log_event(dg.AssetObservation(context.asset_key, partition=key,
                                                      metadata={**_numbers(m), **table}))
            total = {k: sum(m[k] for m in manifests) for k in totals}
            each = ({f"{key}.{k}": v for key, m in zip(keys, manifests) for k, v in _numbers(m).items()}
                    if per_partition else {})
            run.log_metrics({**total, **each})
        # the run's table from its partitions' (each shard's footer read once)
        table = {"run.rows": sum(t["dagster/row_count"] for t in tables if t),
                 "dagster/column_schema": next(t["dagster/column_schema"] for t in tables if t)} if any(tables) else {}
        return dg.MaterializeResult(metadata={**{f"run.{k}": v for k, v in total.items()}, **each, "shards": keys,
                                              **table, "mlflow_run": dg.MetadataValue.url(run.url)})

    return _asset
