"""Composed-query sampling speed of the official-size denoiser (issue: performance of sampling).

Ours: conditions (text projection, mask MLP, every layer's cross-attention keys and values)
encoded once per query batch, three guidance branches in one batched forward per step.
On the CPU in fp32, ours also serves with oneDNN-reordered linear weights (``cpu_prepack.py``);
it is reported with and without them.
Reference, measured in the same run: a straightforward implementation that calls the full
network three times per step (one forward per guidance branch), recomputing the conditions
each time, as the release does for its branches' context. At batch 1 it is also measured with
the reordered weights, to show what they alone give it. ``--precisions`` adds ours in other serving
precisions (compodiff.precision: int8 dynamic quantization, bf16), each with its cosine to ours in fp32.

    .venv/bin/python benchmarks/bench_sampling.py [--device cpu|cuda] [--dtype fp32|bf16]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from cpu_prepack import prepacked_copy
from report import report

import compodiff
from compodiff import TextConditions
from compodiff.diffusion import CosineSchedule
from compodiff.sampling import ddim_sample, time_pairs_for_steps


def naive_compose(net, schedule, ref, text, null, mask, w_image, w_text, steps, seed):
    """Three full forwards per step, conditions recomputed every time."""
    g = torch.Generator().manual_seed(seed)
    zeros = torch.zeros_like(ref)

    def x0_fn(x, t):
        cond = net(x, t, text, ref, mask)
        n_txt = net(x, t, null, ref, mask)
        n_all = net(x, t, null, zeros, mask)
        return n_all + w_image * (n_txt - n_all) + w_text * (cond - n_txt)

    x = torch.randn(ref.shape, generator=g).to(ref.device, ref.dtype)
    return ddim_sample(x0_fn, x, time_pairs_for_steps(steps), schedule, generator=g)


def timed(fn, repeats, device):
    fn()  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeats, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batches", default="1,256")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--precisions", default="", help="more serving precisions, e.g. int8,bf16")
    ap.add_argument("--out")
    args = ap.parse_args()
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    torch.manual_seed(0)
    net = compodiff.build_denoiser("official").to(args.device, dtype).eval()
    pipe = compodiff.CompoDiffPipeline(net)
    prepack = args.device == "cpu" and dtype == torch.float32
    if prepack:
        net_packed = prepacked_copy(net)
        pipe_packed = compodiff.CompoDiffPipeline(net_packed)
    schedule = CosineSchedule(1000).to(args.device)
    results = {"device": args.device, "dtype": args.dtype, "steps": args.steps, "torch": torch.__version__,
               "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine()}
    for b in [int(x) for x in args.batches.split(",")]:
        ref = torch.randn(b, 768, device=args.device, dtype=dtype)
        text = torch.randn(b, 77, 1280, device=args.device, dtype=dtype)
        null = torch.randn(1, 77, 1280, device=args.device, dtype=dtype).expand(b, 77, 1280)
        mask = torch.zeros(b, 64, 64, device=args.device, dtype=dtype)
        def ours_fn(p=pipe, ref=ref, text=text, null=null, b=b):
            return p.compose_tokens(ref, TextConditions(text, None), TextConditions(null, None),
                                    steps=args.steps, seed=0, batch_size=b)

        def reference_fn(n=net, ref=ref, text=text, null=null, mask=mask):
            with torch.no_grad():
                return naive_compose(n, schedule, ref, text, null, mask, 1.5, 7.5, args.steps, 0)

        ref_repeats = args.repeats if b == 1 else 1
        row = {}
        naive_t, naive = timed(reference_fn, ref_repeats, args.device)
        ours_t, ours = timed(ours_fn, args.repeats, args.device)
        row.update(reference_s=naive_t, ours_s=ours_t, speedup=naive_t / ours_t,
                   max_abs_diff=(ours.float() - naive.float()).abs().max().item())
        line = (f"batch {b:4d}: reference {naive_t * 1000:9.1f} ms  "
                f"ours {ours_t * 1000:9.1f} ms ({naive_t / ours_t:5.2f}x)")
        if prepack:
            packed_t, packed = timed(lambda: ours_fn(p=pipe_packed), args.repeats, args.device)
            row.update(ours_prepacked_s=packed_t, speedup_prepacked=naive_t / packed_t,
                       max_abs_diff_prepacked=(packed.float() - naive.float()).abs().max().item())
            line += f"  ours prepacked {packed_t * 1000:9.1f} ms ({naive_t / packed_t:5.2f}x)"
            if b == 1:
                rp_t, _ = timed(lambda: reference_fn(n=net_packed), ref_repeats, args.device)
                row.update(reference_prepacked_s=rp_t)
                line += f"  reference prepacked {rp_t * 1000:9.1f} ms"
        for prec in [x for x in args.precisions.split(",") if x]:
            served = compodiff.CompoDiffPipeline(net, precision=prec)
            p_t, p_out = timed(lambda s=served: ours_fn(p=s), args.repeats, args.device)
            cos = torch.nn.functional.cosine_similarity(p_out.float(), ours.float()).min().item()
            row.update({f"ours_{prec}_s": p_t, f"speedup_{prec}": naive_t / p_t, f"min_cosine_{prec}_to_fp32": cos})
            line += f"  ours {prec} {p_t * 1000:9.1f} ms ({naive_t / p_t:5.2f}x, cos {cos:.5f})"
        best = min(row.get("ours_prepacked_s", ours_t), ours_t)
        row.update(ours_queries_per_s=b / best, reference_queries_per_s=b / naive_t)
        results[f"batch{b}"] = row
        print(line + f"  max |diff| {row['max_abs_diff']:.1e}", flush=True)
    report(results, args.out)


if __name__ == "__main__":
    main()
