"""The world benchmark written in the official file formats of FashionIQ, CIRR, CIRCO and GeneCIS, so
the real-benchmark loaders and evaluators run on it end to end.

Gallery item g is image ``w{g:06d}`` (FashionIQ ASIN, CIRR name) or id ``g + 1`` (CIRCO, GeneCIS COCO
ids); every format's gallery keeps the world gallery's order, so one similarity matrix serves all.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from compodiff.atomic import atomic_dir


def name(g: int) -> str:
    return f"w{g:06d}"


def export(images: list[np.ndarray], queries: list[dict], out: str | Path, members: int = 6,
           genecis_gallery: int = 9) -> Path:
    """``queries``: dicts with qid, reference (gallery index), instruction, ground_truth (gallery
    indices, first = the target), hard_negatives (gallery indices). Returns the export root."""
    out = Path(out)
    with atomic_dir(out) as tmp:
        img_dir = tmp / "images"
        img_dir.mkdir()
        for g, im in enumerate(images):
            Image.fromarray(im).save(img_dir / f"{name(g)}.png")
        _fashioniq(tmp / "fashioniq", img_dir, len(images), queries)
        _cirr(tmp / "cirr", img_dir, len(images), queries, members)
        _circo(tmp / "circo", img_dir, len(images), queries)
        _genecis(tmp / "genecis", img_dir, queries, genecis_gallery)
    return out


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _link(src: Path, dst: Path) -> None:
    """The formats differ in names, not in pixels; relative, so the export can move as a whole."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.symlink_to(os.path.relpath(src, dst.parent))


def _fashioniq(root: Path, img_dir: Path, n: int, queries: list[dict]) -> None:
    for g in range(n):
        _link(img_dir / f"{name(g)}.png", root / "images" / f"{name(g)}.jpg")
    _write(root / "image_splits" / "split.world.val.json", [name(g) for g in range(n)])
    _write(root / "captions" / "cap.world.val.json",
           [{"candidate": name(q["reference"]), "target": name(q["ground_truth"][0]),
             "captions": [q["instruction"], q["instruction"]]} for q in queries])


def _cirr(root: Path, img_dir: Path, n: int, queries: list[dict], members: int) -> None:
    for g in range(n):
        _link(img_dir / f"{name(g)}.png", root / "dev" / f"{name(g)}.png")
    _write(root / "image_splits" / "split.rc2.val.json", {name(g): f"./dev/{name(g)}.png" for g in range(n)})
    entries = []
    for q in queries:
        group = [q["reference"], q["ground_truth"][0]]
        group += [h for h in q["hard_negatives"] if h not in group][:members - 2]
        target = name(q["ground_truth"][0])
        entries.append({"pairid": q["qid"], "reference": name(q["reference"]), "target_hard": target,
                        "target_soft": {name(q["ground_truth"][0]): 1.0}, "caption": q["instruction"],
                        "img_set": {"id": q["qid"], "members": [name(g) for g in group]}})
    _write(root / "captions" / "cap.rc2.val.json", entries)


def _circo(root: Path, img_dir: Path, n: int, queries: list[dict]) -> None:
    base = root / "COCO2017_unlabeled"
    for g in range(n):
        _link(img_dir / f"{name(g)}.png", base / "unlabeled2017" / f"{g + 1:012d}.jpg")
    _write(base / "annotations" / "image_info_unlabeled2017.json", {"images": [{"id": g + 1} for g in range(n)]})
    _write(root / "annotations" / "val.json",
           [{"id": i, "reference_img_id": q["reference"] + 1, "target_img_id": q["ground_truth"][0] + 1,
             "relative_caption": q["instruction"], "shared_concept": q["kind"],
             "gt_img_ids": [g + 1 for g in q["ground_truth"]], "semantic_aspects": [q["kind"]]}
            for i, q in enumerate(queries)])


def _genecis(root: Path, img_dir: Path, queries: list[dict], gallery: int) -> None:
    used = set()
    rows = []
    for q in queries:
        cands = [h for h in q["hard_negatives"] if h not in q["ground_truth"]][:gallery]
        used.update([q["reference"], q["ground_truth"][0], *cands])
        rows.append({"reference": {"val_image_id": q["reference"] + 1},
                     "target": {"val_image_id": q["ground_truth"][0] + 1},
                     "gallery": [{"val_image_id": g + 1} for g in cands], "condition": q["instruction"]})
    for g in used:
        _link(img_dir / f"{name(g)}.png", root / "images" / f"{g + 1:012d}.jpg")
    _write(root / "change_object.json", rows)
