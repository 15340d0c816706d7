"""One image triplet as every reader yields it, before conversion.

Images are given as bytes (parquet, tar) or as a path under the dataset root (JSON layouts); the
converter reads and decodes them, so a reader never decodes and a missing image is counted where it
is found."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

ImageRef = bytes | Path


@dataclass(frozen=True)
class Triplet:
    key: str  # the record's id inside its dataset (prompt id + seed, qid, line number)
    where: str  # the file (and line) it was read from, for messages
    reference: ImageRef | None
    target: ImageRef | None
    instruction: str | None
    source_caption: str | None = None
    target_caption: str | None = None
    negatives: tuple[ImageRef, ...] = ()  # hard negatives (MegaPairs' hns, the query image excluded)
    scores: dict[str, float] = field(default_factory=dict)  # scores the dataset ships (IP2P's CLIP scores)


@dataclass(frozen=True)
class Skip:
    """A record the reader could not turn into a triplet, with why, to be counted."""

    key: str
    where: str
    reason: str


def under(root: Path, relative: str, where: str) -> Path | Skip:
    """``root/relative`` if it stays under root; a Skip for an absolute or climbing path (a hostile
    annotation file must not make the reader open /etc/passwd)."""
    candidate = (root / relative).resolve()
    if not candidate.is_relative_to(root.resolve()):
        return Skip(relative, where, "image path outside the dataset root")
    return candidate
