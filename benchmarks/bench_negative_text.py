"""Negative text on the world benchmark: how much it cuts the negated object, and what limits it.

Reads the outputs of a finished lifecycle (stage 2, the world benchmark, its index). For the
negative-text queries it reports, over several sampling seeds, the share of top-10 results that show
the negated object with and without the negative text, split into the benchmark's "negated"
renderings (the target plus the negated object) and everything else; then an upper bound on what any
query-side method can do with this encoder: the plain query with the negative's CLIP text direction
projected out (lambda = 1) or reflected (lambda = 2).

    .venv/bin/python benchmarks/bench_negative_text.py [--seeds 0,1,2] [--out benchmarks/results/negative_text.json]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from report import report

from compodiff.checkpoint import load_checkpoint
from compodiff.pipeline import CompoDiffPipeline
from datagen.shards import read_shard
from datagen.world import benchmark as wb
from orchestration.eval_steps import Queries
from orchestration.layout import Layout
from orchestration.params import load_params


def shares(q: Queries, roles: list[str], rows: list[int], retrieved: np.ndarray, k: int = 10) -> dict:
    shown = [(wb.shows(q.gallery_scenes[g], *q.rows["negated"][i].split()), roles[g] == "negated")
             for j, i in enumerate(rows) for g in retrieved[j][:k]]
    return {"share": float(np.mean([s for s, _ in shown])),
            "negated_renderings": float(np.mean([s and n for s, n in shown])),
            "other_results": float(np.mean([s and not n for s, n in shown]))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default=".")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out")
    args = ap.parse_args()
    root = Path(args.root).resolve()
    layout = Layout(root, load_params(root / "params.yaml"))
    b = layout.params.benchmark
    torch.set_num_threads(layout.params.training.threads)
    q = Queries(layout)
    roles = read_shard(layout.world_benchmark / "gallery.parquet", ["role"]).column("role").to_pylist()
    pipe = CompoDiffPipeline(load_checkpoint(layout.stage_dir("stage2") / "denoiser.safetensors"), q.enc)
    rows = [i for i, n in enumerate(q.rows["negated"]) if n]
    ref = q.reference[rows]
    texts = [q.rows["instruction"][i] for i in rows]
    negatives = [q.rows["negative"][i] for i in rows]
    out: dict = {"queries": len(rows), "top_k": 10, "w_image": b.w_image, "w_text": b.w_text, "seeds": {}}
    for seed in [int(s) for s in args.seeds.split(",")]:
        plain = pipe.compose(ref, texts, None, None, w_image=b.w_image, w_text=b.w_text, steps=b.steps, seed=seed,
                             mix_reference=b.mix_reference)
        negative = pipe.compose(ref, texts, negatives, None, w_image=b.w_image, w_text=b.w_text, steps=b.steps,
                                seed=seed, mix_reference=b.mix_reference)
        out["seeds"][seed] = {"without": shares(q, roles, rows, q.search(plain, 10)),
                              "with": shares(q, roles, rows, q.search(negative, 10))}
        direction = q.enc.encode_text(negatives).float()
        direction = direction / direction.norm(dim=-1, keepdim=True)
        unit = plain / plain.norm(dim=-1, keepdim=True)
        for lam in (1.0, 2.0):
            moved = unit - lam * (unit * direction).sum(-1, keepdim=True) * direction
            out["seeds"][seed][f"text_direction_removed_x{lam:g}"] = shares(q, roles, rows, q.search(moved, 10))
        s = out["seeds"][seed]
        print(f"seed {seed}: share without {s['without']['share']:.4f}, with {s['with']['share']:.4f} "
              f"(ratio {s['with']['share'] / max(s['without']['share'], 1e-9):.2f}); negated renderings "
              f"{s['without']['negated_renderings']:.4f} -> {s['with']['negated_renderings']:.4f}; text direction "
              f"reflected: {s['text_direction_removed_x2']['share']:.4f}", flush=True)
    seeds = out["seeds"].values()
    out["mean"] = {k: float(np.mean([s[k]["share"] for s in seeds]))
                   for k in ("without", "with", "text_direction_removed_x1", "text_direction_removed_x2")}
    out["mean"]["ratio"] = out["mean"]["with"] / max(out["mean"]["without"], 1e-9)
    report(out, args.out)


if __name__ == "__main__":
    main()
