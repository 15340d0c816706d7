"""Public triplet datasets read from local copies in their published layouts (InstructPix2Pix, MegaPairs,
LaSCo, SynthTriplets18M, the CIRR and FashionIQ training splits), converted into the project's triplet
shards, so ``triplet_features`` and ``stage2`` train on them as on the generated triplets."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

from datagen.image_triplets import ip2p, lasco, megapairs, supervised, synthtriplets
from datagen.image_triplets.record import Skip, Triplet

SOURCES = ("ip2p", "ip2p_parquet", "megapairs", "lasco", "synthtriplets", "cirr", "fashioniq")


def resolved(cfg, root: Path):
    """``cfg`` with its relative paths taken from the project root (where DVC and Dagster run steps)."""
    def absolute(ref):
        return ref if ref is None or Path(ref).is_absolute() else str(Path(root) / ref)
    return dataclasses.replace(cfg, path=absolute(cfg.path), corpus=absolute(cfg.corpus))


def read_source(name: str, cfg, seed: int) -> Iterator[Triplet | Skip]:
    """The records of source ``name`` configured by ``cfg`` (a TripletSourceConfig)."""
    readers = {
        "ip2p": lambda: ip2p.read_folder(cfg.path),
        "ip2p_parquet": lambda: ip2p.read_parquet(cfg.path),
        "megapairs": lambda: megapairs.read(cfg.path, cfg.corpus, seed),
        "lasco": lambda: lasco.read(cfg.path, cfg.split, cfg.corpus),
        "synthtriplets": lambda: synthtriplets.read(cfg.path, cfg.key_map),
        "cirr": lambda: supervised.read_cirr(cfg.path, cfg.split),
        "fashioniq": lambda: supervised.read_fashioniq(cfg.path, cfg.split, cfg.join),
    }
    if name not in readers:
        raise ValueError(f"unknown triplet source {name!r}; one of {SOURCES}")
    return readers[name]()


__all__ = ["SOURCES", "Skip", "Triplet", "read_source", "resolved"]
