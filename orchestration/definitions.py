"""Dagster definitions: every step of the lifecycle as a materializable asset.

Thin: each asset opens its MLflow step run, calls the plain step function in
``orchestration.steps`` (the same one the DVC stage runs through the CLI) and
reports metadata. Outputs are files at the paths of ``orchestration.layout``,
so Dagster and DVC agree on where everything lives.
"""


import json
import os
from pathlib import Path
from types import SimpleNamespace

import dagster as dg

from compodiff.config import load_params
from datagen.shards import decode_png, read_shard
from orchestration import steps
from orchestration.resources import DeviceResource, ProjectResource, project_root
from orchestration.tracking import MLflowTracking


def progress(context):
    """Progress lines on stdout (the CLI and the UI's stdout pane) and in the Dagster event log."""
    def log(message: str) -> None:
        print(message, flush=True)
        context.log.info(message)
    return log


def build(root: Path | None = None, params_file: str | None = None) -> SimpleNamespace:
    """Assets, checks, jobs and resources for the project at ``root`` (default: COMPODIFF_ROOT or cwd)."""
    root = Path(root or project_root()).resolve()
    params_file = params_file or os.environ.get("COMPODIFF_PARAMS", "params.yaml")
    params = load_params(Path(params_file) if Path(params_file).is_absolute() else root / params_file)
    # The shard list of params.yaml is the partition set; DVC fans out over the same list.
    shards = dg.StaticPartitionsDefinition(list(params.world.shards))

    @dg.asset(
        partitions_def=shards,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name="world",
        description="Sharded image-caption pairs of the procedural world (stand-in for LAION-2B).",
        kinds={"parquet"},
    )
    def world_pairs(context: dg.AssetExecutionContext, project: ProjectResource,
                    tracking: MLflowTracking) -> dg.MaterializeResult:
        layout = project.layout()
        keys = list(context.partition_keys)
        with tracking.step_run("world_pairs", layout.params, context.run.run_id, ",".join(keys)) as run:
            manifests = steps.world_pairs_shards(layout, keys, log=progress(context))
            run.log_metrics({"pairs": sum(m["count"] for m in manifests),
                             "seconds": sum(m["seconds"] for m in manifests)})
        return dg.MaterializeResult(metadata={
            "shards": keys,
            "pairs": sum(m["count"] for m in manifests),
            "bytes": sum(m["bytes"] for m in manifests),
            "paths": [m["path"] for m in manifests],
            "mlflow_run": dg.MetadataValue.url(run.url),
        })


    @dg.asset_check(asset=world_pairs, blocking=True, description="Every shard holds its pairs, decodable.")
    def world_pairs_valid(context: dg.AssetCheckExecutionContext, project: ProjectResource) -> dg.AssetCheckResult:
        layout = project.layout()
        problems, total = [], 0
        for shard in layout.params.world.shards:
            path = layout.world_pairs(shard)
            if not path.is_file():
                continue  # a partition not materialized yet
            table = read_shard(path, ["id", "image_png"])
            total += table.num_rows
            if table.num_rows != layout.params.world.pairs_per_shard:
                problems.append(f"{path}: {table.num_rows} rows, expected {layout.params.world.pairs_per_shard}")
            first = table.slice(0, 1).to_pylist()[0]
            decode_png(first["image_png"], f"{path}:{first['id']}")
        return dg.AssetCheckResult(passed=not problems, metadata={"rows": total, "problems": problems})


    @dg.asset(
        deps=[world_pairs],
        group_name="world",
        description="The world's open_clip model, trained contrastively on world_pairs (stand-in for CLIP).",
        kinds={"pytorch"},
        pool="gpu",
    )
    def encoder(context: dg.AssetExecutionContext, project: ProjectResource, tracking: MLflowTracking,
                device: DeviceResource) -> dg.MaterializeResult:
        layout = project.layout()
        device.resolve()
        with tracking.step_run("encoder", layout.params, context.run.run_id) as run:
            metrics = steps.encoder(layout, log=progress(context),
                                    on_metrics=lambda s, m: run.log_metrics(m, step=s))
            run.log_metrics(metrics)
            run.log_artifact(layout.encoder_metrics)
            run.log_artifact(layout.encoder_dir / "open_clip_config.json", "encoder")
        return dg.MaterializeResult(metadata={
            **{k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))},
            "path": str(layout.encoder_dir),
            "mlflow_run": dg.MetadataValue.url(run.url),
        })


    @dg.asset_check(asset=encoder, blocking=True, description="Held-out text-to-image R@10 above the floor.")
    def encoder_recall_floor(project: ProjectResource) -> dg.AssetCheckResult:
        layout = project.layout()
        metrics = json.loads(layout.encoder_metrics.read_text())
        floor = 0.5 if layout.params.profile != "tiny" else 0.0
        return dg.AssetCheckResult(passed=metrics["t2i_R@10"] >= floor,
                                   metadata={"t2i_R@10": metrics["t2i_R@10"], "floor": floor})



    assets = [world_pairs, encoder]
    checks = [world_pairs_valid, encoder_recall_floor]
    jobs = [dg.define_asset_job("world", selection=dg.AssetSelection.groups("world"))]
    resources = {
        "project": ProjectResource(root=str(root), params_file=params_file),
        "tracking": MLflowTracking(tracking_uri=params.tracking.tracking_uri,
                                   experiment=params.tracking.experiment, root=str(root)),
        "device": DeviceResource(),
    }
    defs = dg.Definitions(assets=assets, asset_checks=checks, jobs=jobs, resources=resources)
    return SimpleNamespace(root=root, params=params, assets=assets, checks=checks, resources=resources, defs=defs)


project = build()
defs = project.defs
