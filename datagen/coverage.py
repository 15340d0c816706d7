"""Edit-kind coverage of the synthetic triplets: how many of each kind survive every stage.

SynthTriplets' point is diversity; a filter or a generator that removes one kind wholesale leaves the
model unable to follow that kind of instruction. The kinds come from the world's scene graphs
(``datagen.world.truth.edit_kind``); a profile without that truth has no coverage to count.
"""

from __future__ import annotations

from collections import Counter

import numpy as np


def kind_counts(kinds: list[str]) -> dict:
    """Counts and shares of each kind among ``kinds`` (one per triplet or pair)."""
    counts = Counter(kinds)
    total = sum(counts.values())
    return {"total": total, "counts": dict(sorted(counts.items())),
            "shares": {k: v / total for k, v in sorted(counts.items())} if total else {}}


def under_covered(stage: dict, required: tuple[str, ...], min_share: float) -> list[str]:
    """Each required kind below ``min_share`` of the stage, worded with its count and share."""
    out = []
    for k in required:
        n = stage["counts"].get(k, 0)
        share = n / stage["total"] if stage["total"] else 0.0
        if share < min_share:
            out.append(f"{k}: {n} of {stage['total']} ({share:.1%} < {min_share:.0%})")
    return out


def filter_by_kind(kinds: np.ndarray, consistent: np.ndarray, keep: np.ndarray, valid: np.ndarray) -> dict:
    """The CLIP filter's precision (consistent among kept) and recall (kept among consistent) per kind."""
    out = {}
    for k in sorted(set(kinds.tolist())):
        sel = (kinds == k) & valid
        good = sel & consistent
        out[k] = {"pairs": int(sel.sum()), "kept": int((sel & keep).sum()),
                  "precision": float(consistent[sel & keep].mean()) if (sel & keep).any() else None,
                  "recall": float((good & keep).sum() / good.sum()) if good.any() else None}
    return out
