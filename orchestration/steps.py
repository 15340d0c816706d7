"""Each step of the lifecycle as one plain function: the Dagster asset and the DVC
stage (through the CLI) both call these, so the two orchestrators run one logic."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from compodiff.atomic import atomic_dir, write_json
from compodiff.config import ConfigError
from datagen.instructions import benchmark_fixed_words
from datagen.shards import decode_png, read_shard, write_shard
from datagen.world.pairs import make_pairs, write_pairs_shard
from orchestration.cores import cores, use_cores
from orchestration.layout import Layout
from orchestration.registry import REAL_BENCHMARKS

Log = Callable[[str], None]


def check_shard(layout: Layout, shard: str) -> None:
    if shard in REAL_BENCHMARKS:
        return
    shards = layout.params.world.shards
    if shard not in shards:
        raise ConfigError(f"shard {shard!r} is not in world.shards {list(shards)} of profile "
                          f"{layout.params.profile!r} (params file of another profile?)")


def world_pairs(layout: Layout, shard: str) -> dict:
    check_shard(layout, shard)
    w = layout.params.world
    t0 = time.perf_counter()
    out = layout.world_pairs(shard)
    if layout.params.sources is not None:  # a paper profile: real image-text pairs, never the world
        from datagen.image_text_shards import ingest_shard

        manifest = ingest_shard(layout.params.sources.image_text_pairs, shard, out, w.image_size)
    else:
        manifest = write_pairs_shard(w, layout.params.seed, shard, w.pairs_per_shard, out)
    return {**manifest, "path": str(out), "bytes": out.stat().st_size, "seconds": time.perf_counter() - t0}


def in_processes(work: Callable[[Layout, str], dict], layout: Layout, shards: list[str], workers: int,
                 report: Callable[[dict, int], None], local: Callable[[Layout, str], dict] | None = None) -> list[dict]:
    """``work(layout, shard)`` for every shard: in this process (through ``local`` if given, which may log
    to Dagster) for one worker, else in spawned processes (spawn, not fork: the parent may hold torch's
    thread pools). ``report(manifest, done)`` sees each shard as it lands; manifests come back by shard."""
    done: list[dict] = []

    def land(m: dict) -> None:
        done.append(m)
        report(m, len(done))

    if workers <= 1 or len(shards) == 1:
        for shard in shards:
            land((local or work)(layout, shard))
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            for fut in as_completed([pool.submit(work, layout, s) for s in shards]):
                land(fut.result())
    return sorted(done, key=lambda m: m["shard"])


def world_pairs_shards(layout: Layout, shards: list[str], workers: int = 0, log: Log = print) -> list[dict]:
    """Several shards, in parallel processes (one per core by default); each shard is atomic on its own."""
    for shard in shards:
        check_shard(layout, shard)
    return in_processes(world_pairs, layout, shards, workers or min(len(shards), cores()),
                        lambda m, n: log(f"world_pairs: shard {m['shard']} {'kept' if m['skipped'] else 'written'} "
                                         f"({m['count']} pairs, {m['seconds']:.1f}s) [{n}/{len(shards)}]"))


def _load_pairs(paths: list[Path]) -> tuple[np.ndarray, list[str]]:
    images, captions = [], []
    for p in paths:
        table = read_shard(p, ["id", "caption", "image_png"])
        ids = table.column("id").to_pylist()
        for rid, png in zip(ids, table.column("image_png").to_pylist()):
            images.append(decode_png(png, f"{p}:{rid}"))
        captions += table.column("caption").to_pylist()
    return np.stack(images), captions


def encoder(layout: Layout, log: Log = print, on_metrics: Callable[[int, dict], None] | None = None) -> dict:
    """Train the world CLIP on every world_pairs shard; evaluate on held-out pairs."""
    from datagen.world.clip_training import retrieval_recall, train_clip  # torch: only for this step

    p = layout.params
    if p.encoder.train is None:  # a pretrained CLIP (paper profiles): load it once, record what it is
        from compodiff.encoders import load_encoder

        enc = load_encoder(p.encoder.model, p.encoder.pretrained, root=layout.root)
        metrics = {"model": enc.model_id, "embed_dim": enc.embed_dim, "text_width": enc.text_width,
                   "image_size": enc.image_size, "trained": False}
        write_json(layout.encoder_metrics, metrics)
        log(f"encoder: pretrained {enc.model_id}, {enc.embed_dim}-d")
        return metrics
    missing = [str(layout.world_pairs(s)) for s in p.world.shards if not layout.world_pairs(s).is_file()]
    if missing:
        raise FileNotFoundError(f"encoder needs the world_pairs shards first; missing: {missing}")
    use_cores(p.encoder.train.threads)
    log(f"encoder: loading {len(p.world.shards)} shards")
    images, captions = _load_pairs([layout.world_pairs(s) for s in p.world.shards])
    heldout = make_pairs(p.world, p.seed, "heldout", p.world.heldout_pairs)

    def progress(step: int, m: dict) -> None:
        log(f"encoder: step {step + 1}/{p.encoder.train.steps} loss {m['loss']:.3f}")
        if on_metrics:
            on_metrics(step, m)

    with atomic_dir(layout.encoder_dir) as tmp:
        summary = train_clip(p.encoder.train, images, captions, p.world.image_size, p.seed, tmp, progress)
        write_shard(tmp / "heldout.parquet", heldout, {"kind": "world_pairs", "shard": "heldout"})
        n = min(p.encoder.train.eval_pairs, p.world.heldout_pairs)
        held_images = np.stack([decode_png(b) for b in heldout["image_png"][:n]])
        recall = retrieval_recall(tmp, held_images, heldout["caption"][:n])
    words = set(summary.pop("words"))
    fixed = benchmark_fixed_words()
    metrics = {**summary, **recall, "model": p.encoder.model, "training_words": len(words),
               "benchmark_words": len(fixed), "benchmark_words_trained": len(fixed & words),
               "benchmark_words_untrained": sorted(fixed - words)}
    write_json(layout.encoder_metrics, metrics)
    log(f"encoder: t2i R@1 {recall['t2i_R@1']:.3f} R@10 {recall['t2i_R@10']:.3f} on {recall['eval_pairs']} "
        f"held-out pairs; trained on {len(fixed & words)} of the benchmark instructions' {len(fixed)} fixed words")
    return metrics
