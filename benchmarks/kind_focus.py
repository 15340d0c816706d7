"""Can stage 2 learn an edit kind when its triplets are all it sees? Capacity against competition.

Fine-tunes the run's stage 2 on the triplets of chosen edit kinds only (Eq. 3 alone), for a few hundred steps,
and reports R@1 on 100 of its own training triplets per probed kind (fit_by_edit_kind.py's probe), guided at
the benchmark's settings and conditional (w_I = w_T = 1), with the live weights (an EMA would not move in so
few steps). If a kind is learned alone but not in the whole mix, the network can represent it and the inputs
hold it; what keeps it out is the other kinds' pull:

  .venv/bin/python benchmarks/kind_focus.py --root . --focus remove --focus remove,add \\
      --out benchmarks/results/kind_focus_world.json
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fit_by_edit_kind import scores  # noqa: E402
from report import report  # noqa: E402
from validate_world import model_scorer, validation_run  # noqa: E402

from compodiff.checkpoint import load_checkpoint  # noqa: E402
from compodiff.objectives import TripletFeatures  # noqa: E402
from compodiff.pipeline import CompoDiffPipeline  # noqa: E402
from compodiff.training import TextTokens, train_denoiser  # noqa: E402
from orchestration.train_steps import _spec, load_triplet_features  # noqa: E402


def only(trip: TripletFeatures, kinds: list[str]) -> TripletFeatures:
    """The triplets of ``kinds``, drawn uniformly."""
    idx = torch.from_numpy(np.flatnonzero(np.isin(np.array(trip.kind), kinds)))
    if len(idx) == 0:
        raise SystemExit(f"no triplets of kinds {kinds}; kinds present: {sorted(set(trip.kind))}")
    pick = idx.tolist()
    return TripletFeatures(trip.reference[idx], trip.target[idx], [trip.instruction[i] for i in pick],
                           [trip.reversed_instruction[i] for i in pick], None, [trip.kind[i] for i in pick])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=".")
    ap.add_argument("--focus", action="append", required=True, help="comma-separated edit kinds to train on")
    ap.add_argument("--probe", default="add,remove,colour", help="kinds whose own triplets are probed")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--validate", action="store_true",
                    help="also score each model on the validation split: what the focus costs the other kinds")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out")
    args = ap.parse_args()
    run, _, q = validation_run(args.root, args.threads)
    b, enc = run.params.benchmark, q.enc
    trip = load_triplet_features(run, enc.embed_dim)
    if trip.kind is None:
        raise SystemExit("the triplet features carry no edit kinds")
    tokens = TextTokens(lambda texts: enc.text_tokens(texts)[0], run.params.training.text_cache)
    kinds, rng = np.array(trip.kind), np.random.default_rng(0)
    probe = {k: rng.choice(np.flatnonzero(kinds == k), 100, replace=False) for k in args.probe.split(",")}

    def fit(model) -> dict:
        pipe, out = CompoDiffPipeline(model.eval(), enc), {}
        with torch.no_grad():
            for kind, idx in probe.items():
                ref, tgt, texts = trip.reference[idx], trip.target[idx], [trip.instruction[i] for i in idx]
                guided = pipe.compose(ref, texts, w_image=b.w_image, w_text=b.w_text, steps=b.steps, seed=0,
                                      eta=b.eta, mix_reference=b.mix_reference)
                cond = pipe.compose(ref, texts, w_image=1.0, w_text=1.0, steps=b.steps, seed=0, eta=b.eta)
                out[kind] = {"guided": scores(guided, ref, tgt)["R@1"], "conditional": scores(cond, ref, tgt)["R@1"]}
        return out

    validation = model_scorer(q, b)

    start = load_checkpoint(run.stage_dir("stage2") / "denoiser.safetensors")
    spec = dataclasses.replace(_spec(run, "stage2"), checkpoint_every=10**9, mix=(0.0, 0.0, 1.0), steps=args.steps,
                               warmup_steps=min(20, args.steps // 10))
    out = {"steps": args.steps, "lr": spec.lr, "batch_size": spec.batch_size, "stage2": fit(start), "focus": {}}
    if args.validate:
        out["stage2_validation"] = validation(start)
    print(f"stage 2 as trained: {out['stage2']}", flush=True)
    for focus in args.focus:
        model = copy.deepcopy(start).train().requires_grad_(True)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as d:
            train_denoiser(model, spec, None, only(trip, focus.split(",")), tokens, Path(d))
        out["focus"][focus] = {"fit": fit(model), "train_s": round(time.perf_counter() - t0, 1)}
        if args.validate:
            out["focus"][focus]["validation"] = validation(model)
        print(f"{focus}: {out['focus'][focus]}", flush=True)
    report(out, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
