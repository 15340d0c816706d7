"""A step's code dependencies: the project's source files its module imports, directly or through other
project modules (imports inside functions included), plus the data files those modules read.

Derived, never listed by hand, so `dvc repro` and the Dagster code versions see every code change that
can change a step's output. A module's imports over-approximate what one of its functions uses: a step
may rerun for a change that could not affect it, never the other way round.
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("compodiff", "datagen", "orchestration")
# data files a module reads at run time (package resources), counted with the module
MODULE_DATA = {"datagen/instructions.py": ("datagen/data/keyword_templates.txt",)}
# the orchestration around a step (CLI, Dagster, MLflow) does not change what the step computes
NOT_CODE = ("orchestration/cli.py", "orchestration/definitions.py", "orchestration/tracking.py",
            "orchestration/asset_factories.py", "orchestration/resources.py", "orchestration/lifecycle.py",
            "orchestration/registry.py", "orchestration/code_deps.py")


def _module_file(name: str, root: Path) -> Path | None:
    path = root.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)  # a submodule imported by name
    return {n for n in names if n.split(".")[0] in PACKAGES}


@cache
def code_deps(module: str, root: Path = ROOT) -> tuple[str, ...]:
    """Sorted project-relative paths of ``module``'s code closure (``orchestration.train_steps``)."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # importing a.b runs a/__init__.py
        path = _module_file(name, root)
        if path is None or path in seen:
            continue
        seen.add(path)
        todo += _imports(path)
    files = {p.relative_to(root).as_posix() for p in seen} - set(NOT_CODE)
    files |= {d for f in list(files) for d in MODULE_DATA.get(f, ())}
    return tuple(sorted(files))


@cache  # per process, as code_deps: the assets of one module share it
def code_version(module: str, root: Path = ROOT) -> str:
    """A digest of the closure's file contents: what changes when the step's code does."""
    h = hashlib.sha256()
    for rel in code_deps(module, root):
        h.update(rel.encode())
        h.update((root / rel).read_bytes())
    return h.hexdigest()[:16]
