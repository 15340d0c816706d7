"""World image-caption pairs: the procedural stand-in for LAION-2B."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datagen.config import WorldConfig
from datagen.shards import encode_png, is_complete, write_shard
from datagen.world.captions import caption
from datagen.world.render import render
from datagen.world.scene import sample_scene

PAIR_COLUMNS = ("id", "caption", "scene", "render_seed", "image_png", "segmap_png")


def shard_seed(seed: int, name: str) -> list[int]:
    """One independent random stream per (global seed, shard name)."""
    return [seed, *name.encode()]


def make_pairs(cfg: WorldConfig, seed: int, name: str, count: int) -> dict[str, list]:
    rng = np.random.default_rng(shard_seed(seed, name))
    cols: dict[str, list] = {c: [] for c in PAIR_COLUMNS}
    for i in range(count):
        scene = sample_scene(rng, cfg.max_objects)
        render_seed = int(rng.integers(2**31))
        image, segmap = render(scene, render_seed, cfg.image_size)
        cols["id"].append(f"{name}-{i:06d}")
        cols["caption"].append(caption(scene, rng, cfg.p_size, cfg.p_position))
        cols["scene"].append(scene.to_json())
        cols["render_seed"].append(render_seed)
        cols["image_png"].append(encode_png(image))
        cols["segmap_png"].append(encode_png(segmap))
    return cols


def write_pairs_shard(cfg: WorldConfig, seed: int, name: str, count: int, path: str | Path) -> dict:
    """Writes one packed shard; a complete shard with the same manifest is kept as is."""
    manifest = {"kind": "world_pairs", "shard": name, "count": count, "seed": seed,
                "image_size": cfg.image_size, "p_size": cfg.p_size, "p_position": cfg.p_position,
                "max_objects": cfg.max_objects}
    if is_complete(path, manifest):
        return {**manifest, "skipped": True}
    write_shard(path, make_pairs(cfg, seed, name, count), manifest)
    return {**manifest, "skipped": False}
