"""Keyword-based caption triplets per second (target: 100k captions in under a minute on 2 cores).

Captions come from the world's caption grammar; neighbours from the trained world encoder
(data/encoder, made by `compodiff lifecycle`). Also timed: the FAISS similarity-window search on
50,000 random 768-d keyword embeddings (the paper has 586k terms), checked against brute force
on a sample of rows.

    .venv/bin/python benchmarks/bench_keyword_triplets.py [--captions 100000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from report import report

from compodiff.encoders import load_encoder
from datagen.keyword_triplets import build_neighbours, keyword_triplets, object_terms, similarity_window
from datagen.world.captions import caption
from datagen.world.nlp import build_world_nlp
from datagen.world.scene import sample_scene


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--captions", type=int, default=100_000)
    ap.add_argument("--window", type=float, nargs=2, default=(0.6, 0.9))
    ap.add_argument("--out")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    captions = [caption(sample_scene(rng), rng) for _ in range(args.captions)]
    nlp = build_world_nlp()
    enc = load_encoder("local-dir:data/encoder")
    t0 = time.perf_counter()
    terms = sorted(object_terms(nlp.pipe(captions[:20000], batch_size=2000), 5))
    emb = enc.encode_text(terms).numpy()
    t_terms = time.perf_counter() - t0
    t0 = time.perf_counter()
    neighbours = build_neighbours(terms, lambda ts: emb, *args.window)
    t_faiss = time.perf_counter() - t0
    big = np.random.default_rng(1).normal(size=(50_000, 768)).astype(np.float32)
    t0 = time.perf_counter()
    window = similarity_window(big, 0.12, 0.2)
    t_big = time.perf_counter() - t0
    unit = big / np.linalg.norm(big, axis=1, keepdims=True)
    for i in (0, 777, 49_999):
        sims = unit @ unit[i]
        brute = {j for j in np.flatnonzero((sims >= 0.12) & (sims <= 0.2)) if j != i}
        assert {j for j, _ in window[i]} == brute
    t0 = time.perf_counter()
    rows, stats = keyword_triplets([str(i) for i in range(len(captions))], captions, nlp, neighbours, seed=0)
    t_trip = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows2, _ = keyword_triplets([str(i) for i in range(len(captions))], captions, nlp, neighbours, seed=0,
                                n_process=2)
    t_trip2 = time.perf_counter() - t0
    assert rows2 == rows  # the same triplets, whatever the number of processes
    res = {"captions": len(captions), "triplets": stats.triplets, "terms": len(terms),
           "term_extraction_s": t_terms, "faiss_window_s": t_faiss, "faiss_window_50k_terms_s": t_big,
           "triplet_s": t_trip, "captions_per_s": len(captions) / t_trip,
           "triplet_s_2_processes": t_trip2, "captions_per_s_2_processes": len(captions) / t_trip2,
           "skipped": dict(stats.skipped)}
    report(res, args.out)


if __name__ == "__main__":
    main()
