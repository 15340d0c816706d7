"""The image-pair steps (paper 4.3-4.4): image_pairs (per shard) and filtered_triplets.
Plain functions called by the Dagster assets and the CLI."""

from __future__ import annotations

import hashlib
import time

import numpy as np
import torch

from compodiff.atomic import atomic_dir, write_json
from compodiff.config_schema import ConfigError
from compodiff.encoders import load_encoder
from compodiff.feature_store import save_features
from datagen.clip_filter import SCORES, apply_filter, clip_scores
from datagen.coverage import filter_by_kind, kind_counts
from datagen.image_pairs import TRIPLET_COLUMNS, generate_shard
from datagen.shards import decode_png, read_shard, write_shard
from datagen.world.truth import edit_kind
from orchestration.cores import cores
from orchestration.layout import Layout
from orchestration.steps import Log, check_shard, in_processes

IMAGE_EMBEDDINGS = "image_embeddings.npz"  # the kept pairs' raw CLIP image embeddings, beside pairs.parquet


def make_generator(layout: Layout):
    p = layout.params
    kind = p.image_pairs.generator
    if kind == "procedural":
        from datagen.world_generator import ProceduralGenerator

        return ProceduralGenerator(p.world.image_size)
    if kind == "diffusers":
        from datagen.sd_generator import StableDiffusionPairGenerator

        return StableDiffusionPairGenerator(p.image_pairs.diffusers, seed=p.seed)
    raise ConfigError(f"image_pairs.generator: unknown generator {kind!r} ('procedural' or 'diffusers')")


def shard_of(triplet_id: str, shards: tuple[str, ...]) -> str:
    """Stable assignment of a caption triplet to an image-pair shard (independent of row order)."""
    h = int.from_bytes(hashlib.blake2b(triplet_id.encode(), digest_size=4).digest(), "little")
    return shards[h % len(shards)]


def triplets_for_shard(layout: Layout, shard: str) -> dict[str, list]:
    path = layout.caption_triplets
    if not path.is_file():
        raise FileNotFoundError(f"image_pairs needs caption_triplets first; missing: {path}")
    t = read_shard(path, list(TRIPLET_COLUMNS)).to_pydict()
    shards = layout.params.world.shards
    mine = [i for i, tid in enumerate(t["id"]) if shard_of(tid, shards) == shard]
    cap = layout.params.image_pairs.max_triplets_per_shard
    if cap:
        # a seeded, order-independent subset: the smallest hashes of (seed, id)
        key = {i: hashlib.blake2b(f"{layout.params.seed}|{t['id'][i]}".encode(), digest_size=8).digest() for i in mine}
        mine = sorted(mine, key=key.__getitem__)
        share = layout.params.image_pairs.llm_share
        if share is None:
            mine = sorted(mine[:cap])
        else:  # the LLM's triplets first, up to their share of the budget; the other methods fill the rest
            llm = [i for i in mine if t["method"][i] == "llm"][:round(cap * share)]
            rest = [i for i in mine if t["method"][i] != "llm"][:cap - len(llm)]
            mine = sorted(llm + rest)
    return {c: [t[c][i] for i in mine] for c in TRIPLET_COLUMNS}


def image_pairs_shard(layout: Layout, shard: str, log: Log = print) -> dict:
    check_shard(layout, shard)
    p = layout.params
    t0 = time.perf_counter()
    triplets = triplets_for_shard(layout, shard)
    manifest = {"kind": "image_pairs", "shard": shard, "image_size": p.world.image_size}
    if p.image_pairs.generator == "diffusers":
        manifest["diffusers"] = str(p.image_pairs.diffusers)
    stats = generate_shard(make_generator(layout), triplets, p.image_pairs.samples_per_triplet, p.seed,
                           p.image_pairs.chunk_size, layout.image_pairs(shard), manifest, log=log)
    stats = {**stats, "seconds": time.perf_counter() - t0}
    if not stats["skipped"]:
        log(f"image_pairs[{shard}]: {stats['pairs']} pairs from {stats['triplets']} triplets, "
            f"{stats['failed']} failed generations ({stats['seconds']:.1f}s)")
    return stats


