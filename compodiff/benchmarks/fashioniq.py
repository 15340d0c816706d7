"""FashionIQ: captions/cap.{cat}.{split}.json, image_splits/split.{cat}.{split}.json, images/<ASIN>.jpg.

R@10 / R@50 per category over the category's gallery; the reference stays in the gallery. The
caption join is a named option, recorded with the result, because the peers differ:
"clip4cir" ("C0 and c1", stripped), "searle" (both orders, each stripped: two texts whose
normalised encodings are averaged), "pic2word" ("c1 and c0", unstripped).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compodiff.benchmarks.common import AnnotationError, entries, existing, ranked, read_json, require, strings, text

CATEGORIES = ("dress", "shirt", "toptee")
JOINS = ("clip4cir", "searle", "pic2word")


def join_captions(c0: str, c1: str, join: str) -> list[str]:
    """The query text(s) of one FashionIQ query: one text, or two to be averaged ("searle")."""
    if join == "clip4cir":
        return [f"{c0.strip('.?, ').capitalize()} and {c1.strip('.?, ')}"]
    if join == "searle":
        a, b = c0.strip(".?, "), c1.strip(".?, ")
        return [f"{a} and {b}", f"{b} and {a}"]
    if join == "pic2word":
        return [f"{c1} and {c0}"]
    raise ValueError(f"unknown FashionIQ caption join {join!r}; one of {JOINS}")


@dataclass
class FashionIQSplit:
    category: str
    split: str
    join: str
    candidates: list[str]
    targets: list[str | None]
    texts: list[list[str]]
    gallery: list[str]
    image_dir: Path
    image_ext: str = ".jpg"

    def image(self, asin: str) -> Path:
        return existing(self.image_dir / f"{asin}{self.image_ext}", f"FashionIQ {self.category}/{self.split}")

    def target_indices(self) -> np.ndarray:
        pos = {a: i for i, a in enumerate(self.gallery)}
        missing = [t for t in self.targets if t not in pos]
        if missing:
            raise AnnotationError(f"FashionIQ {self.category}/{self.split}: target(s) {missing[:3]} not in the gallery")
        return np.array([pos[t] for t in self.targets])


def load(root: str | Path, category: str, split: str = "val", join: str = "searle",
         image_ext: str = ".jpg", check_images: bool = True) -> FashionIQSplit:
    root = Path(root)
    if category not in CATEGORIES and not (root / "captions" / f"cap.{category}.{split}.json").is_file():
        raise ValueError(f"unknown FashionIQ category {category!r}; one of {CATEGORIES}")
    caps_path = root / "captions" / f"cap.{category}.{split}.json"
    rows = read_json(caps_path)
    split_path = root / "image_splits" / f"split.{category}.{split}.json"
    gallery = strings(read_json(split_path), "the split file", str(split_path))
    cands, targets, texts = [], [], []
    for n, e in entries(rows, caps_path):
        where = f"{caps_path} entry {n}"
        require(e, ("candidate", "captions"), where)
        captions = strings(e["captions"], "captions", where)
        if len(captions) != 2:
            raise AnnotationError(f"{where}: 'captions' must hold two captions")
        cands.append(text(e["candidate"], "candidate", where))
        targets.append(None if e.get("target") is None else text(e["target"], "target", where))
        texts.append(join_captions(captions[0], captions[1], join))
    out = FashionIQSplit(category, split, join, cands, targets, texts, list(gallery), root / "images", image_ext)
    if check_images:
        for a in {*cands, *gallery}:
            out.image(a)
    return out


def recall(similarity: np.ndarray, target_index: np.ndarray, ks=(10, 50)) -> dict[str, float]:
    """100 * fraction of queries whose target is in the top K (reference not removed)."""
    order = ranked(similarity)
    hit_rank = np.argmax(order == np.asarray(target_index)[:, None], axis=1)
    return {f"R@{k}": float(100 * (hit_rank < k).mean()) for k in ks}


def average(per_category: dict[str, dict[str, float]]) -> dict[str, float]:
    """Unweighted mean over categories, and Avg = (R@10 + R@50) / 2."""
    r10 = float(np.mean([m["R@10"] for m in per_category.values()]))
    r50 = float(np.mean([m["R@50"] for m in per_category.values()]))
    return {"R@10": r10, "R@50": r50, "Avg": (r10 + r50) / 2}
