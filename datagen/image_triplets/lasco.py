"""LaSCo: ``lasco_{split}.json`` records ``{"qid", "query-image": [coco_id, path], "query-text",
"target-image": [coco_id, path]}`` over COCO 2014. The records' path prefixes do not match the image
folders as distributed (``val/val2014/...``), so images are joined by COCO id: the corpus is indexed by
the id in each ``COCO_{train,val}2014_<id>.jpg`` file name under the COCO root."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

from compodiff.benchmarks.common import AnnotationError, read_json
from datagen.image_triplets.record import Skip, Triplet
from datagen.image_triplets.sources import SourceError

COCO_NAME = re.compile(r"COCO_(?:train|val)2014_0*(\d+)\.(?:jpg|jpeg|png)$", re.IGNORECASE)


def corpus_index(root: str | Path) -> dict[int, Path]:
    """COCO id -> image file, from the file names under ``root`` (any depth)."""
    root = Path(root)
    if not root.is_dir():
        raise SourceError(f"LaSCo corpus (the COCO 2014 image root) not found: {root}")
    index: dict[int, Path] = {}
    for folder, _, files in os.walk(root):
        for name in files:
            m = COCO_NAME.match(name)
            if m:
                index[int(m.group(1))] = Path(folder) / name
    return index


def _coco_id(value, where: str) -> int:
    if not (isinstance(value, list) and len(value) == 2):
        raise AnnotationError(f"{where}: an image must be [coco_id, path], got {value!r}"[:200])
    try:
        return int(value[0])
    except (TypeError, ValueError):
        raise AnnotationError(f"{where}: COCO id {value[0]!r} is not an integer") from None


def read(path: str | Path, split: str, corpus: str | Path | None) -> Iterator[Triplet | Skip]:
    path = Path(path)
    annotations = path / f"lasco_{split}.json" if path.is_dir() else path
    records = read_json(annotations)
    if not isinstance(records, list):
        raise AnnotationError(f"{annotations}: expected a list of records")
    if corpus is None:
        raise SourceError("LaSCo needs triplet_sources.lasco.corpus: the COCO 2014 image root")
    index = corpus_index(corpus)
    for n, r in enumerate(records):
        where = f"{annotations} record {n}"
        if not isinstance(r, dict) or "query-image" not in r or "target-image" not in r:
            yield Skip(str(n), where, "record without query-image / target-image")
            continue
        qid = str(r.get("qid", n))
        ids = (_coco_id(r["query-image"], where), _coco_id(r["target-image"], where))
        missing = [i for i in ids if i not in index]
        if missing:
            yield Skip(qid, f"{where} (COCO id {missing[0]})", "COCO id not in the corpus")
            continue
        yield Triplet(qid, where, index[ids[0]], index[ids[1]], r.get("query-text"))
