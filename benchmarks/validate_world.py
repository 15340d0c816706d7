"""The world benchmark's validation split: the same recipe rendered with another seed, for choosing settings.

Settings (guidance weights, sampling steps, data mixes) are chosen here, never on the test benchmark that
the default run reports. The split is built into its own folder beside the run, with the run's encoder.

  .venv/bin/python benchmarks/validate_world.py --root . --w-text 1 3 7.5 --w-image 1.5
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from report import report  # noqa: E402

from compodiff.checkpoint import load_checkpoint  # noqa: E402
from compodiff.combiner import load_combiner  # noqa: E402
from compodiff.evaluation import cir_metrics, sum_query  # noqa: E402
from compodiff.pipeline import CompoDiffPipeline  # noqa: E402
from orchestration import eval_steps  # noqa: E402
from orchestration.layout import Layout  # noqa: E402
from orchestration.params import load_params  # noqa: E402

VALIDATION_SEED_OFFSET = 1000  # the test benchmark is rendered with the params' seed


def validation_layout(root: Path, seed_offset: int = VALIDATION_SEED_OFFSET) -> Layout:
    """A layout whose benchmark, gallery features and index are the validation split's (built once)."""
    params = load_params(root / "params.yaml")
    val = Layout(root, replace(params, seed=params.seed + seed_offset,
                               data_dir=str(Path(params.data_dir) / f"validation_{seed_offset}")))
    if not val.faiss_index.exists():
        eval_steps.world_benchmark(val)
        eval_steps.gallery_features(val)
        eval_steps.faiss_index(val)
    return val


def validation_run(root: str, threads: int) -> tuple[Layout, Layout, eval_steps.Queries]:
    """The run's layout, the validation split's layout and its queries, with torch on ``threads``."""
    torch.set_num_threads(threads)
    root = Path(root).resolve()
    val = validation_layout(root)
    return Layout(root, load_params(root / "params.yaml")), val, eval_steps.Queries(val)


def scorer(q: eval_steps.Queries, b):
    """Query embeddings -> mAP@10 over the validation queries, overall and per query type."""

    def score(emb) -> dict:
        m = cir_metrics(q.search(emb, b.topk), q.rows["ground_truth"], q.kinds)
        return {"mAP@10": m["mAP@10"], "per_type": {k: v["mAP@10"] for k, v in m["per_type"].items()}}
    return score


def model_scorer(q: eval_steps.Queries, b):
    """A stage-2 denoiser -> its rounded mAP@10 on the validation queries, overall and per type, composed at
    the params' sampling (with negative texts and masks), as the default run scores stage 2."""
    from compodiff.pipeline import CompoDiffPipeline

    on_queries = scorer(q, b)

    def score(model) -> dict:
        m = on_queries(eval_steps.compodiff_queries(CompoDiffPipeline(model.eval(), q.enc), q, b, True, True))
        return {"mAP@10": round(m["mAP@10"], 2), "per_type": {k: round(v, 2) for k, v in m["per_type"].items()}}
    return score


def kind_balance_runs(run: Layout, q, balances: list[float], score, models: list[str]) -> dict:
    """Stage 2 (from the run's stage 1) and the Combiner trained again for each kind balance; stage 2 scored
    with the params' sampling."""
    from claims_world import train

    from compodiff.combiner import Combiner, CombinerSpec, train_combiner
    from compodiff.objectives import kind_balance_weights
    from compodiff.training import TextTokens
    from orchestration.train_steps import _spec, load_pair_features, load_triplet_features

    enc, b = q.enc, run.params.benchmark
    pairs = load_pair_features(run, enc.embed_dim)
    base = load_triplet_features(run, enc.embed_dim)
    if base.kind is None:
        raise SystemExit(f"{run.triplet_features} has no edit kinds: rerun triplet_features first")
    tokens = TextTokens(lambda texts: enc.text_tokens(texts)[0], run.params.training.text_cache)
    stage1 = load_checkpoint(run.stage_dir("stage1") / "denoiser.safetensors")
    c, p = run.params.combiner, run.params
    text = enc.encode_text(base.instruction)
    out = {}
    for balance in balances:
        trip = replace(base, weight=kind_balance_weights(base.kind, balance))
        row = out.setdefault(f"{balance:g}", {"kind_shares": trip.kind_shares()})
        if "stage2" in models:
            model = train(run, replace(_spec(run, "stage2"), checkpoint_every=10**9), stage1, pairs, trip, tokens)
            row["stage2"] = score(eval_steps.compodiff_queries(CompoDiffPipeline(model, enc), q, b, True, True))
        if "combiner" in models:
            torch.manual_seed(p.seed)
            comb = Combiner(CombinerSpec(enc.embed_dim, c.projection_dim, c.hidden_dim, c.dropout, c.logit_scale))
            train_combiner(comb, trip.reference, trip.target, text, None, 0.0, c.steps, c.batch_size, c.lr, p.seed,
                           weight=trip.weight)
            with torch.no_grad():
                row["combiner"] = score(comb.eval()(q.reference, q.text))
        print(f"kind_balance {balance:g}: " + ", ".join(f"{m} mAP@10 {row[m]['mAP@10']:.2f}" for m in models),
              flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=".")
    ap.add_argument("--w-text", type=float, nargs="+")
    ap.add_argument("--w-image", type=float, nargs="+")
    ap.add_argument("--steps", type=int, nargs="+")
    ap.add_argument("--mix-reference", type=float, nargs="+")
    ap.add_argument("--kind-balance", type=float, nargs="+",
                    help="retrain stage 2 from the run's stage 1 with each training.stage2.kind_balance")
    ap.add_argument("--kind-balance-models", nargs="+", default=["stage2", "combiner"],
                    choices=["stage2", "combiner"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out")
    args = ap.parse_args()
    run, val, q = validation_run(args.root, args.threads)
    b = run.params.benchmark
    out = {"validation_seed": val.params.seed, "queries": len(q.kinds)}
    score = scorer(q, b)

    out["image_text_sum"] = score(sum_query(q.reference, q.text))
    out["image_only"] = score(q.reference)
    for name in ("combiner", "combiner_bidirectional"):
        path = run.stage_dir("combiner") / f"{name}.safetensors"
        if path.is_file():
            with torch.no_grad():
                out[name] = score(load_combiner(path)(q.reference, q.text))
    pipe = CompoDiffPipeline(load_checkpoint(run.stage_dir("stage2") / "denoiser.safetensors"), q.enc)
    grid = {}
    for wt in args.w_text or [b.w_text]:
        for wi in args.w_image or [b.w_image]:
            for steps in args.steps or [b.steps]:
                for mix in args.mix_reference or [b.mix_reference]:
                    emb = eval_steps.compodiff_queries(pipe, q, replace(b, mix_reference=mix), True, True, steps=steps,
                                                       w_image=wi, w_text=wt)
                    grid[f"w_text {wt:g} w_image {wi:g} steps {steps} mix_reference {mix:g}"] = score(emb)
    out["stage2"] = grid
    if args.kind_balance:
        out["kind_balance"] = kind_balance_runs(run, q, args.kind_balance, score, args.kind_balance_models)
    report(out, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
