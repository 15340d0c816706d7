"""GeneCIS: {focus,change}_{attribute,object}.json; candidates = [target] + gallery, target at index 0.

R@1/2/3 per task = fraction of templates whose index 0 is in the top k; the headline is the
unweighted mean of R@1 over the four tasks. Attribute tasks crop around the instance box and pad
to a black square before the model's preprocessing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from compodiff.benchmarks.common import AnnotationError, entries, existing, integer, ranked, read_json, require, text

TASKS = ("focus_attribute", "change_attribute", "focus_object", "change_object")


@dataclass
class Template:
    reference: dict
    target: dict
    gallery: list[dict]
    condition: str


@dataclass
class GeneCISTask:
    task: str
    templates: list[Template]
    image_root: Path

    @property
    def is_attribute(self) -> bool:
        return self.task.endswith("attribute")

    def image(self, item: dict) -> Image.Image:
        """The image of an item, cropped and padded for attribute tasks."""
        if self.is_attribute:
            path = existing(self.image_root / f"{item['image_id']}.jpg", f"GeneCIS {self.task}")
            with Image.open(path) as im:
                return attribute_crop(im.convert("RGB"), item["instance_bbox"])
        path = existing(self.image_root / f"{int(item['val_image_id']):012d}.jpg", f"GeneCIS {self.task}")
        with Image.open(path) as im:
            return im.convert("RGB")


def attribute_crop(image: Image.Image, bbox: list[float]) -> Image.Image:
    x, y, w, h = bbox
    width, height = image.size
    left, top = max(0.0, x - 0.7 * w), max(0.0, y - 0.7 * h)
    right, bottom = min(width, left + 1.7 * w), min(height, top + 1.7 * h)
    crop = image.crop((left, top, right, bottom))
    side = max(crop.size)
    square = Image.new("RGB", (side, side), (0, 0, 0))
    square.paste(crop, ((side - crop.size[0]) // 2, (side - crop.size[1]) // 2))
    return square


def load(path: str | Path, image_root: str | Path, task: str | None = None) -> GeneCISTask:
    path = Path(path)
    task = task or path.stem
    if task not in TASKS:
        raise ValueError(f"unknown GeneCIS task {task!r}; one of {TASKS}")
    key = "image_id" if task.endswith("attribute") else "val_image_id"
    templates = []
    for n, e in entries(read_json(path), path):
        where = f"{path} entry {n}"
        require(e, ("reference", "target", "gallery", "condition"), where)
        if not isinstance(e["gallery"], list):
            raise AnnotationError(f"{where}: 'gallery' must be a list of items")
        for item in [e["reference"], e["target"], *e["gallery"]]:
            _check_item(item, key, task.endswith("attribute"), where)
        templates.append(Template(e["reference"], e["target"], list(e["gallery"]), text(e["condition"], "condition",
                                                                                          where)))
    return GeneCISTask(task, templates, Path(image_root))


def _check_item(item, key: str, attribute: bool, where: str) -> None:
    """An item names its image by an integer id; an attribute item also carries its box [x, y, w, h]."""
    if not isinstance(item, dict) or key not in item or (attribute and "instance_bbox" not in item):
        raise AnnotationError(f"{where}: an item lacks {key!r}" + (" or 'instance_bbox'" if attribute else ""))
    integer(item[key], key, where)
    box = item.get("instance_bbox")
    if attribute and not (isinstance(box, list) and len(box) == 4 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box)):
        raise AnnotationError(f"{where}: instance_bbox must be four numbers [x, y, w, h], got {box!r:.80}")


def recall(similarity: list[np.ndarray] | np.ndarray, ks=(1, 2, 3)) -> dict[str, float]:
    """``similarity``: per template, scores of [target] + gallery (index 0 is the target)."""
    ranks = []
    for s in similarity:
        order = ranked(np.asarray(s, dtype=np.float64)[None])[0]
        ranks.append(int(np.flatnonzero(order == 0)[0]))
    ranks = np.array(ranks)
    return {f"R@{k}": float(100 * (ranks < k).mean()) for k in ks}


def mean_r1(per_task: dict[str, dict[str, float]]) -> float:
    return float(np.mean([m["R@1"] for m in per_task.values()]))
