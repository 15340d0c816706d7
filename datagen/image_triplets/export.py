"""The project's filtered triplets written in public layouts (InstructPix2Pix's folders, MegaPairs' JSONL):
to hand generated data to tools that read those, and as the readers' oracle (export, read back, train:
the same weights as training on the triplets directly).

Images are written losslessly as PNG, under the names each layout uses (IP2P's ``<seed>_0.jpg``):
readers decode by content, so the round trip keeps every pixel."""

from __future__ import annotations

import json
from pathlib import Path

from compodiff.atomic import atomic_dir
from datagen.shards import read_shard

COLUMNS = ["instruction", "reference", "target", "reference_png", "target_png", "sim_0", "sim_1", "sim_dir",
           "sim_image"]


def export_ip2p(pairs: str | Path, out: str | Path) -> Path:
    """``pairs`` (filtered_triplets/pairs.parquet) as ``out/seeds.json`` and one prompt folder per pair."""
    t = read_shard(pairs, COLUMNS).to_pydict()
    with atomic_dir(out) as tmp:
        seeds = []
        for n in range(len(t["instruction"])):
            name = f"{n:07d}"
            folder = tmp / name
            folder.mkdir()
            (folder / "prompt.json").write_text(json.dumps({"input": t["reference"][n], "edit": t["instruction"][n],
                                                            "output": t["target"][n]}))
            (folder / "0_0.jpg").write_bytes(t["reference_png"][n])
            (folder / "0_1.jpg").write_bytes(t["target_png"][n])
            scores = {"seed": 0, "clip_sim_0": t["sim_0"][n], "clip_sim_1": t["sim_1"][n],
                      "clip_sim_dir": t["sim_dir"][n], "clip_sim_image": t["sim_image"][n]}
            (folder / "metadata.jsonl").write_text(json.dumps(scores) + "\n")
            seeds.append([name, [0]])
        (tmp / "seeds.json").write_text(json.dumps(seeds))
    return Path(out)


def export_megapairs(pairs: str | Path, out: str | Path) -> Path:
    """``pairs`` as ``out/megapairs.jsonl`` with images under ``out/images/``; no hard negatives but the
    query itself (``hns[0]``)."""
    t = read_shard(pairs, COLUMNS).to_pydict()
    with atomic_dir(out) as tmp:
        (tmp / "images").mkdir()
        lines = []
        for n in range(len(t["instruction"])):
            q, g = f"images/{n:07d}_q.png", f"images/{n:07d}_t.png"
            (tmp / q).write_bytes(t["reference_png"][n])
            (tmp / g).write_bytes(t["target_png"][n])
            lines.append(json.dumps({"q_img": q, "q_text": t["instruction"][n], "t_img": g, "hns": [q]}))
        (tmp / "megapairs.jsonl").write_text("\n".join(lines) + "\n")
    return Path(out)
