"""Evaluation steps: world_benchmark, gallery_features, faiss_index, benchmark_metrics.
Plain functions called by the Dagster assets and the CLI."""

from __future__ import annotations

import time

import numpy as np
import torch

from compodiff.atomic import atomic_dir, write_json
from compodiff.benchmarks import circo, cirr, fashioniq, genecis
from compodiff.checkpoint import load_checkpoint
from compodiff.combiner import load_combiner
from compodiff.encoders import encoder_id, load_encoder
from compodiff.evaluation import cir_metrics, sum_query
from compodiff.feature_store import load_features, save_features
from compodiff.pipeline import CompoDiffPipeline
from compodiff.retrieval import GalleryIndex, IndexSpec, rank_all
from datagen.masks import noise_masked_region
from datagen.shards import decode_png, encode_png, read_shard, write_shard
from datagen.world import benchmark as wb
from datagen.world.benchmark_export import export
from datagen.world.render import render
from datagen.world.scene import Scene
from orchestration.cores import use_cores
from orchestration.layout import Layout
from orchestration.steps import Log


def world_benchmark(layout: Layout, log: Log = print) -> dict:
    p = layout.params
    b = p.benchmark
    t0 = time.perf_counter()
    bench = wb.build(b.queries_per_type, b.true_targets, b.distractors, p.seed, p.world.max_objects)
    images, segmaps = zip(*(render(s, seed, p.world.image_size) for s, seed in bench.gallery))
    roles = bench.gallery_role
    queries = []
    for q in bench.queries:
        hard = [g for g, (r, _) in enumerate(zip(roles, bench.gallery))
                if r in ("reference", "near-miss", "negated") and _owner(bench, g) == q.qid]
        queries.append({"qid": q.qid, "kind": q.kind, "instruction": q.instruction, "negative": q.negative,
                        "negated": " ".join(q.negated) if q.negated else None, "mask_object": q.mask_object,
                        "reference": q.reference_gallery, "ground_truth": q.ground_truth, "hard_negatives": hard,
                        "target_scene": q.target.to_json()})
    with atomic_dir(layout.world_benchmark) as tmp:
        write_shard(tmp / "gallery.parquet", {
            "index": list(range(len(images))), "role": list(roles),
            "scene": [s.to_json() for s, _ in bench.gallery], "seed": [sd for _, sd in bench.gallery],
            "image_png": [encode_png(im) for im in images], "segmap_png": [encode_png(sm) for sm in segmaps]},
            {"kind": "world_benchmark_gallery", "count": len(images)})
        write_shard(tmp / "queries.parquet", {k: [q[k] for q in queries] for k in queries[0]},
                    {"kind": "world_benchmark_queries", "count": len(queries)})
        export(list(images), queries, tmp / "exports")
    stats = {**wb.summary(bench), "seconds": time.perf_counter() - t0}
    log(f"world_benchmark: {stats['queries']} queries over {stats['gallery']} gallery images, "
        f"{stats['mean_ground_truth']:.1f} true targets per query")
    return stats


def _owner(bench: wb.WorldBenchmark, g: int) -> int:
    """The query whose block of gallery items holds item g (items are added query by query)."""
    starts = [q.reference_gallery for q in bench.queries]
    k = int(np.searchsorted(starts, g, side="right")) - 1
    return bench.queries[k].qid if k >= 0 else -1


def gallery_features(layout: Layout, log: Log = print) -> dict:
    p = layout.params
    src = layout.world_benchmark / "gallery.parquet"
    if not src.is_file():
        raise FileNotFoundError(f"gallery_features needs world_benchmark first; missing: {src}")
    t = read_shard(src, ["index", "image_png"]).to_pydict()
    enc = load_encoder(p.encoder.model, p.encoder.pretrained, root=layout.root)
    emb = enc.encode_images(np.stack([decode_png(b, f"{src}:{i}") for b, i in zip(t["image_png"], t["index"])]),
                            batch_size=p.features.batch_size).numpy()
    manifest = {"kind": "gallery_features", "encoder": p.encoder.model, "dim": int(emb.shape[1]), "count": len(emb)}
    save_features(layout.gallery_features, {"image": emb}, {}, manifest)
    log(f"gallery_features: {len(emb)} images, dim {emb.shape[1]}")
    return manifest


