"""Tell DVC what Dagster built: `dvc commit` of the stages a lifecycle materialized.

DVC decides what `dvc repro` must rerun from `dvc.lock`; a step that Dagster ran leaves no trace there,
so without this a `dvc repro` after the lifecycle would rebuild everything. Committing hashes the
outputs, the dependencies and the params each stage reads as they are now, and caches the outputs
for `dvc push`.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


class DvcRecordError(RuntimeError):
    pass


def dvc_binary(root: Path) -> str | None:
    local = root / ".venv" / "bin" / "dvc"
    return str(local) if local.exists() else shutil.which("dvc")


def in_git(root: Path) -> bool:
    try:
        out = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=root, capture_output=True, text=True,
                             timeout=30)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and out.stdout.strip() == "true"


def record_in_dvc(root: Path, stages: list[str] | None = None, timeout: float = 900) -> str:
    """Commit ``stages`` (all of dvc.yaml's when None) into dvc.lock; returns what was done, in a line.

    A project that is not a DVC repository, or a machine without DVC, is left alone (said in the line)."""
    if not (root / ".dvc").is_dir() or not (root / "dvc.yaml").is_file():
        return "not a DVC repository: dvc.lock not written"
    dvc = dvc_binary(root)
    if dvc is None:
        return "dvc is not installed: dvc.lock not written"
    if not in_git(root):  # DVC tracks pipelines inside a git work tree (a copied or unpacked tree is not one)
        return "not inside a git work tree: dvc.lock not written"
    cmd = [dvc, "commit", "--force", "--quiet", *(stages or [])]
    out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise DvcRecordError(f"`{' '.join(cmd[1:])}` failed in {root} ({out.returncode}): "
                             f"{(out.stderr or out.stdout).strip()[-1500:]}")
    return f"recorded {'all stages' if not stages else ', '.join(stages)} in dvc.lock"
