"""Image pairs and the CLIP filter: throughput, and the cost of the self-attention injection.

- World renderer: pairs and images per second on one core (the procedural generator, as the step runs it).
- CLIP filter: pairs scored per second with the trained world encoder (data/encoder, made by
  `compodiff lifecycle`), and the thresholding alone.
- Stable Diffusion with and without the injection, same run, same inputs: on CUDA, a UNet / VAE /
  text encoder with SD 1.5's exact configuration (random weights) at 512x512, 25 steps, fp16, with
  peak memory; on a CPU, the tiny random pipeline (the ratio is what matters there).

    .venv/bin/python benchmarks/bench_image_pairs.py [--pairs 2000] [--out benchmarks/results/x.json]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time

import numpy as np
import torch
from report import report

from compodiff.encoders import load_encoder
from datagen.clip_filter import apply_filter, clip_scores
from datagen.config import ClipFilterConfig
from datagen.image_pairs import PairRequest
from datagen.sd_generator import generate_pairs, install_injection
from datagen.sd_random import random_pipeline
from datagen.world import edits
from datagen.world.captions import caption
from datagen.world.scene import sample_scene
from datagen.world_generator import ProceduralGenerator


def world_requests(n: int) -> list[PairRequest]:
    rng = np.random.default_rng(0)
    out = []
    while len(out) < n:
        scene = sample_scene(rng)
        ref = caption(scene, rng)
        spec = edits.parse_caption(ref)
        e = edits.sample_edit(spec, rng)
        if e is None:
            continue
        tgt = edits.caption_of(edits.apply_edit(spec, e), edits.phrasing_of(ref))
        out.append(PairRequest(f"t{len(out)}", ref, edits.instruction(spec, e, rng), tgt, "llm", None, None, -1, 0,
                               int(rng.integers(2**31))))
    return out


def bench_sd(device: torch.device, pairs: int, repeats: int) -> dict:
    kind, res, steps = ("sd15", 512, 25) if device.type == "cuda" else ("tiny", 64, 25)
    with tempfile.TemporaryDirectory() as d:
        pipe = random_pipeline(kind, d)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    pipe = pipe.to(device=device, dtype=dtype)
    proc = install_injection(pipe.unet)
    refs, tgts = [f"a photo of a red car number {i}" for i in range(pairs)], [f"a photo of a blue car {i}"
                                                                              for i in range(pairs)]
    seeds = list(range(pairs))
    out = {"pipeline": kind, "resolution": res, "steps": steps, "pairs_per_batch": pairs, "dtype": str(dtype)}
    for name, p in (("without_injection", [0.0] * pairs), ("with_injection", [0.5] * pairs)):
        generate_pairs(pipe, proc, refs, tgts, seeds, p, [7.5] * pairs, 2, res)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for _ in range(repeats):
            generate_pairs(pipe, proc, refs, tgts, seeds, p, [7.5] * pairs, steps, res)
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = (time.perf_counter() - t0) / repeats
        out[name] = {"pairs_per_second": pairs / dt, "seconds_per_batch": dt}
        if device.type == "cuda":
            out[name]["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    plain, injected = out["without_injection"], out["with_injection"]
    out["injection_overhead"] = plain["pairs_per_second"] / injected["pairs_per_second"] - 1
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=2000)
    ap.add_argument("--sd-pairs", type=int, default=4)
    ap.add_argument("--sd-repeats", type=int, default=2)
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(1)
    reqs = world_requests(args.pairs)
    gen = ProceduralGenerator(64)
    t0 = time.perf_counter()
    results = gen.generate(reqs)
    t_world = time.perf_counter() - t0
    ok = [r for r in results if r.images is not None]
    enc = load_encoder("local-dir:data/encoder")
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    scores = clip_scores(enc, np.stack([r.images[0] for r in ok]), np.stack([r.images[1] for r in ok]),
                         [q.reference for q in reqs[:len(ok)]], [q.target for q in reqs[:len(ok)]],
                         [q.instruction for q in reqs[:len(ok)]], ["llm"] * len(ok), [None] * len(ok))
    t_scores = time.perf_counter() - t0
    cfg = ClipFilterConfig(0.7, 0.2, 0.2, 0.2, 0.2, 0.2, 4, 0.0)
    t0 = time.perf_counter()
    apply_filter(scores, [q.triplet_id for q in reqs[:len(ok)]], cfg)
    t_thresh = time.perf_counter() - t0
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    res = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "world": {"pairs": len(reqs), "pairs_per_second_per_core": len(reqs) / t_world,
                  "images_per_second_per_core": 2 * len(reqs) / t_world},
        "filter": {"pairs": len(ok), "scored_pairs_per_second": len(ok) / t_scores,
                   "threshold_pairs_per_second": len(ok) / max(t_thresh, 1e-9)},
        "stable_diffusion": bench_sd(device, args.sd_pairs, args.sd_repeats),
    }
    report(res, args.out)


if __name__ == "__main__":
    main()
