"""How many records a configured source holds, from its annotations and headers alone (no image is read):
what `compodiff plan` prints before a run."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from compodiff.benchmarks.common import read_json
from compodiff.benchmarks.fashioniq import CATEGORIES
from datagen.image_triplets.sources import SourceError
from datagen.image_triplets.synthtriplets import shards
from datagen.tar_samples import iter_samples


def paths(name: str, cfg) -> list[tuple[str, Path]]:
    """(what, path) the source reads: its root or file, and LaSCo's / MegaPairs' image root."""
    out = [("path", Path(cfg.path))]
    if cfg.corpus:
        out.append(("corpus", Path(cfg.corpus)))
    return out


def count(name: str, cfg) -> str:
    """A line saying how many records the source holds (``~`` where it is estimated from the first shard)."""
    root = Path(cfg.path)
    try:
        if name == "ip2p":
            n = sum(len(seeds) for _, seeds in read_json(root / "seeds.json"))
            return f"{n:,} pairs in seeds.json"
        if name == "ip2p_parquet":
            files = sorted(root.rglob("*.parquet")) if root.is_dir() else [root]
            return f"{sum(pq.read_metadata(f).num_rows for f in files):,} rows in {len(files)} parquet files"
        if name == "megapairs":
            with open(root, encoding="utf-8") as f:
                return f"{sum(1 for line in f if line.strip()):,} records"
        if name == "lasco":
            annotations = root / f"lasco_{cfg.split}.json" if root.is_dir() else root
            return f"{len(read_json(annotations)):,} records in {annotations.name}"
        if name == "synthtriplets":
            tars = shards(root)
            first = sum(1 for _ in iter_samples(tars[0]))
            return f"{len(tars):,} tar shards, {first:,} samples in the first: ~{first * len(tars):,}"
        if name == "cirr":
            return f"{len(read_json(root / 'captions' / f'cap.rc2.{cfg.split}.json')):,} CIRR {cfg.split} triplets"
        if name == "fashioniq":
            n = sum(len(read_json(root / "captions" / f"cap.{c}.{cfg.split}.json")) for c in CATEGORIES)
            return f"{n:,} FashionIQ {cfg.split} triplets"
    except (OSError, ValueError, TypeError, json.JSONDecodeError, SourceError) as err:
        raise SourceError(f"triplet_sources.{name}: {err}") from None
    raise ValueError(f"unknown triplet source {name!r}")
