"""CIRR and FashionIQ training splits as triplets, through the evaluators' own loaders, for the
supervised fine-tuning of the paper's Appendix B (zero-shot weights, then the target training set)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from compodiff.benchmarks import cirr, fashioniq
from datagen.image_triplets.record import Triplet


def read_cirr(root: str | Path, split: str = "train") -> Iterator[Triplet]:
    data = cirr.load(root, split, check_images=False)  # a missing image is counted where it is read
    where = str(Path(root) / "captions" / f"cap.rc2.{split}.json")
    for pid, ref, tgt, cap in zip(data.pairids, data.references, data.targets, data.captions):
        yield Triplet(str(pid), f"{where} pairid {pid}", data.paths.get(ref, Path(root) / "missing" / ref),
                      data.paths.get(tgt, Path(root) / "missing" / str(tgt)), cap)


def read_fashioniq(root: str | Path, split: str = "train", join: str = "clip4cir") -> Iterator[Triplet]:
    for category in fashioniq.CATEGORIES:
        data = fashioniq.load(root, category, split, join, check_images=False)
        where = str(Path(root) / "captions" / f"cap.{category}.{split}.json")
        for n, (cand, tgt, texts) in enumerate(zip(data.candidates, data.targets, data.texts)):
            yield Triplet(f"{category}/{n}", f"{where} entry {n}", data.image_dir / f"{cand}{data.image_ext}",
                          data.image_dir / f"{tgt}{data.image_ext}", texts[0])