def image_pairs_shards(layout: Layout, shards: list[str], log: Log = print, workers: int = 0) -> list[dict]:
    """Several shards in parallel processes for the CPU renderer; one process for a GPU generator."""
    for s in shards:
        check_shard(layout, s)
    if layout.params.image_pairs.generator != "procedural":
        workers = 1
    workers = workers or min(len(shards), cores())
    return in_processes(image_pairs_shard, layout, shards, workers,
                        lambda m, n: log(f"image_pairs: shard {m['shard']} {'kept' if m['skipped'] else 'written'} "
                                         f"[{n}/{len(shards)}]"),
                        local=lambda lay, s: image_pairs_shard(lay, s, log))


def _decode_all(column: list[bytes], ids: list[str], where: str) -> np.ndarray:
    return np.stack([decode_png(b, f"{where}:{i}") for b, i in zip(column, ids)])


def filtered_triplets(layout: Layout, log: Log = print) -> dict:
    """Score every generated pair with CLIP, keep those clearing the thresholds (best k per triplet)."""
    p = layout.params
    paths = [layout.image_pairs(s) for s in p.world.shards]
    missing = [str(x) for x in paths if not x.is_file()]
    if missing:
        raise FileNotFoundError(f"filtered_triplets needs every image_pairs shard first; missing: {missing}")
    enc = load_encoder(p.encoder.model, p.encoder.pretrained, root=layout.root)
    t0 = time.perf_counter()
    tables, all_scores, embeddings = [], {k: [] for k in SCORES}, {"reference": [], "target": []}
    for path in paths:
        t = read_shard(path).replace_schema_metadata(None).to_pydict()
        ok = [i for i, s in enumerate(t["status"]) if s == "ok"]
        ids = [t["id"][i] for i in ok]
        ref = _decode_all([t["reference_png"][i] for i in ok], ids, str(path)) if ok else np.zeros((0, 1, 1, 3))
        tgt = _decode_all([t["target_png"][i] for i in ok], ids, str(path)) if ok else np.zeros((0, 1, 1, 3))
        emb = (enc.encode_images(ref, batch_size=p.features.batch_size).numpy(),
               enc.encode_images(tgt, batch_size=p.features.batch_size).numpy())
        s = clip_scores(enc, ref, tgt, [t["reference"][i] for i in ok], [t["target"][i] for i in ok],
                        [t["instruction"][i] for i in ok], [t["method"][i] for i in ok],
                        [t["target_keyword"][i] for i in ok], image_embeddings=tuple(map(torch.from_numpy, emb)))
        n = len(t["id"])
        for k in SCORES:
            full = np.full(n, np.nan, dtype=np.float32)
            full[ok] = s[k]
            all_scores[k].append(full)
        for k, e in zip(("reference", "target"), emb):  # kept for triplet_features: no second encoding
            full = np.full((n, enc.embed_dim), np.nan, dtype=np.float32)
            full[ok] = e
            embeddings[k].append(full)
        tables.append(t)
        log(f"filtered_triplets: scored {len(ok)} pairs of {path.name}")
    rows = {k: sum((t[k] for t in tables), []) for k in tables[0]}
    scores = {k: np.concatenate(v) for k, v in all_scores.items()}
    valid = np.array([s == "ok" for s in rows["status"]], dtype=bool)
    keep, stats = apply_filter(scores, rows["triplet_id"], p.clip_filter, valid, rows["method"])
    stats["seconds"] = time.perf_counter() - t0
    stats["pairs_per_second"] = len(rows["id"]) / max(stats["seconds"], 1e-9)
    stats["per_method"] = {m: {"pairs": int(sum(1 for x in rows["method"] if x == m)),
                               "kept": int(sum(1 for x, k in zip(rows["method"], keep) if x == m and k))}
                           for m in sorted(set(rows["method"]))}
    truth = rows["world_consistent"]
    kinds = [None] * len(keep)
    if any(v is not None for v in truth):  # the world: its scene graphs say what each triplet edits
        generated = read_shard(layout.caption_triplets, ["id", "reference", "target", "method"]).to_pydict()
        kind_of = {tid: edit_kind(a, b) for tid, a, b in zip(generated["id"], generated["reference"],
                                                              generated["target"])}
        kinds = [kind_of[tid] for tid in rows["triplet_id"]]
        consistent = np.array([bool(v) for v in truth])
        stats["world"] = world_agreement(consistent, keep, valid, rows["method"])
        stats["world"]["per_kind"] = filter_by_kind(np.array(kinds), consistent, keep, valid)
        stats["coverage"] = stage_coverage(generated, kind_of, rows, kinds, valid, keep)
    score_cols = {k: scores[k].tolist() for k in SCORES}
    rows["edit_kind"] = kinds
    with atomic_dir(layout.filtered_triplets) as tmp:
        write_shard(tmp / "scores.parquet", {"id": rows["id"], "triplet_id": rows["triplet_id"],
                                             "method": rows["method"], "edit_kind": kinds, "kept": keep.tolist(),
                                             "world_consistent": truth, **score_cols},
                    {"kind": "clip_scores", "encoder": p.encoder.model, "pairs": len(rows["id"])})
        kept_rows = {k: [v[i] for i in np.flatnonzero(keep)] for k, v in {**rows, **score_cols}.items()}
        write_shard(tmp / "pairs.parquet", kept_rows, {"kind": "filtered_triplets", "count": int(keep.sum()),
                                                        "thresholds": stats["thresholds"]})
        kept = np.flatnonzero(keep)
        save_features(tmp / IMAGE_EMBEDDINGS, {k: np.concatenate(v)[kept] for k, v in embeddings.items()},
                      {"id": kept_rows["id"]}, {"kind": "filtered_image_embeddings", "encoder": p.encoder.model,
                                                "dim": enc.embed_dim, "count": int(keep.sum())})
    write_json(layout.filter_metrics, stats)
    w = stats.get("world", {})
    log(f"filtered_triplets: kept {stats['kept']}/{stats['pairs']} pairs ({stats['keep_rate']:.3f}), "
        f"removed {stats['removed_by']}"
        + (f"; consistent among kept {w['kept_consistent_fraction']:.3f}, consistent dropped "
           f"{w['consistent_dropped']}" if w else ""))
    # every stage's count per kind as flat numbers too: MLflow metrics and Dagster metadata of the step
    flat = {f"{stage}.{k}": n for stage in ("generated", "selected", "rendered", "kept")
            for k, n in stats.get("coverage", {}).get(stage, {}).get("counts", {}).items()}
    return {**stats, **flat}


