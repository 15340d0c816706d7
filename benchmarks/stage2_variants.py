"""Stage-2 training settings, each trained from the run's stage 1 and scored on the validation split.

A variant names TrainSpec fields to change (``lr``, ``steps``, ``ema_decay``, ``batch_size``, ...), denoiser
fields (a new shape trains its own stage 1) or ``kind_balance`` (training.stage2.kind_balance) as
``name=field:value,field:value``; ``base`` is the params' own stage 2. Each variant is scored with its EMA
weights (the released ones) and with its last live weights, per query type, at the params' sampling:

  .venv/bin/python benchmarks/stage2_variants.py --root . base lr3=lr:6e-4 --out benchmarks/results/x.json

Settings are chosen here, on the validation split (benchmarks/validate_world.py), never on the test benchmark.
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
from compodiff.denoiser import CompoDiffDenoiser  # noqa: E402
from compodiff.objectives import kind_balance_weights  # noqa: E402
from compodiff.pipeline import CompoDiffPipeline  # noqa: E402
from compodiff.training import TextTokens, train_denoiser  # noqa: E402
from orchestration.train_steps import _spec, load_pair_features, load_triplet_features  # noqa: E402

FIT_KINDS = ("add", "colour", "remove", "background")  # two the default stage 2 fits, two it does not


def with_identity(enc) -> None:
    """Make ``enc.text_tokens`` return each state plus its token's own embedding row, layer-normed: the word
    stays visible however alike the tower's states of two words are (an experiment, not the method)."""
    states_of = enc.text_tokens

    def text_tokens(texts, pad_mask=False):
        states, real = states_of(texts, pad_mask)
        with torch.no_grad():
            rows = enc._text_tower().token_embedding(enc.tokenize(list(texts)))
            rows = torch.nn.functional.layer_norm(rows.float(), rows.shape[-1:])
        return states + rows, real

    enc.text_tokens = text_tokens


DATA_FIELDS = {"kind_balance": 0.0}  # settings of the triplets drawn, not of the TrainSpec, with their defaults


ADD_VERBS, REMOVE_VERBS = ("add", "put", "include"), ("remove", "take away", "delete")  # the LLM's own verbs


def inverted(trip):
    """Each one-clause addition also as a removal and each removal as an addition (reference and target
    swapped, the instruction rewritten in the training triplets' own verbs): every object is seen both
    ways, side by side (an experiment, docs/experiments/kind_competition.md; not the method)."""
    import re

    rows, texts, kinds = [], [], []
    for i, (text, kind) in enumerate(zip(trip.instruction, trip.kind)):
        if " and " in text:
            continue
        add = re.fullmatch(rf"(?:{'|'.join(ADD_VERBS)}) an? (.+?)(?: in the picture)?", text)
        rem = re.fullmatch(rf"(?:{'|'.join(REMOVE_VERBS)}) the (.+)", text)
        if kind == "add" and add:
            rows.append(i)
            texts.append(f"{REMOVE_VERBS[i % 3]} the {add.group(1)}")
            kinds.append("remove")
        elif kind == "remove" and rem:
            obj = rem.group(1)
            rows.append(i)
            texts.append(f"{ADD_VERBS[i % 3]} {'an' if obj[0] in 'aeiou' else 'a'} {obj}")
            kinds.append("add")
    idx = torch.tensor(rows, dtype=torch.long)
    return dataclasses.replace(
        trip, reference=torch.cat([trip.reference, trip.target[idx]]),
        target=torch.cat([trip.target, trip.reference[idx]]), instruction=[*trip.instruction, *texts],
        reversed_instruction=[*trip.reversed_instruction, *[trip.reversed_instruction[i] for i in rows]],
        weight=None, kind=[*trip.kind, *kinds],
        source=None if trip.source is None else [*trip.source, *[trip.source[i] for i in rows]])