def faiss_index(layout: Layout, log: Log = print) -> dict:
    p = layout.params
    arrays, _, meta = load_features(layout.gallery_features, None, p.encoder.model, ("image",))
    t0 = time.perf_counter()
    index = GalleryIndex.build(arrays["image"], encoder_id(p.encoder.model, p.encoder.pretrained),
                               IndexSpec(kind=p.benchmark.index))
    index.save(layout.faiss_index)
    out = {"size": index.info.size, "dim": index.info.dim, "kind": p.benchmark.index,
           "seconds": time.perf_counter() - t0}
    log(f"faiss_index: {out['size']} x {out['dim']} ({out['kind']})")
    return out


class Queries:
    """The benchmark's queries with everything each method needs, encoded once."""

    def __init__(self, layout: Layout):
        p = layout.params
        self.rows = read_shard(layout.world_benchmark / "queries.parquet").to_pydict()
        g = read_shard(layout.world_benchmark / "gallery.parquet", ["scene", "image_png", "segmap_png"]).to_pydict()
        self.gallery_scenes = [Scene.from_json(s) for s in g["scene"]]
        self.enc = load_encoder(p.encoder.model, p.encoder.pretrained, root=layout.root)
        arrays, _, _ = load_features(layout.gallery_features, self.enc.embed_dim, p.encoder.model, ("image",))
        self.gallery = arrays["image"]
        self.index = GalleryIndex.load(layout.faiss_index)
        ref = self.rows["reference"]
        self.reference = torch.from_numpy(self.gallery[ref])
        self.text = self.enc.encode_text(self.rows["instruction"])
        rng = np.random.default_rng([p.seed, 5])
        masks = np.zeros((len(ref), p.world.image_size, p.world.image_size), dtype=bool)
        masked = self.reference.clone()
        for i, (r, obj) in enumerate(zip(ref, self.rows["mask_object"])):
            if obj is None:
                continue
            seg = decode_png(g["segmap_png"][r])
            masks[i] = seg == obj + 1
            image = noise_masked_region(decode_png(g["image_png"][r]), masks[i], rng, p.features.mask_noise_std)
            masked[i] = self.enc.encode_images(image[None])[0]
        self.masks, self.masked_reference = masks, masked
        self.kinds = self.rows["kind"]

    def search(self, queries: torch.Tensor, k: int) -> np.ndarray:
        return self.index.search(queries.numpy(), k, self.enc.model_id)[1]


def compodiff_queries(pipe: CompoDiffPipeline, q: Queries, b, negative: bool, mask: bool, steps: int | None = None,
                      w_image: float | None = None, w_text: float | None = None, seed: int = 0) -> torch.Tensor:
    use_mask = np.array([mask and m is not None for m in q.rows["mask_object"]])
    ref = torch.where(torch.from_numpy(use_mask)[:, None], q.masked_reference, q.reference)
    negatives = [(n if (negative and n) else "") for n in q.rows["negative"]]
    masks = q.masks * use_mask[:, None, None]
    return pipe.compose(ref, q.rows["instruction"], negatives, masks, w_image=b.w_image if w_image is None else w_image,
                        w_text=b.w_text if w_text is None else w_text, steps=steps or b.steps, seed=seed,
                        eta=b.eta, mix_reference=b.mix_reference)


def negated_share(q: Queries, retrieved: np.ndarray, k: int = 10) -> float:
    """Share of the top-k results of negative-text queries that show the negated object."""
    rows = [i for i, n in enumerate(q.rows["negated"]) if n]
    hits = [wb.shows(q.gallery_scenes[g], *q.rows["negated"][i].split()) for i in rows for g in retrieved[i][:k]]
    return float(np.mean(hits)) if hits else 0.0


