"""`compodiff plan`: a dry run of a profile. Resolves the config, checks every model and dataset it
names (local paths must exist; hub ids are looked up in the local Hugging Face cache, never
downloaded), and prints the steps in dependency order with their shards and expected sizes.
No weights are loaded."""

from __future__ import annotations

import os
from pathlib import Path

from compodiff.denoiser import preset
from compodiff.errors import InputError
from datagen.image_text_shards import SOURCE_EXTS
from orchestration.params import Params, load_params

HUB = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"


def _where(ref: str, root: Path) -> tuple[str, bool]:
    """(status, usable now) of a model reference: a local path, a cached hub id, or a hub id to fetch."""
    if ref.startswith("local-dir:"):
        ref = ref[len("local-dir:"):]
    path = Path(ref) if Path(ref).is_absolute() else root / ref
    if path.exists():
        return f"local: {path}", True
    if ref.startswith(("/", "./", "../")):
        return f"MISSING local path {ref}", False
    if (HUB / f"models--{ref.replace('/', '--')}").is_dir():
        return "hub id, in the local Hugging Face cache", True
    return "hub id, not cached: downloaded on first use (or set a local path)", False


def models(p: Params, root: Path) -> list[tuple[str, str, str, bool]]:
    out = []
    enc = p.encoder.model + (f" / {p.encoder.pretrained}" if p.encoder.pretrained else "")
    if p.encoder.train is not None:
        out.append(("CLIP encoder", enc, "trained by the encoder step", True))
    else:
        import open_clip

        known = (p.encoder.model, p.encoder.pretrained) in [tuple(x) for x in open_clip.list_pretrained()]
        out.append(("CLIP encoder (open_clip)", enc, "open_clip pretrained tag" + ("" if known else " NOT KNOWN"),
                    known))
    if p.sources and p.sources.text_encoder2:
        out.append(("second text encoder (T5)", p.sources.text_encoder2, *_where(p.sources.text_encoder2, root)))
    k = p.caption_triplets.keyword
    if k.spacy == "world":
        out.append(("spaCy pipeline", "world", "built from the world lexicon", True))
    else:
        import spacy

        ok = spacy.util.is_package(k.spacy) or Path(k.spacy).exists()
        out.append(("spaCy pipeline", k.spacy, "installed" if ok else f"NOT INSTALLED: python -m spacy download "
                    f"{k.spacy}", ok))
    llm = p.caption_triplets.llm
    out.append(("causal LM", llm.base_model or "world OPT", *(_where(llm.base_model, root) if llm.base_model
                                                             else ("trained by llm_adapter", True))))
    if p.image_pairs.generator == "diffusers":
        for ckpt in p.image_pairs.diffusers.checkpoints:
            out.append(("Stable Diffusion", ckpt, *_where(ckpt, root)))
    else:
        out.append(("image generator", "procedural", "the world renderer", True))
    if p.features.masks.startswith("clipseg:"):
        ref = p.features.masks[len("clipseg:"):]
        out.append(("CLIPSeg", ref, *_where(ref, root)))
    return out


def datasets(p: Params, root: Path) -> list[tuple[str, str, str, bool]]:
    out = []
    seeds = p.caption_triplets.llm.seed_triplets
    if seeds:
        out.append(("IP2P seed triplets", seeds, *_exists(seeds, root)))
    if p.sources is None:
        out.append(("image-text pairs", "procedural world", "rendered by world_pairs", True))
        return out
    for name in ("image_text_pairs", "captions", "fashioniq", "cirr", "circo", "genecis"):
        ref = getattr(p.sources, name)
        if ref:
            out.append((name, ref, *(_shard_files(ref, root, p.world.shards) if name == "image_text_pairs"
                                     else _exists(ref, root))))
    return out


def triplet_sources(p: Params, root: Path) -> list[tuple[str, str, str, bool]]:
    """Each configured public triplet source: its paths, and its record count from the annotations."""
    from datagen.image_triplets import SOURCES, resolved
    from datagen.image_triplets.counts import count, paths

    out = []
    for name in SOURCES:
        cfg = getattr(p.triplet_sources, name)
        if cfg is None:
            continue
        missing = [f"{what} {path}" for what, path in paths(name, cfg)
                   if not (path if path.is_absolute() else root / path).exists()]
        if missing:
            out.append((f"{name} (weight {cfg.weight:g})", cfg.path, "MISSING " + ", ".join(missing), False))
            continue
        try:
            out.append((f"{name} (weight {cfg.weight:g})", cfg.path, count(name, resolved(cfg, root)), True))
        except InputError as err:
            out.append((f"{name} (weight {cfg.weight:g})", cfg.path, f"UNREADABLE: {err}", False))
    return out


