"""LLM-based caption triplets per second, guided against IP2P's one-pass sampler, in one run.

Loads the fine-tuned LM that `compodiff lifecycle` (or `compodiff run llm_adapter`) saved in
data/llm (base, adapter, tokenizer, through the `from_pretrained` path that loads OPT-6.7B) and sends
the same held-out captions (none of them a seed) through `llm.llm_triplets` twice: with
guidance_scale 1 (one pass; the reference) and with the configured guidance (the instruction, then the
edited caption with a second, unconditional branch), and guided again with the configured
likelihood filter (``min_output_logprob``). Reports prompts per second, kept triplets per second, the
scoring pass's seconds and, on the world, the grammar's consistency, for each.

    .venv/bin/python benchmarks/bench_llm_triplets.py [--prompts 1000] [--out benchmarks/results/llm_triplets.json]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict

import numpy as np
import torch
from report import report

from datagen import llm_triplets as llm
from datagen.shards import read_shard
from datagen.world import edits
from orchestration.params import load_params


def run(model, tok, captions: list[str], sample: dict, seed: int, min_output_logprob: float | None = None) -> dict:
    t0 = time.perf_counter()
    rows, stats = llm.llm_triplets(model, tok, [str(i) for i in range(len(captions))], captions, sample, seed,
                                   consistent=edits.consistent, edit_kind=edits.edit_kind,
                                   min_output_logprob=min_output_logprob)
    seconds = time.perf_counter() - t0
    return {"guidance_scale": sample["guidance_scale"], "min_output_logprob": min_output_logprob,
            "seconds": seconds, "scoring_seconds": stats["scoring_seconds"],
            "prompts_per_s": len(captions) / seconds, "kept_per_s": stats["kept"] / seconds,
            "kept": stats["kept"], "consistent_of_kept": stats["consistent_fraction"],
            "consistent_of_prompts": stats["parse_and_consistent_fraction"],
            "top_edit_kind_share": stats["top_edit_kind_share"], "rejected": stats["rejected"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default="data")
    ap.add_argument("--prompts", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    p = load_params(args.params)
    s = p.caption_triplets.llm.sample
    model, tok = llm.load_lm(f"{args.data}/llm/base", f"{args.data}/llm/adapter", f"{args.data}/llm/tokenizer")
    seeds = set(read_shard(f"{args.data}/llm/seed_triplets.parquet", ["reference"]).column("reference").to_pylist())
    pool = read_shard(f"{args.data}/caption_pool/captions.parquet", ["caption"]).column("caption").to_pylist()
    order = np.random.default_rng(12345).permutation(len(pool))
    captions = [pool[i] for i in order if pool[i] not in seeds][:args.prompts]
    sample = {k: v for k, v in asdict(s).items() if k != "guidance_scale"}
    res = {"prompts": len(captions), "threads": torch.get_num_threads(), "sampler": sample,
           "one_pass": run(model, tok, captions, {**sample, "guidance_scale": 1.0}, p.seed),
           "guided": run(model, tok, captions, {**sample, "guidance_scale": s.guidance_scale}, p.seed),
           "guided_filtered": run(model, tok, captions, {**sample, "guidance_scale": s.guidance_scale}, p.seed,
                                  p.caption_triplets.llm.min_output_logprob)}
    report(res, args.out)


if __name__ == "__main__":
    main()
