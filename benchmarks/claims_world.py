"""The paper's claims, measured on the world benchmark over training seeds and sampling seeds.

Run on a project whose default run has built the features, the benchmark and its index (the trained
stage-1 / stage-2 weights are not reused: every training seed trains its own). For each training seed:
stage 1, then stage 2 from it; stage 2 on 25% and 50% of the triplets (Table 6); stage 2 on triplets
only (Table 8, Eq. 3 alone); stage 2 from scratch for the steps of both stages (Table 8); both Combiners.
Each figure is reported per seed, never only as a mean:

  1. stage 2 beats the best baseline by >= 3 mAP@10 in every seed and leads on >= 7 of the 9 query types
     (paired bootstrap interval over queries for the margin);
  2. the negative text at least halves the share of top-10 results that show the negated object;
  3. the mask helps the mask queries;
  4. Table 4: 5 steps within 2% of 10 steps; 50 steps no worse than 10 beyond the seed spread;
  5. Table 6: 25% < 50% < 100% of the triplets;
  6. Table 8: the 30/30/40 mix beats triplets only; stage 1 then stage 2 beats stage 2 from scratch;
  7. stage 2 with the instruction beats an empty instruction by >= 3 mAP@10 on every edit kind.

  .venv/bin/python benchmarks/claims_world.py --root . --seeds 0 1 2 --out benchmarks/results/claims_world.json

The settings are the project's params (chosen on the validation benchmark, never here). A finished
seed is kept in the output file, so a killed run resumes at the next seed.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compodiff.atomic import write_json  # noqa: E402
from compodiff.benchmarks.circo import average_precision  # noqa: E402
from compodiff.combiner import Combiner, CombinerSpec, train_combiner  # noqa: E402
from compodiff.config_schema import digest  # noqa: E402
from compodiff.denoiser import CompoDiffDenoiser, preset  # noqa: E402
from compodiff.evaluation import sum_query  # noqa: E402
from compodiff.objectives import TripletFeatures, kind_balance_weights  # noqa: E402
from compodiff.pipeline import CompoDiffPipeline  # noqa: E402
from compodiff.training import TextTokens, train_denoiser  # noqa: E402
from datagen.world.truth import BENCHMARK_KINDS  # noqa: E402
from orchestration.eval_steps import Queries, compodiff_queries, negated_share  # noqa: E402
from orchestration.layout import Layout  # noqa: E402
from orchestration.params import load_params  # noqa: E402
from orchestration.train_steps import _spec, load_pair_features, load_triplet_features  # noqa: E402


def per_query_ap(q: Queries, emb: torch.Tensor, k: int = 10) -> np.ndarray:
    retrieved = q.search(emb.float(), 50)
    return np.array([100 * average_precision(list(r), gt, k) for r, gt in zip(retrieved, q.rows["ground_truth"])])


def summary(q: Queries, ap: np.ndarray) -> dict:
    kinds = np.array(q.kinds)
    return {"mAP@10": float(ap.mean()), "per_type": {k: float(ap[kinds == k].mean()) for k in sorted(set(q.kinds))}}


def bootstrap(diff: np.ndarray, seed: int, n: int = 2000) -> list[float]:
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(n, len(diff)))].mean(axis=1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def train(layout: Layout, spec, init: CompoDiffDenoiser, pairs, triplets, tokens) -> CompoDiffDenoiser:
    model = copy.deepcopy(init).train()
    model.requires_grad_(True)  # an EMA copy comes frozen
    with tempfile.TemporaryDirectory() as d:
        s = train_denoiser(model, spec, pairs, triplets, tokens, Path(d))
    return s["ema"].model


def subset(trip: TripletFeatures, fraction: float, seed: int, kind_balance: float) -> TripletFeatures:
    """A random share of the triplets, drawn by the same rule as the whole (its kind weights recounted)."""
    n = max(2, int(round(fraction * len(trip))))
    idx = torch.from_numpy(np.random.default_rng([seed, 61]).permutation(len(trip))[:n])
    kind = [trip.kind[i] for i in idx] if trip.kind is not None else None
    return TripletFeatures(trip.reference[idx], trip.target[idx], [trip.instruction[i] for i in idx],
                           [trip.reversed_instruction[i] for i in idx],
                           kind_balance_weights(kind, kind_balance) if kind and kind_balance else None, kind)


def one_seed(layout: Layout, q: Queries, seed: int, sampling_seeds: list[int], log) -> dict:
    p = layout.params
    b = p.benchmark
    enc = q.enc
    cfg = preset(p.training.denoiser, embed_dim=enc.embed_dim, text_dim=enc.text_width)
    pairs = load_pair_features(layout, enc.embed_dim)
    trip = load_triplet_features(layout, enc.embed_dim)
    tokens = TextTokens(lambda texts: enc.text_tokens(texts)[0], p.training.text_cache)
    s1 = replace(_spec(layout, "stage1"), seed=seed, checkpoint_every=10**9)
    s2 = replace(_spec(layout, "stage2"), seed=seed, checkpoint_every=10**9)
    out: dict = {"seed": seed, "seconds": {}}

    def timed(name, fn):
        t0 = time.perf_counter()
        r = fn()
        out["seconds"][name] = time.perf_counter() - t0
        log(f"seed {seed}: {name} in {out['seconds'][name]:.0f}s")
        return r

    torch.manual_seed(seed)
    fresh = CompoDiffDenoiser(cfg)
    stage1 = timed("stage1", lambda: train(layout, s1, fresh, pairs, None, tokens))
    models = {"stage2": timed("stage2", lambda: train(layout, s2, stage1, pairs, trip, tokens))}
    balance = p.training.stage2.kind_balance
    for f in (0.25, 0.5):
        models[f"stage2 triplets x{f:g}"] = timed(f"x{f:g}", lambda f=f: train(
            layout, s2, stage1, pairs, subset(trip, f, seed, balance), tokens))
    models["stage2 triplets only"] = timed("triplets only", lambda: train(
        layout, replace(s2, mix=(0.0, 0.0, 1.0)), stage1, None, trip, tokens))
    # from a random init, so with stage 1's learning rate and warm-up; the stage-2 mix for both stages' steps
    models["stage2 from scratch"] = timed("from scratch", lambda: train(
        layout, replace(s2, steps=s1.steps + s2.steps, lr=s1.lr, warmup_steps=s1.warmup_steps), fresh, pairs, trip,
        tokens))

    aps: dict[str, np.ndarray] = {
        "image_only": per_query_ap(q, q.reference), "text_only": per_query_ap(q, q.text),
        "image_text_sum": per_query_ap(q, sum_query(q.reference, q.text))}
    c = p.combiner
    text = enc.encode_text(trip.instruction)
    reverse = enc.encode_text(trip.reversed_instruction)
    for name, rev in (("combiner", None), ("combiner_bidirectional", reverse)):
        torch.manual_seed(seed)
        comb = Combiner(CombinerSpec(enc.embed_dim, c.projection_dim, c.hidden_dim, c.dropout, c.logit_scale))
        timed(name, lambda comb=comb, rev=rev: train_combiner(comb, trip.reference, trip.target, text, rev,
                                                              p.training.bidirectional.alpha, c.steps, c.batch_size,
                                                              c.lr, seed, weight=trip.weight))
        comb.eval()
        with torch.no_grad():
            aps[name] = per_query_ap(q, comb(q.reference, q.text))
    baselines = list(aps)
    main = CompoDiffPipeline(models["stage2"], enc)
    for s in sampling_seeds:
        emb = compodiff_queries(main, q, b, negative=True, mask=True, seed=s)
        aps[f"stage2 sampling seed {s}"] = per_query_ap(q, emb)
        if s == sampling_seeds[0]:
            aps["stage2"] = aps[f"stage2 sampling seed {s}"]
            plain = compodiff_queries(main, q, b, negative=False, mask=False, seed=s)
            out["negative_share"] = {"with": negated_share(q, q.search(emb, 50)),
                                     "without": negated_share(q, q.search(plain, 50))}
            no_mask = compodiff_queries(main, q, b, negative=True, mask=False, seed=s)
            aps["stage2 without mask"] = per_query_ap(q, no_mask)
            empty = dict(q.rows)
            q_empty = copy.copy(q)
            q_empty.rows = {**empty, "instruction": [""] * len(q.kinds)}
            aps["stage2 empty instruction"] = per_query_ap(q, compodiff_queries(main, q_empty, b, True, True, seed=s))
            for steps in (5, 50):
                aps[f"stage2 {steps} steps"] = per_query_ap(
                    q, compodiff_queries(main, q, b, negative=True, mask=True, steps=steps, seed=s))
    for name, model in models.items():
        if name != "stage2":
            aps[name] = per_query_ap(q, compodiff_queries(CompoDiffPipeline(model, enc), q, b, True, True,
                                                          seed=sampling_seeds[0]))
    out["methods"] = {k: summary(q, v) for k, v in aps.items()}
    best = max(baselines, key=lambda k: aps[k].mean())
    margin = aps["stage2"] - aps[best]
    per_type = out["methods"]["stage2"]["per_type"]
    out["best_baseline"] = best
    out["margin"] = {"mAP@10": float(margin.mean()), "bootstrap_95": bootstrap(margin, seed),
                     "by_sampling_seed": {s: float((aps[f"stage2 sampling seed {s}"] - aps[best]).mean())
                                          for s in sampling_seeds},
                     "types_led": sorted(k for k, v in per_type.items()
                                         if v > max(out["methods"][x]["per_type"][k] for x in baselines))}
    kinds = np.array(q.kinds)
    out["instruction_gain"] = {k: float((aps["stage2"] - aps["stage2 empty instruction"])[kinds == k].mean())
                               for k in BENCHMARK_KINDS if (kinds == k).any()}
    return out


def claims(seeds: list[dict]) -> dict:
    def m(r, name):
        return r["methods"][name]["mAP@10"]

    per_seed = []
    for r in seeds:
        ten, five, fifty = m(r, "stage2"), m(r, "stage2 5 steps"), m(r, "stage2 50 steps")
        mask = r["methods"]["stage2"]["per_type"]["mask"], r["methods"]["stage2 without mask"]["per_type"]["mask"]
        per_seed.append({
            "seed": r["seed"],
            "1_beats_best_baseline_by_3": r["margin"]["mAP@10"] >= 3.0,
            "1_leads_7_of_9_types": len(r["margin"]["types_led"]) >= 7,
            "2_negative_text_halves": r["negative_share"]["with"] <= 0.5 * r["negative_share"]["without"],
            "3_mask_helps": mask[0] > mask[1],
            "4_five_steps_within_2pct": five >= 0.98 * ten,
            "5_triplet_scale_increasing": m(r, "stage2 triplets x0.25") < m(r, "stage2 triplets x0.5") < ten,
            "6_mix_beats_triplets_only": ten > m(r, "stage2 triplets only"),
            "6_two_stages_beat_scratch": ten > m(r, "stage2 from scratch"),
            "7_reads_instruction_every_kind": all(v >= 3.0 for v in r["instruction_gain"].values()),
            "fifty_minus_ten": fifty - ten,
        })
    spread = float(np.std([m(r, "stage2") for r in seeds])) if len(seeds) > 1 else 0.0
    for c in per_seed:
        c["4_fifty_steps_no_worse"] = c.pop("fifty_minus_ten") >= -spread
    keys = [k for k in per_seed[0] if k != "seed"]
    return {"per_seed": per_seed, "holds_in_every_seed": {k: all(c[k] for c in per_seed) for k in keys},
            "stage2_spread": spread}


def aggregate(seeds: list[dict]) -> dict:
    names = seeds[0]["methods"]
    return {n: {"mean": float(np.mean([r["methods"][n]["mAP@10"] for r in seeds])),
                "std": float(np.std([r["methods"][n]["mAP@10"] for r in seeds])),
                "per_seed": [r["methods"][n]["mAP@10"] for r in seeds]} for n in names}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agg = result["aggregate"]
    names = list(agg)
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(names) + 1))
    ax.barh(names, [agg[n]["mean"] for n in names], xerr=[agg[n]["std"] for n in names], color="#4a7")
    for i, n in enumerate(names):
        ax.plot(agg[n]["per_seed"], [i] * len(agg[n]["per_seed"]), "k.", ms=4)
    ax.invert_yaxis()
    ax.set(xlabel="world mAP@10 (bars: mean and spread over training seeds; dots: each seed)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=".")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--sampling-seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/claims_world.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.root).resolve()
    layout = Layout(root, load_params(root / "params.yaml"))
    out = Path(args.out)
    done = json.loads(out.read_text()) if out.is_file() else {}
    if done.get("params_digest") != digest(layout.params):
        done = {}  # seeds of other settings are not this run's
    seeds = {r["seed"]: r for r in done.get("seeds", [])}
    q = Queries(layout)
    t0 = time.perf_counter()
    for s in args.seeds:
        if s in seeds:
            continue
        seeds[s] = one_seed(layout, q, s, args.sampling_seeds, lambda m: print(m, flush=True))
        partial = [seeds[k] for k in sorted(seeds)]
        write_json(out, {"params_digest": digest(layout.params), "seeds": partial})
    result = [seeds[k] for k in args.seeds]
    final = {"params_digest": digest(layout.params), "profile": layout.params.profile,
             "training_seeds": args.seeds, "sampling_seeds": args.sampling_seeds,
             "seconds_this_call": time.perf_counter() - t0, "seeds": result, "aggregate": aggregate(result),
             "claims": claims(result)}
    write_json(out, final)
    plot(final, out.with_suffix(".png"))
    for name, v in final["aggregate"].items():
        print(f"{name:36s} {v['mean']:6.2f} ± {v['std']:.2f}  " + " ".join(f"{x:6.2f}" for x in v["per_seed"]))
    print(json.dumps(final["claims"]["holds_in_every_seed"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