def _shard_files(ref: str, root: Path, shards: tuple[str, ...]) -> tuple[str, bool]:
    """world_pairs ingests one source file per shard (``datagen.image_text_shards.source_path``)."""
    path = Path(ref) if Path(ref).is_absolute() else root / ref
    if not path.is_dir():
        return "MISSING", False
    found = sum(any((path / f"{s}.{ext}").is_file() for ext in SOURCE_EXTS) for s in shards)
    return f"{found}/{len(shards)} shard files (.tar / .parquet)", found == len(shards)


def _exists(ref: str, root: Path) -> tuple[str, bool]:
    path = Path(ref) if Path(ref).is_absolute() else root / ref
    if not path.exists():
        return "MISSING", False
    n = sum(1 for _ in path.rglob("*")) if path.is_dir() else 1
    return f"found ({n} files)" if path.is_dir() else "found", True


def _gb(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:,.2f} GB" if n_bytes >= 1e8 else f"{n_bytes / 1e6:,.1f} MB"


def expected(p: Params) -> dict[str, str]:
    """Rough sizes per step, from the params alone."""
    w, ip = p.world, p.image_pairs
    pairs = len(w.shards) * w.pairs_per_shard
    image_bytes = w.image_size ** 2 * 3 * (0.5 if p.sources is None else 0.1)  # PNG world / JPEG photos
    triplets_cap = ip.max_triplets_per_shard * len(w.shards) if ip.max_triplets_per_shard else 2 * pairs
    gen = triplets_cap * ip.samples_per_triplet
    d = preset(p.training.denoiser).embed_dim if p.encoder.train is None else p.encoder.train.embed_dim
    t = p.training
    return {
        "world_pairs": f"{pairs:,} image-text pairs, {_gb(pairs * image_bytes)}",
        "caption_triplets": f"up to {2 * pairs + p.caption_triplets.llm.prompts:,} caption triplets",
        "image_pairs": f"{gen:,} generated pairs, {_gb(2 * gen * image_bytes)}",
        "pair_features": f"{pairs:,} x 2 x {d}-d, {_gb(pairs * 2 * d * 4)}",
        **{s: f"{c.steps:,} steps x {c.batch_size} = {c.steps * c.batch_size:,} samples"
           for s, c in (("stage1", t.stage1), ("stage2", t.stage2))},
        "faiss_index": f"{p.benchmark.index} index",
    }


def plan(root: Path, profile: str | None) -> int:
    from orchestration.definitions import build

    params_file = root / "profiles" / f"{profile}.yaml" if profile else root / "params.yaml"
    p = load_params(params_file)
    print(f"profile {p.profile} ({params_file}) resolves: {len(p.flat())} parameters, digest {p.digest()}\n")
    problems = 0
    init = p.training.stage2.init
    if init:  # a fine-tune starts from weights that must be there
        rows = [("stage-2 initial weights", init, *_exists(init, root))]
    sections = [("models", models(p, root) + (rows if init else [])), ("datasets", datasets(p, root))]
    sections.append(("triplet sources (generated triplets weigh "
                     f"{p.triplet_sources.generated_weight:g})", triplet_sources(p, root)))
    for title, rows in sections:
        print(f"{title}:")
        for what, ref, status, ok in rows:
            print(f"  {'ok ' if ok else '!! '} {what:26s} {ref:45s} {status}")
            problems += not ok
        print()
    project = build(root, str(params_file))
    graph = project.defs.resolve_asset_graph()
    sizes = expected(p)
    print(f"steps ({len(project.assets)}, dependency order; sharded steps fan out over {len(p.world.shards)} "
          "shards, image_triplets over its sources, real_benchmark over the benchmarks):")
    for key in graph.toposorted_asset_keys:
        name = key.to_user_string()
        asset = next(a for a in project.assets if key in a.keys)
        keys = asset.partitions_def.get_partition_keys() if asset.partitions_def is not None else []
        shards = ("" if not keys else f"[{len(keys)} shards]" if keys == list(p.world.shards)
                  else f"[{len(keys)} parts]")
        print(f"  {name:20s} {shards:12s} {sizes.get(name, '')}")
    print(f"\n{problems} item(s) not available here" if problems else "\neverything is available")
    return 1 if problems else 0
