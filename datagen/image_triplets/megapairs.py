"""MegaPairs: one JSON record per line, ``{"q_img", "q_text" | "q_texts", "t_img", "hns"}``, image paths
relative to an image root. ``q_texts`` is a list of instructions for one pair: one is drawn per record,
seeded by the run's seed and the line. ``hns[0]`` is the query image itself, so the hard negatives
are ``hns[1:]``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from datagen.image_triplets.record import Skip, Triplet, under
from datagen.image_triplets.sources import SourceError


def read(path: str | Path, image_root: str | Path | None, seed: int) -> Iterator[Triplet | Skip]:
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"MegaPairs annotations not found: {path}")
    root = Path(image_root) if image_root else path.parent
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path} line {n}"
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                yield Skip(str(n), where, "line is not valid JSON")
                continue
            if not isinstance(r, dict) or not isinstance(r.get("q_img"), str) or not isinstance(r.get("t_img"), str):
                yield Skip(str(n), where, "record without q_img / t_img paths")
                continue
            if "q_texts" in r:
                texts = r["q_texts"]
                if not isinstance(texts, list) or not texts:
                    yield Skip(str(n), where, "empty list of instructions")
                    continue
                instruction = texts[int(np.random.default_rng([seed, n]).integers(len(texts)))]
            else:
                instruction = r.get("q_text")
            paths = [under(root, p, where) for p in (r["q_img"], r["t_img"])]
            negatives = [under(root, p, where) for p in (r.get("hns") or [])[1:] if isinstance(p, str)]
            bad = next((p for p in paths + negatives if isinstance(p, Skip)), None)
            if bad is not None:
                yield Skip(str(n), where, bad.reason)
                continue
            yield Triplet(str(n), where, paths[0], paths[1], instruction, negatives=tuple(negatives))
