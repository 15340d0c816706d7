"""Approximate gallery index against exact search, same run: recall@10 and query speed.

1M random 768-d vectors drawn from a mixture of Gaussian clusters (the shape of real image
embeddings; pure isotropic noise has no neighbours worth finding), 1,000 held-out queries from the
same mixture. Exact = FAISS flat inner product over L2-normalised vectors (what the evaluators
rank). Approximate = IVF-PQ built in shards and merged, probing a few cells, with exact re-ranking
of a short candidate list (``refine_factor``), through ``compodiff.retrieval.GalleryIndex``.

    .venv/bin/python benchmarks/bench_index.py [--n 1000000] [--out benchmarks/results/index_cpu.json]
"""

from __future__ import annotations

import argparse
import platform
import time

import faiss
import numpy as np
from report import report

from compodiff.retrieval import GalleryIndex, IndexSpec


def mixture(n: int, d: int, centres: int, seed: int, spread: float = 0.35) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = np.random.default_rng(12345).normal(size=(centres, d)).astype(np.float32)
    out = np.empty((n, d), dtype=np.float32)
    for a in range(0, n, 100_000):
        b = min(n, a + 100_000)
        out[a:b] = c[rng.integers(centres, size=b - a)] + spread * rng.normal(size=(b - a, d)).astype(np.float32)
    return out


def timed_search(index: GalleryIndex, q: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    index.search(q[:10], k, "bench")  # warm-up
    t0 = time.perf_counter()
    _, ids = index.search(q, k, "bench")
    return ids, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--centres", type=int, default=20_000)
    ap.add_argument("--out")
    args = ap.parse_args()
    t0 = time.perf_counter()
    x = mixture(args.n, args.d, args.centres, seed=0)
    q = mixture(args.queries, args.d, args.centres, seed=1)
    t_data = time.perf_counter() - t0
    t0 = time.perf_counter()
    exact = GalleryIndex.build(x, "bench", IndexSpec("flat"))
    t_exact_build = time.perf_counter() - t0
    truth, t_exact = timed_search(exact, q, 10)
    del exact
    spec = IndexSpec("ivfpq", nlist=4096, m=96, nbits=8, nprobe=24, refine_factor=10)
    t0 = time.perf_counter()
    approx = GalleryIndex.build(x, "bench", spec, shards=4, train_sample=150_000)
    t_approx_build = time.perf_counter() - t0
    ids, t_approx = timed_search(approx, q, 10)
    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth)]))
    res = {
        "machine": f"{platform.processor() or platform.machine()}, {faiss.omp_get_max_threads()} threads",
        "vectors": args.n, "dim": args.d, "queries": args.queries, "centres": args.centres,
        "data_seconds": t_data,
        "exact": {"build_seconds": t_exact_build, "search_seconds": t_exact,
                  "queries_per_second": args.queries / t_exact},
        "ivfpq_refine": {"spec": spec.__dict__, "build_seconds": t_approx_build, "search_seconds": t_approx,
                         "queries_per_second": args.queries / t_approx, "recall@10": recall},
        "speedup": t_exact / t_approx,
    }
    report(res, args.out)


if __name__ == "__main__":
    main()
