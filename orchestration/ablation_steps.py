"""The ablations of paper 5 on the world benchmark: sampling steps vs mAP and latency (Table 4), the
w_I x w_T sweep (Fig. 10), and short stage-2 runs for triplet-set scale (Table 6), the stage-2
mixture vs triplets only (Table 8) and the bi-directional alpha. Tables in metrics/ablations.json,
plot data as CSV for `dvc plots`, figures as PNG for the README, MLflow and Dagster."""

from __future__ import annotations

import csv
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from compodiff.atomic import atomic_path, write_json
from compodiff.checkpoint import load_checkpoint
from compodiff.evaluation import cir_metrics
from compodiff.objectives import TripletFeatures
from compodiff.pipeline import CompoDiffPipeline
from compodiff.training import TextTokens, train_denoiser
from orchestration.cores import use_cores
from orchestration.eval_steps import Queries, compodiff_queries
from orchestration.layout import Layout
from orchestration.steps import Log
from orchestration.train_steps import _spec, load_pair_features, load_triplet_features


def _map10(q: Queries, emb: torch.Tensor, topk: int) -> float:
    return cir_metrics(q.search(emb, topk), q.rows["ground_truth"])["mAP@10"]


def _csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def ablations(layout: Layout, log: Log = print) -> dict:
    p = layout.params
    a, b = p.ablations, p.benchmark
    use_cores(p.training.threads)
    q = Queries(layout)
    stage2 = CompoDiffPipeline(load_checkpoint(layout.stage_dir("stage2") / "denoiser.safetensors"), q.enc)
    out: dict = {}
    # Table 4: sampling steps vs mAP@10 and latency per query
    rows = []
    for steps in a.steps:
        t0 = time.perf_counter()
        emb = compodiff_queries(stage2, q, b, negative=True, mask=True, steps=steps)
        ms = 1000 * (time.perf_counter() - t0) / len(emb)
        rows.append([steps, _map10(q, emb, b.topk), ms])
        log(f"ablations: {steps} steps: mAP@10 {rows[-1][1]:.2f}, {ms:.2f} ms/query")
    out["sampling_steps"] = [{"steps": s, "mAP@10": m, "ms_per_query": t} for s, m, t in rows]
    _csv(layout.plots / "sampling_steps.csv", ["steps", "mAP@10", "ms_per_query"], rows)
    # Fig. 10: w_I x w_T
    grid = np.zeros((len(a.w_image), len(a.w_text)))
    for i, wi in enumerate(a.w_image):
        for j, wt in enumerate(a.w_text):
            grid[i, j] = _map10(q, compodiff_queries(stage2, q, b, True, True, w_image=wi, w_text=wt), b.topk)
    out["guidance"] = {"w_image": list(a.w_image), "w_text": list(a.w_text), "mAP@10": grid.tolist()}
    _csv(layout.plots / "guidance.csv", ["w_image", "w_text", "mAP@10"],
         [[wi, wt, grid[i, j]] for i, wi in enumerate(a.w_image) for j, wt in enumerate(a.w_text)])
    best = np.unravel_index(int(np.argmax(grid)), grid.shape)
    log(f"ablations: best guidance w_I {a.w_image[best[0]]} w_T {a.w_text[best[1]]}: mAP@10 {grid.max():.2f}")
    # Tables 6 and 8, and alpha: short stage-2 runs from the stage-1 weights, same length each
    # (train_steps 0: not run; runs much shorter than stage 2 itself measure little but noise)
    out["training"] = _training_ablations(layout, q, log) if a.train_steps > 0 else {}
    _csv(layout.plots / "training_ablations.csv", ["run", "mAP@10"],
         [[k, v["mAP@10"]] for k, v in out["training"].items()])
    _figures(layout, out)
    write_json(layout.ablations, out)
    return {"best_mAP@10_guidance": float(grid.max()), "runs": len(out["training"])}


def _training_ablations(layout: Layout, q: Queries, log: Log) -> dict:
    p = layout.params
    a, b = p.ablations, p.benchmark
    pairs = load_pair_features(layout, q.enc.embed_dim)
    trip = load_triplet_features(layout, q.enc.embed_dim)
    tokens = TextTokens(lambda texts: q.enc.text_tokens(texts)[0], p.training.text_cache)
    base = replace(_spec(layout, "stage2"), steps=a.train_steps, checkpoint_every=10**9, bidirectional_alpha=0.0)
    runs = {f"triplets x{f:g}": (base, f) for f in a.triplet_fractions}
    runs["triplets only (Eq. 3)"] = (replace(base, mix=(0.0, 0.0, 1.0)), 1.0)
    runs.update({f"bi-directional alpha {al:g}": (replace(base, bidirectional_alpha=al), 1.0) for al in a.alphas})
    results = {}
    for name, (spec, fraction) in runs.items():
        n = max(2, int(round(fraction * len(trip))))
        idx = torch.from_numpy(np.random.default_rng([p.seed, 61]).permutation(len(trip))[:n])
        sub = TripletFeatures(trip.reference[idx], trip.target[idx], [trip.instruction[i] for i in idx],
                              [trip.reversed_instruction[i] for i in idx])
        model = load_checkpoint(layout.stage_dir("stage1") / "denoiser.safetensors")
        with tempfile.TemporaryDirectory() as d:
            s = train_denoiser(model, spec, pairs, sub, tokens, Path(d))
        emb = compodiff_queries(CompoDiffPipeline(s["ema"].model, q.enc), q, b, True, True)
        results[name] = {"mAP@10": _map10(q, emb, b.topk), "triplets": n, "steps": spec.steps,
                         "final_loss": s["final_loss"]}
        log(f"ablations: {name}: mAP@10 {results[name]['mAP@10']:.2f}")
    return results


def _figures(layout: Layout, out: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
    s = out["sampling_steps"]
    ax[0].plot([r["steps"] for r in s], [r["mAP@10"] for r in s], "o-")
    ax[0].set_xscale("log")
    ax[0].set(xlabel="sampling steps", ylabel="mAP@10", title="Steps (Table 4)")
    ax2 = ax[0].twinx()
    ax2.plot([r["steps"] for r in s], [r["ms_per_query"] for r in s], "s--", color="gray")
    ax2.set_ylabel("ms / query")
    g = out["guidance"]
    im = ax[1].imshow(np.array(g["mAP@10"]), origin="lower", cmap="viridis")
    ax[1].set(xticks=range(len(g["w_text"])), xticklabels=g["w_text"], yticks=range(len(g["w_image"])),
              yticklabels=g["w_image"], xlabel="w_T", ylabel="w_I", title="Guidance (Fig. 10)")
    fig.colorbar(im, ax=ax[1])
    t = out["training"]
    ax[2].barh(list(t), [v["mAP@10"] for v in t.values()])
    ax[2].set(xlabel="mAP@10", title="Short stage-2 runs" if t else "Short stage-2 runs: not run (train_steps 0)")
    fig.tight_layout()
    layout.plots.mkdir(parents=True, exist_ok=True)
    with atomic_path(layout.plots / "ablations.png", suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
