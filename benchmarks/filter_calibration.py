"""The CLIP filter's rules against the world's ground truth: precision and recall per method and per edit
kind over a grid of the two rules that decide most (sim_image, and the method's own keyword or
instruction rule), the other rules at their params values. Reads the scores every pair keeps
(data/filtered_triplets/scores.parquet), so no pair is scored twice.

  .venv/bin/python benchmarks/filter_calibration.py --root . --out benchmarks/results/filter_calibration_world.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from report import report

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datagen.clip_filter import thresholds_of  # noqa: E402
from orchestration.params import load_params  # noqa: E402

SIM_IMAGE = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9)
AUX = (-0.5, 0.0, 0.2, 0.4, 0.55)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=".")
    ap.add_argument("--out")
    args = ap.parse_args()
    root = Path(args.root).resolve()
    params = load_params(root / "params.yaml")
    t = pq.read_table(root / params.data_dir / "filtered_triplets" / "scores.parquet").to_pydict()
    if all(v is None for v in t["world_consistent"]):
        raise SystemExit("no world ground truth in these scores: calibration needs the world profile")
    method, kind = np.array(t["method"]), np.array(t["edit_kind"])
    truth = np.array([bool(v) for v in t["world_consistent"]])
    s = {k: np.array(t[k], dtype=float) for k in ("sim_image", "sim_0", "sim_1", "sim_dir", "sim_keyword",
                                                  "sim_instruction")}
    valid = np.isfinite(s["sim_image"])
    out: dict = {"pairs": int(valid.sum())}
    for m in sorted(set(method.tolist())):
        own = thresholds_of(params.clip_filter, m)
        aux = "sim_keyword" if m == "keyword" else "sim_instruction"
        sel = valid & (method == m)
        base = sel & (s["sim_0"] >= own["sim_0"]) & (s["sim_1"] >= own["sim_1"]) & (s["sim_dir"] >= own["sim_dir"])
        good = sel & truth
        grid = []
        for si in SIM_IMAGE:
            for ax in AUX:
                keep = base & (s["sim_image"] >= si) & (s[aux] >= ax)
                per_kind = {k: {"kept": int((keep & (kind == k)).sum()),
                                "recall": float((keep & good & (kind == k)).sum() / max(1, (good & (kind == k)).sum()))}
                            for k in sorted(set(kind[sel].tolist()))}
                grid.append({"sim_image": si, aux: ax, "kept": int(keep.sum()),
                             "precision": float(truth[keep].mean()) if keep.any() else None,
                             "recall": float((keep & good).sum() / max(1, good.sum())), "per_kind": per_kind})
        out[m] = {"pairs": int(sel.sum()), "consistent_before_filter": float(truth[sel].mean()),
                  "thresholds_in_params": own, "grid": grid}
    report(out, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