def stage_coverage(generated: dict, kind_of: dict[str, str], rows: dict, kinds: list[str], valid: np.ndarray,
                   keep: np.ndarray) -> dict:
    """Edit kinds of the caption triplets (generated), those sent to the generator (selected), the pairs it
    rendered and the pairs the filter kept (what triplet_features encodes and stage 2 trains on)."""
    out = {"generated": kind_counts(list(kind_of.values())),
           "selected": kind_counts([kind_of[tid] for tid in dict.fromkeys(rows["triplet_id"])]),
           "rendered": kind_counts([k for k, v in zip(kinds, valid) if v]),
           "kept": kind_counts([k for k, v in zip(kinds, keep) if v])}
    out["kept_by_method"] = {m: kind_counts([k for k, v, x in zip(kinds, keep, rows["method"]) if v and x == m])
                             for m in sorted(set(rows["method"]))}
    out["generated_by_method"] = {m: kind_counts([kind_of[tid] for tid, x in zip(generated["id"], generated["method"])
                                                  if x == m]) for m in sorted(set(generated["method"]))}
    return out


def world_agreement(consistent: np.ndarray, keep: np.ndarray, valid: np.ndarray, methods: list[str]) -> dict:
    """The filter measured against the world's ground truth (it never sees it)."""
    methods_arr = np.array(methods)
    out = {
        "pairs_consistent": int((consistent & valid).sum()),
        "kept_consistent_fraction": float(consistent[keep].mean()) if keep.any() else 0.0,
        "consistent_dropped": int((consistent & valid & ~keep).sum()),
        "consistent_dropped_fraction": float((consistent & valid & ~keep).sum() / max(1, (consistent & valid).sum())),
        "inconsistent_kept": int((~consistent & keep).sum()),
        "inconsistent_removed_fraction": float((~consistent & valid & ~keep).sum()
                                               / max(1, (~consistent & valid).sum())),
    }
    for m in sorted(set(methods)):
        sel = methods_arr == m
        out[f"kept_consistent_fraction_{m}"] = float(consistent[keep & sel].mean()) if (keep & sel).any() else 0.0
    return out