def benchmark_metrics(layout: Layout, log: Log = print) -> dict:
    p = layout.params
    b = p.benchmark
    use_cores(p.training.threads)
    t0 = time.perf_counter()
    q = Queries(layout)
    gt = q.rows["ground_truth"]
    results, retrieved = {}, {}

    def score(name: str, emb: torch.Tensor) -> None:
        retrieved[name] = q.search(emb, b.topk)
        results[name] = cir_metrics(retrieved[name], gt, q.kinds)
        log(f"benchmark: {name:32s} mAP@10 {results[name]['mAP@10']:6.2f}  R@10 {results[name]['R@10']:6.2f}")

    score("image_only", q.reference)
    score("text_only", q.text)
    score("image_text_sum", sum_query(q.reference, q.text))
    for name in ("combiner", "combiner_bidirectional"):
        path = layout.stage_dir("combiner") / f"{name}.safetensors"
        if path.is_file():
            with torch.no_grad():
                score(name, load_combiner(path)(q.reference, q.text))
    stage1 = CompoDiffPipeline(load_checkpoint(layout.stage_dir("stage1") / "denoiser.safetensors"), q.enc)
    score("compodiff_stage1", stage1.text_to_image(q.rows["instruction"], steps=b.steps, w_text=b.w_text,
                                                  w_image=b.w_image))
    stage2 = CompoDiffPipeline(load_checkpoint(layout.stage_dir("stage2") / "denoiser.safetensors"), q.enc)
    stage2_queries = compodiff_queries(stage2, q, b, negative=True, mask=True)
    score("compodiff_stage2", stage2_queries)
    score("compodiff_stage2_no_negative_no_mask", compodiff_queries(stage2, q, b, negative=False, mask=False))
    checks = {
        "negative_text": {"share_with": negated_share(q, retrieved["compodiff_stage2"]),
                          "share_without": negated_share(q, retrieved["compodiff_stage2_no_negative_no_mask"])},
        "mask": {"mAP@10_with": results["compodiff_stage2"]["per_type"]["mask"]["mAP@10"],
                 "mAP@10_without": results["compodiff_stage2_no_negative_no_mask"]["per_type"]["mask"]["mAP@10"]},
        "best_baseline": max((k for k in results if not k.startswith("compodiff")), key=lambda k: results[k]["mAP@10"]),
        "stage2_mAP@10": results["compodiff_stage2"]["mAP@10"],
        "exports": exported_scores(layout, q, stage2_queries),
        "seconds": time.perf_counter() - t0,
    }
    checks["best_baseline_mAP@10"] = results[checks["best_baseline"]]["mAP@10"]
    checks["stage2_beats_baselines"] = checks["stage2_mAP@10"] > checks["best_baseline_mAP@10"]
    write_json(layout.benchmark_metrics, results)
    write_json(layout.benchmark_checks, checks)
    write_json(layout.headline, {"mAP@10": {k: round(v["mAP@10"], 4) for k, v in results.items()},
                                 "stage2_lead": round(checks["stage2_mAP@10"] - checks["best_baseline_mAP@10"], 4),
                                 "best_baseline": checks["best_baseline"]})
    log(f"benchmark: negated object in top 10: {checks['negative_text']['share_with']:.3f} with the negative "
        f"text, {checks['negative_text']['share_without']:.3f} without")
    return {**{f"{k}.mAP@10": v["mAP@10"] for k, v in results.items()}, "seconds": checks["seconds"]}


def exported_scores(layout: Layout, q: Queries, queries: torch.Tensor) -> dict:
    """The same query embeddings scored through the four official-format evaluators on the export."""
    root = layout.world_benchmark_exports
    sim = rank_all(queries.float().numpy(), q.gallery)
    out = {}
    fiq = fashioniq.load(root / "fashioniq", "world", "val", join="searle")
    out["fashioniq"] = fashioniq.recall(sim, fiq.target_indices())
    data = cirr.load(root / "cirr", "val")
    out["cirr"] = cirr.metrics(sim, data)
    co = circo.load(root / "circo", "val")
    top = circo.top_unique(sim, co.gallery)
    out["circo"] = circo.metrics(top, co.ground_truths, co.targets)
    task = genecis.load(root / "genecis" / "change_object.json", root / "genecis" / "images")
    per_template = []
    for i, t in enumerate(task.templates):
        cands = [t.target["val_image_id"] - 1] + [x["val_image_id"] - 1 for x in t.gallery]
        per_template.append(sim[i, cands])
    out["genecis_change_object"] = genecis.recall(per_template)
    return out

