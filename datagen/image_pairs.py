"""Image pairs from caption triplets (paper 4.3): the generator interface and its sharded writer.

A generator turns caption triplets into (reference image, target image) pairs, ``N`` samples per
triplet, each sample with its own seed from which every random choice of that sample follows
(IP2P: p ~ U(0.1, 0.9), guidance ~ U(7.5, 15)). Two generators implement it: the world renderer
(``datagen.world_generator``, the default) and Stable Diffusion with self-attention injection
(``datagen.sd_generator``).

A shard is written in parts of ``chunk_size`` triplets, each part atomically; a rerun skips the parts
already complete, so a shard killed mid-way finishes where it stopped, and the merged shard appears
only once every part is there.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa

from datagen.shards import encode_png, is_complete, read_shard, write_shard

TRIPLET_COLUMNS = ("id", "reference", "instruction", "target", "method", "source_keyword", "target_keyword",
                   "template_id")
PAIR_SCHEMA = pa.schema(
    [(c, pa.string()) for c in ("id", "triplet_id")] + [("sample", pa.int32()), ("seed", pa.int64()),
                                                       ("p", pa.float32()), ("guidance", pa.float32())]
    + [(c, pa.string()) for c in ("generator", "checkpoint", "status", "reason", "reference", "instruction",
                                  "target", "method", "source_keyword", "target_keyword")]
    + [(c, pa.binary()) for c in ("reference_png", "target_png", "reference_segmap_png", "target_segmap_png")]
    + [("template_id", pa.int32()), ("world_consistent", pa.bool_()), ("world_reason", pa.string())])
PAIR_COLUMNS = tuple(PAIR_SCHEMA.names)


@dataclass(frozen=True)
class PairRequest:
    """One sample to generate: a caption triplet and the seed of this sample."""

    triplet_id: str
    reference: str
    instruction: str
    target: str
    method: str
    source_keyword: str | None
    target_keyword: str | None
    template_id: int  # keyword triplets: the Table 2 template; -1 otherwise
    sample: int
    seed: int


@dataclass
class PairResult:
    """What a generator returns for one request; ``images`` is None when generation failed."""

    p: float
    guidance: float
    images: tuple[np.ndarray, np.ndarray] | None
    reason: str = ""
    segmaps: tuple[np.ndarray, np.ndarray] | None = None  # world only: exact object masks
    world_consistent: bool | None = None  # world only: ground truth of the pair
    world_reason: str = ""
    checkpoint: str = ""  # which generator checkpoint made it (SD rotation)


class PairGenerator(Protocol):
    name: str

    def generate(self, requests: list[PairRequest]) -> list[PairResult]: ...


def sample_seed(global_seed: int, triplet_id: str, sample: int) -> int:
    """A per-sample seed that depends only on (global seed, triplet, sample index): stable under
    resharding, so a sample regenerates identically wherever it lands."""
    digest = hashlib.blake2b(f"{global_seed}|{triplet_id}|{sample}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % (2**31)


def sample_parameters(seed: int, p_range: tuple[float, float],
                      guidance_range: tuple[float, float]) -> tuple[float, float]:
    """IP2P's per-sample draws (injection fraction p, guidance scale), reproducible from the seed."""
    rng = np.random.default_rng([seed, 2])
    return float(rng.uniform(*p_range)), float(rng.uniform(*guidance_range))


def requests_for(triplets: dict[str, list], samples: int, global_seed: int) -> list[PairRequest]:
    n = len(triplets["id"])
    out = []
    for i in range(n):
        for k in range(samples):
            out.append(PairRequest(
                triplets["id"][i], triplets["reference"][i], triplets["instruction"][i], triplets["target"][i],
                triplets["method"][i], triplets["source_keyword"][i], triplets["target_keyword"][i],
                int(triplets["template_id"][i]), k,
                sample_seed(global_seed, triplets["id"][i], k)))
    return out


