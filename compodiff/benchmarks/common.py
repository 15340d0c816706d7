"""What the four evaluators share: strict JSON reading, image paths that must exist, rankings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from compodiff.errors import InputError


class AnnotationError(InputError):
    pass


def read_json(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise AnnotationError(f"{path} is not valid JSON: {err}") from None


def require(entry: dict, keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if k not in entry]
    if missing:
        raise AnnotationError(f"{where}: missing field(s) {missing} in {json.dumps(entry)[:200]}")


def existing(path: Path, what: str) -> Path:
    """Peers silently drop a query whose image is missing; that changes the numbers, so fail."""
    if not path.is_file():
        raise FileNotFoundError(f"{what}: image not found: {path}")
    return path


def ranked(similarity: np.ndarray) -> np.ndarray:
    """Columns by (-score, column index) per row: deterministic, the peers' order without exact ties."""
    sim = np.asarray(similarity, dtype=np.float64)
    if sim.ndim != 2 or sim.shape[1] == 0:
        raise ValueError(f"similarity must be (queries, gallery) with a non-empty gallery, got {sim.shape}")
    if np.isnan(sim).any():
        raise ValueError("similarity holds NaN")
    cols = np.broadcast_to(np.arange(sim.shape[1]), sim.shape)
    return np.lexsort((cols, -sim), axis=1)
