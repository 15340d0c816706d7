"""CIRR: captions/cap.rc2.{split}.json and image_splits/split.rc2.{split}.json.

Rank the whole gallery, delete the reference from the ranking, then R@K (1, 5, 10, 50) with
``target_hard``; Recall_subset@K (1, 2, 3) restricts that ranking to the other five members of
``img_set``. Test1 is scored by the server: ``submission`` writes its two files.
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


@dataclass
class CIRRSplit:
    split: str
    pairids: list[int]
    references: list[str]
    targets: list[str | None]
    captions: list[str]
    members: list[list[str]]
    gallery: list[str]
    paths: dict[str, Path]

    def image(self, name: str) -> Path:
        if name not in self.paths:
            raise AnnotationError(f"CIRR {self.split}: {name!r} is not in the split file")
        return existing(self.paths[name], f"CIRR {self.split}")

    def index(self, names: list[str]) -> np.ndarray:
        pos = {n: i for i, n in enumerate(self.gallery)}
        missing = [n for n in names if n not in pos]
        if missing:
            raise AnnotationError(f"CIRR {self.split}: {missing[:3]} not in the gallery")
        return np.array([pos[n] for n in names])


def load(root: str | Path, split: str = "val", check_images: bool = True) -> CIRRSplit:
    root = Path(root)
    caps_path = root / "captions" / f"cap.rc2.{split}.json"
    rows = read_json(caps_path)
    split_path = root / "image_splits" / f"split.rc2.{split}.json"
    split_map = mapping(read_json(split_path), split_path)
    test = split.startswith("test")
    ids, refs, tgts, caps, members = [], [], [], [], []
    for n, e in entries(rows, caps_path):
        where = f"{caps_path} entry {n}"
        require(e, ("pairid", "reference", "caption", "img_set") + (() if test else ("target_hard",)), where)
        with fields(where):
            ids.append(integer(e["pairid"], "pairid", where))
            refs.append(text(e["reference"], "reference", where))
            tgts.append(None if test else text(e["target_hard"], "target_hard", where))
            caps.append(text(e["caption"], "caption", where))
            members.append(strings(e["img_set"]["members"], "img_set.members", where))
    paths = {name: (root / text(rel, f"the path of {name!r}", str(split_path))).resolve()
             for name, rel in split_map.items()}
    out = CIRRSplit(split, ids, refs, tgts, caps, members, list(split_map), paths)
    if check_images:
        for name in out.gallery:
            out.image(name)
    return out


def _reference_free(similarity: np.ndarray, reference_index: np.ndarray) -> np.ndarray:
    sim = np.array(similarity, dtype=np.float64)
    sim[np.arange(len(sim)), reference_index] = -np.inf
    return ranked(sim)[:, :-1]  # the reference is last; drop it


def metrics(similarity: np.ndarray, data: CIRRSplit) -> dict[str, float]:
    ref = data.index(data.references)
    tgt = data.index(data.targets)
    order = _reference_free(similarity, ref)
    hit = np.argmax(order == tgt[:, None], axis=1)
    out = {f"R@{k}": float(100 * (hit < k).mean()) for k in (1, 5, 10, 50)}
    sub_hits = []
    for q in range(len(order)):
        others = set(data.index([m for m in data.members[q] if m != data.references[q]]).tolist())
        subset = [g for g in order[q] if g in others]  # kept in model order
        sub_hits.append(subset.index(tgt[q]) if tgt[q] in subset else len(subset))
    sub_hits = np.array(sub_hits)
    out.update({f"R_subset@{k}": float(100 * (sub_hits < k).mean()) for k in (1, 2, 3)})
    out["Avg(R@5, R_subset@1)"] = (out["R@5"] + out["R_subset@1"]) / 2
    return out


def submission(similarity: np.ndarray, data: CIRRSplit, out_dir: str | Path, name: str) -> tuple[Path, Path]:
    """The server's two files: top 50 (reference excluded) and top 3 of the subset, names without extension."""
    order = _reference_free(similarity, data.index(data.references))
    recall = {"version": "rc2", "metric": "recall"}
    subset = {"version": "rc2", "metric": "recall_subset"}
    for q, pid in enumerate(data.pairids):
        recall[str(pid)] = [data.gallery[g] for g in order[q, :50]]
        others = {m for m in data.members[q] if m != data.references[q]}
        subset[str(pid)] = [data.gallery[g] for g in order[q] if data.gallery[g] in others][:3]
    out_dir = Path(out_dir)
    return (write_json(out_dir / f"recall_submission_{name}.json", recall, indent=None),
            write_json(out_dir / f"recall_subset_submission_{name}.json", subset, indent=None))
