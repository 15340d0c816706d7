"""The default run's stage 2 served in each precision (compodiff.precision), on the world benchmark.

For each precision: mAP@10 of the benchmark's 360 queries (with their negative texts and masks, as the
benchmark step scores stage 2), the cosine of every composed embedding to fp32's, and the time of the
whole query batch and of a batch-1 query. Run on a project whose default run has built stage 2:

  .venv/bin/python benchmarks/bench_precision_world.py --root . --out benchmarks/results/precision_world.json

``--layers --split validation`` compares which linear layers int8 quantizes (all of them, or the
transformer blocks only, as ``compodiff.precision`` does) by the cosine to fp32 on the validation split:

  .venv/bin/python benchmarks/bench_precision_world.py --root . --split validation --layers \
      --out benchmarks/results/precision_layers_validation.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from report import report  # noqa: E402

from compodiff.checkpoint import load_checkpoint  # noqa: E402
from compodiff.evaluation import cir_metrics  # noqa: E402
from compodiff.pipeline import CompoDiffPipeline  # noqa: E402
from compodiff.precision import PRECISIONS  # noqa: E402
from compodiff.training import bf16_is_fast  # noqa: E402
from orchestration import eval_steps  # noqa: E402
from orchestration.layout import Layout  # noqa: E402
from orchestration.params import load_params  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=".")
    ap.add_argument("--precisions", nargs="+", default=["fp32", "int8", "bf16"], choices=PRECISIONS)
    ap.add_argument("--single", type=int, default=20, help="batch-1 queries timed per precision")
    ap.add_argument("--split", default="test", choices=["test", "validation"])
    ap.add_argument("--layers", action="store_true", help="compare the int8 layer sets instead")
    ap.add_argument("--run", default="", help="what else ran on the machine meanwhile, recorded with the figures")
    ap.add_argument("--out")
    args = ap.parse_args()
    root = Path(args.root).resolve()
    layout = Layout(root, load_params(root / "params.yaml"))
    b = layout.params.benchmark
    torch.set_num_threads(layout.params.training.threads)
    if args.split == "validation":
        from validate_world import validation_layout

        q = eval_steps.Queries(validation_layout(root))
    else:
        q = eval_steps.Queries(layout)
    net = load_checkpoint(layout.stage_dir("stage2") / "denoiser.safetensors")
    out = {"run": f"bench_precision_world on {os.cpu_count()} cores" + (f"; {args.run}" if args.run else ""),
           "bf16_units": bf16_is_fast(torch.device("cpu")), "steps": b.steps, "queries": len(q.kinds),
           "split": args.split}
    if args.layers:
        out["int8_layers"] = layer_sets(net, q, b)
        report(out, args.out)
        return 0
    out["precisions"] = {}
    fp32 = None
    for precision in args.precisions:
        pipe = CompoDiffPipeline(net, q.enc, precision=precision)
        t0 = time.perf_counter()
        emb = eval_steps.compodiff_queries(pipe, q, b, negative=True, mask=True)
        batch_s = time.perf_counter() - t0
        one = eval_steps.compodiff_queries  # a batch-1 query: the service's latency without HTTP
        times = []
        for i in range(args.single + 1):
            sub = _subset(q, i)
            t0 = time.perf_counter()
            one(pipe, sub, b, negative=True, mask=True)
            times.append(time.perf_counter() - t0)
        fp32 = emb if fp32 is None else fp32
        row = {"mAP@10": cir_metrics(q.search(emb, b.topk), q.rows["ground_truth"], q.kinds)["mAP@10"],
               "min_cosine_to_fp32": torch.nn.functional.cosine_similarity(emb, fp32).min().item(),
               "mean_cosine_to_fp32": torch.nn.functional.cosine_similarity(emb, fp32).mean().item(),
               "batch_seconds": batch_s, "single_query_p50_ms": 1000 * float(torch.tensor(times[1:]).median())}
        out["precisions"][precision] = row
        print(f"{precision}: mAP@10 {row['mAP@10']:.2f}  cos to fp32 min {row['min_cosine_to_fp32']:.5f}  "
              f"batch of {len(q.kinds)} {batch_s:.2f} s  batch-1 p50 {row['single_query_p50_ms']:.1f} ms", flush=True)
    report(out, args.out)
    return 0


def layer_sets(net, q, b) -> dict:
    """Cosine to fp32 (and mAP@10) with every linear layer in int8, against the transformer blocks only."""
    import copy
    import warnings

    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    from compodiff.precision import QUANTIZED

    fp32 = eval_steps.compodiff_queries(CompoDiffPipeline(net, q.enc), q, b, negative=True, mask=True)
    names = [n for n, m in net.named_modules() if type(m) is torch.nn.Linear]
    rows = {}
    for label, chosen in (("every linear layer", names), ("transformer blocks", [n for n in names
                                                                                  if n.startswith(QUANTIZED)])):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            served = quantize_dynamic(copy.deepcopy(net), {n: per_channel_dynamic_qconfig for n in chosen},
                                      dtype=torch.qint8)
        emb = eval_steps.compodiff_queries(CompoDiffPipeline(served, q.enc), q, b, negative=True, mask=True)
        cos = torch.nn.functional.cosine_similarity(emb, fp32)
        rows[label] = {"layers": len(chosen), "min_cosine_to_fp32": cos.min().item(),
                       "mean_cosine_to_fp32": cos.mean().item(),
                       "mAP@10": cir_metrics(q.search(emb, b.topk), q.rows["ground_truth"], q.kinds)["mAP@10"],
                       "mAP@10_fp32": cir_metrics(q.search(fp32, b.topk), q.rows["ground_truth"], q.kinds)["mAP@10"]}
        print(f"int8 {label}: cos min {rows[label]['min_cosine_to_fp32']:.5f} mean "
              f"{rows[label]['mean_cosine_to_fp32']:.5f}  mAP@10 {rows[label]['mAP@10']:.2f}", flush=True)
    return rows


class _subset:
    """Query ``i`` of the benchmark alone, with what compodiff_queries reads."""

    def __init__(self, q, i: int):
        i = i % len(q.kinds)
        self.rows = {k: v[i:i + 1] for k, v in q.rows.items()}
        self.reference, self.masked_reference = q.reference[i:i + 1], q.masked_reference[i:i + 1]
        self.masks = q.masks[i:i + 1]


if __name__ == "__main__":
    raise SystemExit(main())