def parse_variant(text: str, spec, config) -> tuple[str, dict, dict]:
    """``name=field:value,...`` -> (name, TrainSpec and data overrides, DenoiserConfig overrides), each value
    cast to its field's type."""
    name, _, body = text.partition("=")
    train_fields = {f.name for f in dataclasses.fields(spec)} | set(DATA_FIELDS)
    net_fields = {f.name for f in dataclasses.fields(config)} - {"embed_dim", "text_dim", "text2_dim", "mask_size"}
    train, net = {}, {}
    for item in filter(None, body.split(",")):
        key, _, value = item.partition(":")
        if key not in train_fields | net_fields:
            raise SystemExit(f"variant {name!r}: {key!r} is neither a TrainSpec nor a denoiser field "
                             f"({sorted(train_fields | net_fields)})")
        target, obj = (train, spec) if key in train_fields else (net, config)
        current = DATA_FIELDS[key] if key in DATA_FIELDS else getattr(obj, key)
        target[key] = (tuple(float(v) for v in value.split("/")) if isinstance(current, tuple)
                       else type(current)(float(value)) if isinstance(current, (int, float)) else value)
    return name, train, net


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=".")
    ap.add_argument("variants", nargs="+", help="name=field:value,... (mix as 0.3/0.3/0.4)")
    ap.add_argument("--token-identity", action="store_true",
                    help="add each token's own (layer-normed) embedding row to its state, in training and at the "
                         "queries: does stage 2 learn an edit once its verb is visible in the token states?")
    ap.add_argument("--invert", action="store_true",
                    help="add each one-clause addition reversed as a removal and each removal as an addition")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out")
    args = ap.parse_args()
    run, val, q = validation_run(args.root, args.threads)
    b = run.params.benchmark
    enc = q.enc
    pairs = load_pair_features(run, enc.embed_dim)
    trip = load_triplet_features(run, enc.embed_dim)
    if args.token_identity:
        with_identity(enc)
    own = trip  # the probe asks about the run's own triplets, whatever a variant adds
    if args.invert:
        trip = inverted(own)
        print(f"inverted: {len(trip) - len(own)} triplets added", flush=True)
    tokens = TextTokens(lambda texts: enc.text_tokens(texts)[0], run.params.training.text_cache)
    base = dataclasses.replace(_spec(run, "stage2"), checkpoint_every=10**9)
    stage1 = load_checkpoint(run.stage_dir("stage1") / "denoiser.safetensors")

    score = model_scorer(q, b)

    kinds, rng = np.array(own.kind), np.random.default_rng(0)
    probe = {k: rng.choice(np.flatnonzero(kinds == k), 100, replace=False)
             for k in FIT_KINDS if (kinds == k).sum() >= 100}

    def fit(model) -> dict:
        """R@1 on 100 of its own training triplets per kind (fit_by_edit_kind.py's probe)."""
        pipe = CompoDiffPipeline(model.eval(), enc)
        out = {}
        with torch.no_grad():
            for kind, idx in probe.items():
                ref, tgt = own.reference[idx], own.target[idx]
                answer = pipe.compose(ref, [own.instruction[i] for i in idx], w_image=b.w_image, w_text=b.w_text,
                                      steps=b.steps, seed=0, eta=b.eta, mix_reference=b.mix_reference)
                out[kind] = scores(answer, ref, tgt)["R@1"]
        return out

    out = {"validation_seed": val.params.seed, "queries": len(q.kinds), "variants": {}}
    for text in args.variants:
        name, overrides, net = parse_variant(text, base, stage1.config)
        data = {k: overrides.pop(k) for k in DATA_FIELDS if k in overrides}
        spec = dataclasses.replace(base, **overrides)
        drawn = (dataclasses.replace(trip, weight=kind_balance_weights(trip.kind, data["kind_balance"]))
                 if "kind_balance" in data else trip)
        overrides = {**overrides, **data}
        t0 = time.perf_counter()
        if net:  # another network shape: its own stage 1 first, with the params' stage-1 settings
            torch.manual_seed(run.params.seed)
            model = CompoDiffDenoiser(dataclasses.replace(stage1.config, **net)).train()
            with tempfile.TemporaryDirectory() as d:
                first = train_denoiser(model, dataclasses.replace(_spec(run, "stage1"), checkpoint_every=10**9),
                                       pairs, trip, tokens, Path(d))
            model = copy.deepcopy(first["ema"].model)  # stage 2 starts from stage 1's EMA, as the pipeline's
        else:
            model = copy.deepcopy(stage1)
        model.train().requires_grad_(True)
        with tempfile.TemporaryDirectory() as d:
            state = train_denoiser(model, spec, pairs, drawn, tokens, Path(d))
        row = {"overrides": {**overrides, **net}, "train_s": round(time.perf_counter() - t0, 1),
               "ema": score(state["ema"].model), "live": score(model), "fit_ema": fit(state["ema"].model)}
        out["variants"][name] = row
        print(f"{name}: ema {row['ema']['mAP@10']:.2f} {row['ema']['per_type']} | live {row['live']['mAP@10']:.2f}"
              f" | fit {row['fit_ema']} ({row['train_s']:.0f}s)", flush=True)
    report(out, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
