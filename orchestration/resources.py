"""Dagster resources: the project root and its params file (MLflow's is orchestration.tracking)."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from orchestration.layout import Layout
from orchestration.params import Params, load_params

ROOT_ENV = "COMPODIFF_ROOT"


def project_root() -> Path:
    return Path(os.environ.get(ROOT_ENV) or os.getcwd()).resolve()


class ProjectResource(dg.ConfigurableResource):
    """The project root and its params file (params.yaml unless COMPODIFF_PARAMS says otherwise)."""

    root: str = "."
    params_file: str = "params.yaml"

    def params(self) -> Params:
        path = Path(self.params_file)
        return load_params(path if path.is_absolute() else Path(self.root) / path)

    def layout(self) -> Layout:
        return Layout(Path(self.root).resolve(), self.params())
