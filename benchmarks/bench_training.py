"""Training throughput of the denoiser: stage-2 steps (Eq. 1 / 2 / 3 mixed 30/30/40) on random features.

CPU: the world preset (256-d, 4 layers) at batch 192, as the default profile trains it, fp32 and bf16.
CUDA (when present): the official-size model at batch 2048, fp32 vs bf16 autocast, samples per second
and peak memory.

    .venv/bin/python benchmarks/bench_training.py [--steps 30] [--out benchmarks/results/training_cpu.json]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import torch
from report import report

from compodiff.denoiser import CompoDiffDenoiser, preset
from compodiff.objectives import PairFeatures, TripletFeatures
from compodiff.training import TrainSpec, train_denoiser

TEXT_LEN = 32  # the world text tower's context length


def features(n: int, d: int, mask: int) -> tuple[PairFeatures, TripletFeatures]:
    g = torch.Generator().manual_seed(0)
    img = torch.randn(n, d, generator=g)
    masks = torch.rand(n, mask, mask, generator=g) > 0.8
    pairs = PairFeatures(img, img + 0.1 * torch.randn(n, d, generator=g), masks, [f"caption {i}" for i in range(n)])
    trip = TripletFeatures(torch.randn(n, d, generator=g), torch.randn(n, d, generator=g),
                           [f"edit {i}" for i in range(n)], [f"[BACKWARD] edit {i}" for i in range(n)])
    return pairs, trip


def run(name: str, batch: int, steps: int, bf16: bool, device: torch.device) -> dict:
    cfg = preset(name)
    model = CompoDiffDenoiser(cfg).to(device)
    pairs, trip = features(4096, cfg.embed_dim, cfg.mask_size)
    tokens = torch.randn(64, TEXT_LEN, cfg.text_dim)

    def text(texts: list[str]) -> torch.Tensor:  # a text tower's output shape, at no cost
        return tokens[torch.tensor([hash(t) % 64 for t in texts])]

    spec = TrainSpec("stage2", steps, batch, 1e-4, 5, (0.3, 0.3, 0.4), 0.06, 0.999, 1.0, 0.1, bf16, 10**9, 0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as d:
        out = train_denoiser(model, spec, pairs, trip, text, Path(d))
    res = {"preset": name, "batch": batch, "steps": steps, "bf16": bf16,
           "samples_per_second": out["samples_per_second"], "seconds": out["seconds"]}
    if device.type == "cuda":
        res["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    machine = f"{platform.processor() or platform.machine()}, {args.threads} threads"
    results = {"machine": machine, "device": str(device), "torch": torch.__version__, "runs": []}
    if device.type == "cpu":  # fp32, and bf16 autocast (what the world profile trains with on a CPU that has it)
        for bf16 in (False, True):
            results["runs"].append(run("world", 192, args.steps, bf16, device))
    else:
        for bf16 in (False, True):
            results["runs"].append(run("official", 2048, args.steps, bf16, device))
    report(results, args.out)


if __name__ == "__main__":
    main()
