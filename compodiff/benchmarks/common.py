"""What the four evaluators share: strict JSON reading, image paths that must exist, rankings."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from compodiff.errors import InputError


class AnnotationError(InputError):
    pass


class MissingFile(AnnotationError, FileNotFoundError):
    """An annotation file, or an image it names, that is not there."""


def read_json(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise MissingFile(f"annotation file not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise AnnotationError(f"{path} is not valid JSON: {err}") from None


def entries(data, path: str | Path) -> Iterator[tuple[int, dict]]:
    """The (index, entry) pairs of an annotation file that must be a list of objects."""
    if not isinstance(data, list):
        raise AnnotationError(f"{path}: expected a list of entries, got {type(data).__name__}")
    for n, e in enumerate(data):
        if not isinstance(e, dict):
            raise AnnotationError(f"{path} entry {n}: expected an object, got {type(e).__name__}")
        yield n, e


def mapping(data, path: str | Path) -> dict:
    """An annotation file that must be one object (a split file: name -> path)."""
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: expected an object, got {type(data).__name__}")
    return data


@contextmanager
def fields(where: str):
    """A field of the wrong type or value (a word where an id belongs, a number where a list does) is an
    AnnotationError that names its entry, not a TypeError from deep inside the loader."""
    try:
        yield
    except AnnotationError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as err:
        raise AnnotationError(f"{where}: malformed field ({type(err).__name__}: {err})") from None


def text(value, what: str, where: str) -> str:
    if not isinstance(value, str):
        raise AnnotationError(f"{where}: {what} must be a string, got {json.dumps(value)[:80]}")
    return value


def strings(value, what: str, where: str) -> list[str]:
    if not isinstance(value, list):
        raise AnnotationError(f"{where}: {what} must be a list of strings, got {json.dumps(value)[:80]}")
    return [text(v, f"each of {what}", where) for v in value]


def integer(value, what: str, where: str) -> int:
    """An id: a JSON integer, or a string of digits (COCO ids are written both ways)."""
    if isinstance(value, bool) or not (isinstance(value, int) or isinstance(value, str) and value.isdigit()):
        raise AnnotationError(f"{where}: {what} must be an integer id, got {json.dumps(value)[:80]}")
    return int(value)


def require(entry: dict, keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if k not in entry]
    if missing:
        raise AnnotationError(f"{where}: missing field(s) {missing} in {json.dumps(entry)[:200]}")


def existing(path: Path, what: str) -> Path:
    """Peers silently drop a query whose image is missing; that changes the numbers, so fail."""
    if not path.is_file():
        raise MissingFile(f"{what}: image not found: {path}")
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
