"""CIRCO: annotations/{val,test}.json over the COCO 2017 unlabeled gallery (the reference stays).

mAP@K (5, 10, 25, 50) as the server script computes it: the top 50 unique ids, P@i over them,
AP@K = sum_{i<=K} P@i rel_i / min(|GT|, K). Also recall@K of ``target_img_id`` and per-aspect mAP@10.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compodiff.atomic import write_json
from compodiff.benchmarks.common import (
    AnnotationError,
    entries,
    existing,
    fields,
    integer,
    mapping,
    ranked,
    read_json,
    require,
    strings,
    text,
)

KS = (5, 10, 25, 50)


@dataclass
class CIRCOSplit:
    split: str
    query_ids: list[int]
    references: list[int]
    captions: list[str]
    shared_concepts: list[str]
    ground_truths: list[list[int]]
    targets: list[int | None]
    aspects: list[list[str]]
    gallery: list[int]
    image_dir: Path

    def image(self, image_id: int) -> Path:
        return existing(self.image_dir / f"{int(image_id):012d}.jpg", f"CIRCO {self.split}")


def load(root: str | Path, split: str = "val", check_images: bool = True) -> CIRCOSplit:
    root = Path(root)
    path = root / "annotations" / f"{split}.json"
    rows = read_json(path)
    info_path = root / "COCO2017_unlabeled" / "annotations" / "image_info_unlabeled2017.json"
    info = mapping(read_json(info_path), info_path)
    require(info, ("images",), str(info_path))
    with fields(str(info_path)):
        gallery = [integer(im["id"], "an image id", str(info_path)) for im in info["images"]]
    test = split == "test"
    q = {k: [] for k in ("id", "ref", "cap", "concept", "gt", "target", "aspects")}
    for n, e in entries(rows, path):
        where = f"{path} entry {n}"
        require(e, ("id", "reference_img_id", "relative_caption", "shared_concept")
                + (() if test else ("gt_img_ids", "target_img_id")), where)
        with fields(where):
            if integer(e["id"], "id", where) != n:
                raise AnnotationError(f"{where}: id {e['id']} is not its index")
            q["id"].append(n)
            q["ref"].append(integer(e["reference_img_id"], "reference_img_id", where))
            q["cap"].append(text(e["relative_caption"], "relative_caption", where))
            q["concept"].append(text(e["shared_concept"], "shared_concept", where))
            gt = e.get("gt_img_ids", [])
            if not isinstance(gt, list):
                raise AnnotationError(f"{where}: gt_img_ids must be a list of ids")
            q["gt"].append([integer(x, "each of gt_img_ids", where) for x in gt])
            target = e.get("target_img_id")
            q["target"].append(None if target is None else integer(target, "target_img_id", where))
            q["aspects"].append(strings(e.get("semantic_aspects", []), "semantic_aspects", where))
    out = CIRCOSplit(split, q["id"], q["ref"], q["cap"], q["concept"], q["gt"], q["target"], q["aspects"], gallery,
                     root / "COCO2017_unlabeled" / "unlabeled2017")
    if check_images:
        for i in gallery:
            out.image(i)
    return out


def top_unique(similarity: np.ndarray, gallery: list[int], k: int = 50) -> list[list[int]]:
    order = ranked(similarity)
    out = []
    for row in order:
        seen, ids = set(), []
        for g in row:
            gid = gallery[g]
            if gid not in seen:
                seen.add(gid)
                ids.append(gid)
                if len(ids) == k:
                    break
        out.append(ids)
    return out


def average_precision(retrieved: list[int], ground_truth: list[int], k: int) -> float:
    gt = set(ground_truth)
    rel = np.array([1.0 if r in gt else 0.0 for r in retrieved[:k]])
    if not gt:
        raise ValueError("a query without ground truth has no average precision")
    precision = np.cumsum(rel) / np.arange(1, len(rel) + 1)
    return float((precision * rel).sum() / min(len(gt), k))


def metrics(retrieved: list[list[int]], ground_truths: list[list[int]], targets: list[int] | None = None,
            aspects: list[list[str]] | None = None) -> dict[str, float]:
    out = {f"mAP@{k}": float(100 * np.mean([average_precision(r, g, k) for r, g in zip(retrieved, ground_truths)]))
           for k in KS}
    if targets is not None:
        for k in KS:
            out[f"R@{k}"] = float(100 * np.mean([t in r[:k] for r, t in zip(retrieved, targets)]))
    if aspects is not None:
        for a in sorted({x for xs in aspects for x in xs}):
            idx = [i for i, xs in enumerate(aspects) if a in xs]
            out[f"mAP@10[{a}]"] = float(100 * np.mean([average_precision(retrieved[i], ground_truths[i], 10)
                                                        for i in idx]))
    return out


def submission(retrieved: list[list[int]], path: str | Path) -> Path:
    """The server's file: {"0": [50 ids], ..., "N-1": [...]}, keys exactly 0..N-1."""
    if any(len(r) != 50 for r in retrieved):
        raise ValueError("every CIRCO submission row needs 50 ids")
    return write_json(path, {str(i): [int(x) for x in r] for i, r in enumerate(retrieved)}, indent=None)
