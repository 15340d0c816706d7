"""The encoder step: the world CLIP trained on every world_pairs shard (or a pretrained CLIP recorded),
evaluated on held-out pairs. Its own module, so the other steps' code versions do not follow its code."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from compodiff.atomic import atomic_dir, write_json
from datagen.instructions import benchmark_fixed_words
from datagen.shards import decode_png, read_shard, write_shard
from datagen.world.pairs import make_pairs
from orchestration.cores import use_cores
from orchestration.layout import Layout
from orchestration.steps import Log


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
