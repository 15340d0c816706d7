"""dvc.yaml, generated from the step registry: `compodiff dvc-yaml` writes it, a test checks the
committed file equals what this renders, so DVC's stages cannot drift from the steps."""

from __future__ import annotations

from pathlib import Path

import yaml

from orchestration.code_deps import ROOT, code_deps
from orchestration.registry import STEPS, Step

HEADER = """\
# Generated from orchestration/registry.py by `compodiff dvc-yaml`: edit the registry, not this file.
# Each stage runs the project's interpreter (.venv); DVC lives in .venv-dvc (README: DVC and Dagster
# cannot share one environment). Code dependencies are each step module's imports (orchestration/code_deps.py).
"""


def stage(s: Step, root: Path = ROOT) -> dict:
    body: dict = {"cmd": f".venv/bin/compodiff run {s.name}" + (" --shard ${item}" if s.sharded else "")}
    body["deps"] = [*s.inputs, *code_deps(f"orchestration.{s.module}", root)]
    if s.params:
        body["params"] = list(s.params)
    outs = [*s.outputs, *({r: {"cache": False}} for r in s.records)]
    if outs:
        body["outs"] = outs
    if s.metrics:
        body["metrics"] = [{m: {"cache": False}} for m in s.metrics]
    if s.plots:
        body["plots"] = [{p: {"cache": False}} for p in s.plots]
    if not s.sharded:
        return body
    return {"foreach": s.shards if isinstance(s.shards, str) else list(s.shards), "do": body}


def render(root: Path = ROOT) -> str:
    stages = {s.name: stage(s, root) for s in STEPS}
    return HEADER + yaml.safe_dump({"stages": stages}, sort_keys=False, width=120)


def write(root: Path = ROOT) -> Path:
    from compodiff.atomic import atomic_path

    with atomic_path(root / "dvc.yaml") as tmp:
        tmp.write_text(render(root))
    return root / "dvc.yaml"
