"""Can a model that reads the text tower's token states tell one edit verb from another?

CompoDiff cross-attends to the per-token states of the CLIP text tower. A word the tower never trained on
keeps an untouched embedding row, and its state is then mostly the position's: "remove the red star" and
"add the red star" look alike to the denoiser. For each edit kind's verbs (the training phrasings and the
benchmark's) this reports the cosine between the states of two instructions that differ only in the verb
(at the verb's positions, and pooled), and how many of the verbs' BPE tokens the tower's training text held.

  .venv/bin/python benchmarks/text_tower_probe.py --encoder now=local-dir:data/encoder \
      --encoder before=local-dir:/path/to/an/older/encoder --out benchmarks/results/text_tower_probe_world.json
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from report import report  # noqa: E402

from compodiff.encoders import load_encoder  # noqa: E402

F = torch.nn.functional
# One object, so the instructions differ only in their verbs; each a kind's training or benchmark wording.
VERBS = {
    "remove": ["remove", "delete", "take away", "get rid of", "leave out"],
    "add": ["add", "include", "also show"],
    "colour": ["make", "paint", "recolour"],
    "size": ["resize", "scale"],
}
OBJECT = "the red star"


def probe(enc) -> dict:
    verbs = [v for vs in VERBS.values() for v in vs]
    kind_of = {v: k for k, vs in VERBS.items() for v in vs}
    texts = [f"{v} {OBJECT}" for v in verbs]
    with torch.no_grad():
        states, real = enc.text_tokens(texts, pad_mask=True)
        pooled = F.normalize(enc.encode_text(texts), dim=-1)
        bare = F.normalize(enc.encode_text([OBJECT]), dim=-1)[0]
    n_obj = len(enc.tokenize([OBJECT])[0].nonzero()) - 2  # the object's BPE tokens, without start and end
    verb_state = []
    for i in range(len(verbs)):  # mean state over the verb's own positions (after the start token)
        n = int(real[i].sum()) - 2 - n_obj
        verb_state.append(F.normalize(states[i, 1:1 + n].mean(0), dim=-1))
    pairs = {"same kind": [], "other kinds": []}
    for (i, a), (j, b) in itertools.combinations(enumerate(verbs), 2):
        group = "same kind" if kind_of[a] == kind_of[b] else "other kinds"
        pairs[group].append(float(verb_state[i] @ verb_state[j]))
    return {"verb_state_cosine": {g: {"mean": round(sum(x) / len(x), 3), "min": round(min(x), 3),
                                     "max": round(max(x), 3)} for g, x in pairs.items()},
            "pooled_cosine_to_object_alone": {v: round(float(pooled[i] @ bare), 3) for i, v in enumerate(verbs)}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", action="append", metavar="LABEL=MODEL",
                    help="an encoder to probe (repeatable); default now=local-dir:data/encoder")
    ap.add_argument("--root", default=".")
    ap.add_argument("--out")
    args = ap.parse_args()
    out = {}
    for item in args.encoder or ["now=local-dir:data/encoder"]:
        label, _, model = item.partition("=")
        out[label] = {"model": model, **probe(load_encoder(model, root=args.root))}
    report(out, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
