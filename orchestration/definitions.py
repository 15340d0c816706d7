"""Dagster definitions: every step of the lifecycle as a materializable asset, thin.

The assets are built by group (``orchestration/assets/``) from the step registry, the checks live in
``orchestration/checks.py``; each asset opens its MLflow step run and calls the plain step function
that the DVC stage runs through the CLI. Outputs are files at the paths of ``orchestration.layout``,
so Dagster and DVC agree on where everything lives.
"""

import os
from pathlib import Path
from types import SimpleNamespace

import dagster as dg

from orchestration import lifecycle
from orchestration.assets import caption_triplets, evaluation, image_pairs, training, triplet_sources, world
from orchestration.checks import CHECKS
from orchestration.params import load_params
from orchestration.resources import ProjectResource, project_root
from orchestration.tracking import MLflowTracking

GROUPS = (world, caption_triplets, image_pairs, triplet_sources, training, evaluation)


def executor(name: str):
    """Where the steps run: local processes by default; a Celery or Kubernetes cluster for the
    sharded steps at paper scale (deploy/*.yaml; the [cluster] extra installs the integrations)."""
    if name == "multiprocess":
        return dg.multiprocess_executor
    try:
        if name == "celery":
            from dagster_celery import celery_executor

            return celery_executor
        if name == "k8s":
            from dagster_k8s import k8s_job_executor

            return k8s_job_executor
    except ImportError as err:
        raise ImportError(f"COMPODIFF_EXECUTOR={name} needs the cluster extra: pip install -e '.[cluster]' "
                          f"({err})") from None
    raise ValueError(f"COMPODIFF_EXECUTOR={name!r}: one of multiprocess, celery, k8s")


def build(root: Path | None = None, params_file: str | None = None) -> SimpleNamespace:
    """Assets, checks, jobs and resources for the project at ``root`` (default: COMPODIFF_ROOT or cwd)."""
    root = Path(root or project_root()).resolve()
    params_file = params_file or os.environ.get("COMPODIFF_PARAMS", "params.yaml")
    params = load_params(Path(params_file) if Path(params_file).is_absolute() else root / params_file)
    # The shard list of params.yaml is the partition set; DVC fans out over the same list.
    shards = dg.StaticPartitionsDefinition(list(params.world.shards))
    assets = [a for group in GROUPS for a in group.build(params, shards)]
    jobs = [dg.define_asset_job("world", selection=dg.AssetSelection.groups("world")),
            dg.define_asset_job("datagen", selection=dg.AssetSelection.groups("world", "caption_triplets",
                                                                              "image_pairs")),
            dg.define_asset_job("train", selection=dg.AssetSelection.groups("training")),
            dg.define_asset_job("evaluate", selection=dg.AssetSelection.groups("evaluation")),
            dg.define_asset_job("triplet_sources", selection=dg.AssetSelection.groups("triplet_sources")),
            # from the UI or `dagster job execute`, the run `compodiff lifecycle` makes: every shard, the lanes
            dg.define_asset_job(lifecycle.JOB, selection=lifecycle.selection(assets, params),
                                description="The whole lifecycle in one run: `compodiff lifecycle`.",
                                tags=lifecycle.range_tags(params.world.shards),
                                config={"execution": ex} if (ex := lifecycle.execution(params)) else None)]
    resources = {
        "project": ProjectResource(root=str(root), params_file=params_file),
        "tracking": MLflowTracking(tracking_uri=params.tracking.tracking_uri,
                                   experiment=params.tracking.experiment, root=str(root)),
    }
    defs = dg.Definitions(assets=assets, asset_checks=CHECKS, jobs=jobs, resources=resources,
                          executor=executor(os.environ.get("COMPODIFF_EXECUTOR", "multiprocess")))
    return SimpleNamespace(root=root, params=params, assets=assets, checks=CHECKS, resources=resources, defs=defs)


project = build()
defs = project.defs


def lifecycle_job() -> dg.JobDefinition:
    return defs.resolve_job_def(lifecycle.JOB)


def reconstructable_lifecycle():
    """The lifecycle job as the multiprocess executor's step processes rebuild it (this module, this project)."""
    return dg.reconstructable(lifecycle_job)
