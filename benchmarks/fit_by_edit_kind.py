"""Does the trained stage 2 fit its own training triplets, edit kind by edit kind?

For each edit kind, a seeded sample of the triplets stage 2 trained on (data/triplet_features): the
gallery is the sample's targets and references (each reference a hard negative of its own query). Stage 2
composes each reference with its instruction at the benchmark's sampling settings, and with an empty
instruction; the Combiner answers the same queries. Two more answers separate the causes of a miss:
stage 2's plain conditional prediction (w_I = w_T = 1, no reference mix: guidance off), and one linear
map [reference, pooled instruction, 1] -> target - reference, fitted by ridge regression on every
triplet outside the samples (so the samples are held out from it), and the same map fitted per edit
kind on that kind's triplets outside its sample: whether the features carry the edit at all, and whether
a model must tell the kinds apart to use it. Reported: R@1 over that gallery, the mean cosine of the
answer to its target and to its reference, and the cosine of reference to target (how small the edit
is). A kind that stage 2 fits lands nearer its target than its reference.

  .venv/bin/python benchmarks/fit_by_edit_kind.py --root . --out benchmarks/results/fit_by_edit_kind_world.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from report import report

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compodiff.checkpoint import load_checkpoint  # noqa: E402
from compodiff.combiner import load_combiner  # noqa: E402
from compodiff.encoders import load_encoder  # noqa: E402
from compodiff.pipeline import CompoDiffPipeline  # noqa: E402
from orchestration.layout import Layout  # noqa: E402
from orchestration.params import load_params  # noqa: E402
from orchestration.train_steps import load_triplet_features  # noqa: E402

F = torch.nn.functional


def scores(answer: torch.Tensor, ref: torch.Tensor, tgt: torch.Tensor) -> dict:
    a, r, t = (F.normalize(x.float(), dim=-1) for x in (answer, ref, tgt))
    hit = (a @ torch.cat([t, r]).T).argmax(1) == torch.arange(len(a))
    return {"R@1": round(hit.float().mean().item(), 3), "cos_target": round((a * t).sum(-1).mean().item(), 3),
            "cos_reference": round((a * r).sum(-1).mean().item(), 3)}


def fit_linear_map(trip, enc, rows: np.ndarray, ridge: float, chunk: int = 2048):
    """One ridge regression over the given triplets, every kind at once as stage 2 is one model:
    [normalized reference, normalized pooled instruction, 1] -> normalized target - normalized reference."""

    def design(ref: torch.Tensor, texts: list[str]) -> torch.Tensor:
        text = torch.cat([enc.encode_text(texts[i:i + chunk]).float() for i in range(0, len(texts), chunk)])
        return torch.cat([F.normalize(ref.float(), dim=-1), F.normalize(text, dim=-1), torch.ones(len(ref), 1)], 1)

    with torch.no_grad():
        x = design(trip.reference[rows], [trip.instruction[i] for i in rows])
        y = F.normalize(trip.target[rows].float(), dim=-1) - F.normalize(trip.reference[rows].float(), dim=-1)
        w = torch.linalg.solve(x.T @ x + ridge * torch.eye(x.shape[1]), x.T @ y)
    return lambda ref, texts: F.normalize(ref.float(), dim=-1) + design(ref, texts) @ w


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=".")
    ap.add_argument("--per-kind", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--guidance", nargs="*", default=[], metavar="W_I,W_T",
                    help="more guidance weights for stage 2, each without the reference mix")
    ap.add_argument("--ridge", type=float, default=0.1, help="the linear map's ridge penalty")
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    root = Path(args.root).resolve()
    p = load_params(root / "params.yaml")
    layout = Layout(root, p)
    enc = load_encoder(p.encoder.model, p.encoder.pretrained, root=root)
    trip = load_triplet_features(layout, enc.embed_dim)
    if trip.kind is None:
        raise SystemExit("these triplets carry no edit kind: the probe needs the world profile")
    pipe = CompoDiffPipeline(load_checkpoint(layout.stage_dir("stage2") / "denoiser.safetensors"), enc)
    combiner = load_combiner(layout.stage_dir("combiner") / "combiner.safetensors")
    b = p.benchmark
    kinds, rng, result = np.array(trip.kind), np.random.default_rng(args.seed), {}
    samples = {}
    for kind in sorted(set(kinds.tolist())):
        pool = np.flatnonzero(kinds == kind)
        samples[kind] = rng.choice(pool, min(args.per_kind, len(pool)), replace=False)
    held_out = np.concatenate(list(samples.values()))
    linear = fit_linear_map(trip, enc, np.setdiff1d(np.arange(len(trip)), held_out), args.ridge)
    for kind, idx in samples.items():
        ref, tgt = trip.reference[idx], trip.target[idx]
        texts = [trip.instruction[i] for i in idx]
        row = {"n": len(idx), "cos_reference_target": round(
            (F.normalize(ref, dim=-1) * F.normalize(tgt, dim=-1)).sum(-1).mean().item(), 3)}
        with torch.no_grad():
            for name, prompts in (("stage2", texts), ("stage2_empty_instruction", [""] * len(texts))):
                answer = pipe.compose(ref, prompts, w_image=b.w_image, w_text=b.w_text, steps=b.steps,
                                      seed=args.seed, eta=b.eta, mix_reference=b.mix_reference)
                row[name] = scores(answer, ref, tgt)
            answer = pipe.compose(ref, texts, w_image=1.0, w_text=1.0, steps=b.steps, seed=args.seed, eta=b.eta,
                                  mix_reference=0.0)
            row["stage2_conditional"] = scores(answer, ref, tgt)
            for pair in args.guidance:
                w_image, w_text = (float(x) for x in pair.split(","))
                answer = pipe.compose(ref, texts, w_image=w_image, w_text=w_text, steps=b.steps, seed=args.seed,
                                      eta=b.eta, mix_reference=0.0)
                row[f"stage2 w_I {w_image:g} w_T {w_text:g}"] = scores(answer, ref, tgt)
            row["combiner"] = scores(combiner(ref, enc.encode_text(texts)), ref, tgt)
            row["linear_map"] = scores(linear(ref, texts), ref, tgt)
            own = np.setdiff1d(np.flatnonzero(kinds == kind), idx)
            if len(own) >= args.per_kind:
                row["linear_map_per_kind"] = scores(fit_linear_map(trip, enc, own, args.ridge)(ref, texts), ref, tgt)
        result[kind] = row
        print(kind, row, flush=True)
    report({"profile": p.profile, "per_kind": args.per_kind, "seed": args.seed,
            "sampling": {"w_image": b.w_image, "w_text": b.w_text, "steps": b.steps, "eta": b.eta},
            "linear_map": {"ridge": args.ridge, "fitted_on": int(len(trip) - len(held_out))},
            "kinds": result}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