def _rows(generator: str, requests: list[PairRequest], results: list[PairResult]) -> dict[str, list]:
    cols: dict[str, list] = {c: [] for c in PAIR_COLUMNS}
    for r, res in zip(requests, results, strict=True):
        ok = res.images is not None
        if ok:
            for name, img in zip(("reference", "target"), res.images):
                if img.size == 0 or not np.isfinite(img).all():
                    raise ValueError(f"generator {generator} returned an empty or non-finite {name} image "
                                     f"for triplet {r.triplet_id} sample {r.sample}")
        cols["id"].append(f"{r.triplet_id}#{r.sample}")
        cols["triplet_id"].append(r.triplet_id)
        cols["sample"].append(r.sample)
        cols["seed"].append(r.seed)
        cols["p"].append(res.p)
        cols["guidance"].append(res.guidance)
        cols["generator"].append(generator)
        cols["checkpoint"].append(res.checkpoint)
        cols["status"].append("ok" if ok else "failed")
        cols["reason"].append(res.reason)
        for c in ("reference", "instruction", "target", "method", "source_keyword", "target_keyword", "template_id"):
            cols[c].append(getattr(r, c))
        cols["reference_png"].append(encode_png(res.images[0]) if ok else b"")
        cols["target_png"].append(encode_png(res.images[1]) if ok else b"")
        seg = res.segmaps if ok else None
        cols["reference_segmap_png"].append(encode_png(seg[0]) if seg is not None else b"")
        cols["target_segmap_png"].append(encode_png(seg[1]) if seg is not None else b"")
        cols["world_consistent"].append(res.world_consistent)
        cols["world_reason"].append(res.world_reason)
    return cols


def generate_shard(generator: PairGenerator, triplets: dict[str, list], samples: int, global_seed: int,
                   chunk_size: int, path: str | Path, manifest: dict,
                   log: Callable[[str], None] = print) -> dict:
    """Generate every sample of ``triplets`` into ``path``; resumable by parts. Returns statistics."""
    path = Path(path)
    content = hashlib.blake2b("\n".join(f"{i}|{r}|{t}" for i, r, t in zip(
        triplets["id"], triplets["reference"], triplets["target"])).encode(), digest_size=8).hexdigest()
    manifest = {**manifest, "generator": generator.name, "samples_per_triplet": samples, "seed": global_seed,
                "triplets": len(triplets["id"]), "triplets_digest": content, "chunk_size": chunk_size}
    if is_complete(path, manifest):  # kept as is; report what it holds, as a fresh write would
        status = read_shard(path, ["status"]).column("status").to_pylist()
        return {**manifest, "pairs": len(status), "failed": sum(s != "ok" for s in status), "skipped": True}
    parts_dir = path.with_name(path.stem + ".parts")
    parts_dir.mkdir(parents=True, exist_ok=True)
    n = len(triplets["id"])
    starts = list(range(0, n, chunk_size)) or [0]
    part_paths = []
    for k, start in enumerate(starts):
        part = parts_dir / f"{k:05d}.parquet"
        part_paths.append(part)
        part_manifest = {**manifest, "part": k, "start": start}
        if is_complete(part, part_manifest):
            continue  # finished by an earlier, interrupted run
        chunk = {c: v[start:start + chunk_size] for c, v in triplets.items()}
        requests = requests_for(chunk, samples, global_seed)
        results = generator.generate(requests)
        write_shard(part, _rows(generator.name, requests, results), part_manifest, PAIR_SCHEMA)
        log(f"{path.stem}: part {k + 1}/{len(starts)} ({min(n, start + chunk_size)}/{n} triplets)")
    table = pa.concat_tables([read_shard(p) for p in part_paths])
    cols = table.replace_schema_metadata(None).to_pydict()
    failed = sum(s != "ok" for s in cols["status"])
    write_shard(path, cols, manifest, PAIR_SCHEMA)
    shutil.rmtree(parts_dir, ignore_errors=True)
    return {**manifest, "pairs": len(cols["id"]), "failed": failed, "skipped": False}
