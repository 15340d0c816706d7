"""Feature steps: pair_features (per shard) and triplet_features. Plain functions called by the
Dagster assets and the CLI. Image features are pre-extracted once (paper 5.1); text is encoded
on the fly in training."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from compodiff.config_schema import ConfigError
from compodiff.encoders import load_encoder
from compodiff.feature_store import FeatureError, load_features, save_features
from datagen.instructions import reversed_instruction
from datagen.masks import ClipSegMasker, noise_masked_region, world_object_mask
from datagen.shards import decode_png, read_shard
from orchestration.cores import cores
from orchestration.layout import Layout
from orchestration.pair_steps import IMAGE_EMBEDDINGS
from orchestration.registry import TRIPLET_SOURCES
from orchestration.steps import Log, check_shard, in_processes


def _masker(layout: Layout):
    spec = layout.params.features.masks
    if spec == "world":
        return None
    if spec.startswith("clipseg:"):
        return ClipSegMasker(spec[len("clipseg:"):])
    raise ConfigError(f"features.masks: {spec!r} is neither 'world' nor 'clipseg:<model dir or hub id>'")


def pair_features(layout: Layout, shard: str, log: Log = print) -> dict:
    """Image embeddings of one world_pairs shard, plus an Eq. (2) mask and masked-image embedding per pair."""
    check_shard(layout, shard)
    p = layout.params
    src = layout.world_pairs(shard)
    if not src.is_file():
        raise FileNotFoundError(f"pair_features needs world_pairs first; missing: {src}")
    t0 = time.perf_counter()
    t = read_shard(src, ["id", "caption", "image_png", "segmap_png"]).to_pydict()
    images = np.stack([decode_png(b, f"{src}:{i}") for b, i in zip(t["image_png"], t["id"])])
    rng = np.random.default_rng([p.seed, 77, *shard.encode()])
    masker = _masker(layout)
    if masker is None:
        masks = np.stack([world_object_mask(decode_png(b, f"{src}:{i}:segmap"), rng)
                          for b, i in zip(t["segmap_png"], t["id"])])
    else:  # CLIPSeg prompted with one noun of each caption (paper 3.2)
        from orchestration.triplet_steps import load_nlp

        nlp = load_nlp(p.caption_triplets.keyword.spacy)
        nouns = [[tok.text for tok in doc if tok.pos_ == "NOUN"] or [doc.text] for doc in nlp.pipe(t["caption"])]
        prompts = [n[int(rng.integers(len(n)))] for n in nouns]
        masks = np.concatenate([masker(list(images[i:i + 64]), prompts[i:i + 64]) for i in range(0, len(images), 64)])
    masked = np.stack([noise_masked_region(im, m, rng, p.features.mask_noise_std) for im, m in zip(images, masks)])
    enc = load_encoder(p.encoder.model, p.encoder.pretrained, root=layout.root)
    emb = enc.encode_images(images, batch_size=p.features.batch_size).numpy()
    emb_masked = enc.encode_images(masked, batch_size=p.features.batch_size).numpy()
    manifest = {"kind": "pair_features", "shard": shard, "encoder": p.encoder.model, "dim": int(emb.shape[1]),
                "count": len(t["id"]), "masks": p.features.masks, "mask_fraction": float(masks.mean()),
                "seconds": time.perf_counter() - t0}
    save_features(layout.pair_features(shard),
                  {"image": emb, "masked": emb_masked, "mask": np.packbits(masks, axis=-1)},
                  {"id": t["id"], "caption": t["caption"]}, manifest)
    log(f"pair_features[{shard}]: {len(t['id'])} pairs, dim {emb.shape[1]} ({manifest['seconds']:.1f}s)")
    return manifest


def _pair_features_worker(layout: Layout, shard: str) -> dict:
    import torch

    torch.set_num_threads(1)  # one core per process: the processes share the machine
    return pair_features(layout, shard, print)


def pair_features_shards(layout: Layout, shards: list[str], log: Log = print, workers: int = 0) -> list[dict]:
    """Shards in parallel processes on a CPU (one per core); one process where the encoder has a GPU."""

    import torch

    workers = workers or (1 if torch.cuda.is_available() else min(len(shards), cores()))
    return in_processes(_pair_features_worker, layout, shards, workers,
                        lambda m, n: log(f"pair_features: shard {m['shard']} done [{n}/{len(shards)}]"),
                        local=lambda lay, s: pair_features(lay, s, log))


def _filtered_embeddings(layout: Layout, ids: list[str], dim: int):
    """The image embeddings the CLIP filter made for exactly these pairs with this encoder, or (None, None)."""
    try:
        arrays, texts, _ = load_features(layout.filtered_triplets / IMAGE_EMBEDDINGS, dim, layout.params.encoder.model,
                                         ("reference", "target"))
    except FeatureError:
        return None, None
    if texts.get("id") != ids:
        return None, None
    return arrays["reference"], arrays["target"]


TRIPLET_COLUMNS = ["id", "triplet_id", "instruction", "method", "template_id", "source_keyword", "target_keyword",
                   "edit_kind", "reference_png", "target_png"]


def triplet_tables(layout: Layout) -> list[tuple[str, Path]]:
    """(source, parquet file) of every triplet set stage 2 draws from: the generated triplets, then each
    configured public source with a positive weight (triplet_sources), in that order."""
    ts = layout.params.triplet_sources
    tables = []
    if ts.generated_weight > 0:
        src = layout.filtered_triplets / "pairs.parquet"
        if not src.is_file():
            raise FileNotFoundError(f"triplet_features needs filtered_triplets first; missing: {src}")
        tables.append(("generated", src))
    for name in TRIPLET_SOURCES:
        cfg = getattr(ts, name)
        if cfg is None or cfg.weight == 0:
            continue
        parts = sorted(layout.image_triplets(name).glob("part-*.parquet"))
        if not parts:
            raise FileNotFoundError(f"triplet_features needs image_triplets[{name}] first; no parts in "
                                    f"{layout.image_triplets(name)}")
        tables += [(name, part) for part in parts]
    if not tables:
        raise ConfigError("triplet_sources: every weight is 0 (generated_weight and each source's): "
                          "nothing to train on")
    return tables


def _encode(enc, layout: Layout, src: Path, t: dict, column: str) -> np.ndarray:
    images = np.stack([decode_png(b, f"{src}:{i}") for b, i in zip(t[column], t["id"])])
    return enc.encode_images(images, batch_size=layout.params.features.batch_size).numpy()


def triplet_features(layout: Layout, log: Log = print) -> dict:
    """Reference and target image embeddings of every triplet stage 2 trains on (the filtered generated
    triplets and the public sources of triplet_sources), with both instructions and each one's source."""
    p = layout.params
    t0 = time.perf_counter()
    enc = load_encoder(p.encoder.model, p.encoder.pretrained, root=layout.root)
    refs, tgts, texts = [], [], {k: [] for k in ("id", "triplet_id", "instruction", "reversed_instruction", "method",
                                                "edit_kind", "source")}
    bi = p.training.bidirectional
    for source, src in triplet_tables(layout):
        t = read_shard(src, TRIPLET_COLUMNS).to_pydict()
        if not t["id"]:
            if source == "generated":
                raise ValueError(f"{src} holds no pairs: the CLIP filter kept nothing, so there is nothing to train on")
            continue
        ref, tgt = _filtered_embeddings(layout, t["id"], enc.embed_dim) if source == "generated" else (None, None)
        if ref is None:  # a public source, or filtered by an older version: encode the images
            ref, tgt = _encode(enc, layout, src, t, "reference_png"), _encode(enc, layout, src, t, "target_png")
        refs.append(ref)
        tgts.append(tgt)
        texts["reversed_instruction"] += [
            reversed_instruction(m, ins, tid, s, g, bi.reverse_prefix) for m, ins, tid, s, g
            in zip(t["method"], t["instruction"], t["template_id"], t["source_keyword"], t["target_keyword"])]
        for k in ("id", "triplet_id", "instruction", "method"):
            texts[k] += t[k]
        texts["edit_kind"] += [k or "unknown" for k in t["edit_kind"]]  # unknown: no world truth
        texts["source"] += [source] * len(t["id"])
    ref, tgt = np.concatenate(refs), np.concatenate(tgts)
    per_source = {s: texts["source"].count(s) for s in dict.fromkeys(texts["source"])}
    manifest = {"kind": "triplet_features", "encoder": p.encoder.model, "dim": int(ref.shape[1]),
                "count": len(texts["id"]), "per_source": per_source, "seconds": time.perf_counter() - t0}
    save_features(layout.triplet_features, {"reference": ref, "target": tgt}, texts, manifest)
    log(f"triplet_features: {len(texts['id'])} triplets {per_source}, dim {ref.shape[1]} ({manifest['seconds']:.1f}s)")
    return {**manifest, **{f"count.{s}": n for s, n in per_source.items()}}
