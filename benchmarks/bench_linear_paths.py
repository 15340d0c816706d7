"""Which CPU path runs the official denoiser's linear layers fastest at sampling's row counts?

A guided sampling step at batch B multiplies 6B rows (3 guidance branches x 2 tokens) by each weight.
Measured, in one run, on the official network's feed-forward shapes (768 -> 3072 and 3072 -> 768) and its
attention projection (768 -> 768), fp32, one thread, under ``torch.no_grad``:
  - ``F.linear`` (MKL's GEMM, what the library runs);
  - oneDNN with a pre-reordered weight through private operators (benchmarks/cpu_prepack.py);
  - the public paths that could give the same: ``torch.utils.mkldnn.to_mkldnn``,
    ``torch.jit.freeze`` + ``torch.jit.optimize_for_inference``, ``torch.compile`` with ``freezing``.
Each is checked equal to ``F.linear`` (atol 1e-4) before it is timed.

    .venv/bin/python benchmarks/bench_linear_paths.py --out benchmarks/results/linear_paths_cpu.json
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings

import torch
import torch.nn.functional as F
import torch.utils.mkldnn
from report import report

SHAPES = ((768, 3072), (3072, 768), (768, 768))


def paths(lin: torch.nn.Linear, example: torch.Tensor) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notices
        jit = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(lin, example).eval()))
        mkldnn = torch.utils.mkldnn.to_mkldnn(torch.nn.Sequential(lin))[0]
    compiled = torch.compile(lin, options={"freezing": True}, dynamic=False)
    packed = torch.ops.mkldnn._reorder_linear_weight(lin.weight.detach(), None)
    return {
        "F.linear": lambda x: F.linear(x, lin.weight, lin.bias),
        "onednn_reordered_private": lambda x: torch.ops.mkldnn._linear_pointwise(x, packed, lin.bias, "none", [], ""),
        "torch.utils.mkldnn": mkldnn,
        "jit_optimize_for_inference": jit,
        "compile_freezing": compiled,
    }


def timed_us(fn, x, repeats: int) -> float:
    for _ in range(max(3, repeats // 10)):
        fn(x)
    t = time.perf_counter()
    for _ in range(repeats):
        fn(x)
    return (time.perf_counter() - t) / repeats * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="6,24,64", help="rows per call: 6B for a guided step at batch B")
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    rows_list = [int(r) for r in args.rows.split(",")]
    result = {"torch": torch.__version__, "machine": platform.processor() or platform.machine(), "threads": 1,
              "unit": "microseconds per call", "shapes": {}}
    with torch.no_grad():
        for i, o in SHAPES:
            lin = torch.nn.Linear(i, o).eval()
            fns = paths(lin, torch.randn(rows_list[0], i))
            rows_out = {}
            for rows in rows_list:
                x = torch.randn(rows, i)
                want = F.linear(x, lin.weight, lin.bias)
                times = {}
                for name, fn in fns.items():
                    torch.testing.assert_close(fn(x), want, atol=1e-4, rtol=1e-4, msg=f"{name} at {i}->{o}")
                    times[name] = round(timed_us(fn, x, args.repeats), 1)
                times["fastest_public"] = min((k for k in times if k not in ("F.linear", "onednn_reordered_private")),
                                              key=times.get)
                rows_out[str(rows)] = times
                print(f"{i}->{o} rows {rows}: {times}", flush=True)
            result["shapes"][f"{i}->{o}"] = rows_out
    report(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
