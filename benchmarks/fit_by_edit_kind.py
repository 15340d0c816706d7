"""Does the trained stage 2 fit its own training triplets, edit kind by edit kind?

For each edit kind, a seeded sample of the triplets stage 2 trained on (data/triplet_features): the
gallery is the sample's targets and references (each reference a hard negative of its own query). Stage 2
composes each reference with its instruction at the benchmark's sampling settings, and with an empty
instruction; the Combiner answers the same queries. Reported: R@1 over that gallery, the mean cosine of
the answer to its target and to its reference, and the cosine of reference to target (how small the
edit is). A kind that stage 2 fits lands nearer its target than its reference.

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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=".")
    ap.add_argument("--per-kind", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
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
    for kind in sorted(set(kinds.tolist())):
        pool = np.flatnonzero(kinds == kind)
        idx = rng.choice(pool, min(args.per_kind, len(pool)), replace=False)
        ref, tgt = trip.reference[idx], trip.target[idx]
        texts = [trip.instruction[i] for i in idx]
        row = {"n": len(idx), "cos_reference_target": round(
            (F.normalize(ref, dim=-1) * F.normalize(tgt, dim=-1)).sum(-1).mean().item(), 3)}
        with torch.no_grad():
            for name, prompts in (("stage2", texts), ("stage2_empty_instruction", [""] * len(texts))):
                answer = pipe.compose(ref, prompts, w_image=b.w_image, w_text=b.w_text, steps=b.steps,
                                      seed=args.seed, eta=b.eta, mix_reference=b.mix_reference)
                row[name] = scores(answer, ref, tgt)
            row["combiner"] = scores(combiner(ref, enc.encode_text(texts)), ref, tgt)
        result[kind] = row
        print(kind, row, flush=True)
    report({"profile": p.profile, "per_kind": args.per_kind, "seed": args.seed,
            "sampling": {"w_image": b.w_image, "w_text": b.w_text, "steps": b.steps, "eta": b.eta},
            "kinds": result}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
