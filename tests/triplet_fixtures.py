"""Small copies of the public triplet datasets, each in its published layout with its real field names."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image


def image_bytes(seed: int, size: int = 64, fmt: str = "JPEG") -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def ip2p_folder(root: Path, prompts: int = 3, seeds: int = 2, size: int = 64) -> Path:
    entries = []
    for p in range(prompts):
        name = f"{p:07d}"
        _write(root / name / "prompt.json", json.dumps({"input": f"a photo of thing {p}", "edit": f"make it {p}",
                                                        "output": f"a photo of thing {p} edited"}))
        lines = []
        for s in range(seeds):
            seed = 1000 + s
            _write(root / name / f"{seed}_0.jpg", image_bytes(10 * p + s, size))
            _write(root / name / f"{seed}_1.jpg", image_bytes(10 * p + s + 500, size))
            lines.append(json.dumps({"seed": seed, "p2p_threshold": 0.5, "cfg_scale": 7.5, "clip_sim_0": 0.3,
                                     "clip_sim_1": 0.3, "clip_sim_dir": 0.1 + 0.1 * s, "clip_sim_image": 0.8}))
        _write(root / name / "metadata.jsonl", "\n".join(lines) + "\n")
        entries.append([name, [1000 + s for s in range(seeds)]])
    _write(root / "seeds.json", json.dumps(entries))
    return root


def ip2p_parquet(root: Path, rows: int = 5, size: int = 64) -> Path:
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({
        "original_prompt": [f"a photo of {i}" for i in range(rows)],
        "original_image": pa.array([{"bytes": image_bytes(i, size), "path": None} for i in range(rows)], image),
        "edit_prompt": [f"turn it into {i}" for i in range(rows)],
        "edited_prompt": [f"a photo of {i} turned" for i in range(rows)],
        "edited_image": pa.array([{"bytes": image_bytes(i + 100, size), "path": None} for i in range(rows)], image),
    })
    root.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, root / "train-00000-of-00001.parquet")
    return root


def megapairs(root: Path, rows: int = 4, size: int = 64) -> Path:
    lines = []
    for i in range(rows):
        q, t, n = f"imgs/{i}_q.jpg", f"imgs/{i}_t.jpg", f"imgs/{i}_n.jpg"
        for k, rel in enumerate((q, t, n)):
            _write(root / rel, image_bytes(100 * i + k, size))
        text = {"q_texts": [f"show it at night {i}", f"make it night {i}"]} if i % 2 else {"q_text": f"a red one {i}"}
        lines.append(json.dumps({"q_img": q, **text, "t_img": t, "hns": [q, n]}))
    _write(root / "megapairs.jsonl", "\n".join(lines) + "\n")
    return root / "megapairs.jsonl"


def lasco(root: Path, rows: int = 4, size: int = 64) -> tuple[Path, Path]:
    coco = root / "coco"
    records = []
    for i in range(rows):
        q, t = 100 + i, 200 + i
        for cid in (q, t):
            _write(coco / "train2014" / f"COCO_train2014_{cid:012d}.jpg", image_bytes(cid, size))
        # the annotation's own prefix does not match the folders as distributed: joined by id
        records.append({"qid": 5000 + i, "query-image": [q, f"train/train2014/COCO_train2014_{q:012d}.jpg"],
                        "query-text": f"the same but with a dog {i}",
                        "target-image": [t, f"train/train2014/COCO_train2014_{t:012d}.jpg"]})
    _write(root / "lasco_train.json", json.dumps(records))
    return root, coco


SYNTH_KEY_MAP = {"reference": "src.jpg", "target": "tgt.jpg", "instruction": "json:instruction",
                 "source_caption": "json:source_caption", "target_caption": "json:target_caption"}


def synthtriplets(root: Path, shards: int = 2, per_shard: int = 3, size: int = 64) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for s in range(shards):
        with tarfile.open(root / f"{s:05d}.tar", "w") as tar:
            for i in range(per_shard):
                key = f"{s:05d}{i:04d}"
                meta = {"instruction": f"replace the cat with a dog {key}", "source_caption": "a cat",
                        "target_caption": "a dog"}
                for ext, data in (("src.jpg", image_bytes(s * 100 + i, size)),
                                  ("tgt.jpg", image_bytes(s * 100 + i + 50, size)),
                                  ("json", json.dumps(meta).encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return root


def cirr_train(root: Path, size: int = 64) -> Path:
    names = [f"train-{i}" for i in range(6)]
    _write(root / "image_splits" / "split.rc2.train.json", json.dumps({n: f"./train/0/{n}.png" for n in names}))
    for i, n in enumerate(names):
        _write(root / "train" / "0" / f"{n}.png", image_bytes(i, size, "PNG"))
    entries = [{"pairid": k, "reference": names[k], "target_hard": names[k + 1], "target_soft": {names[k + 1]: 1.0},
                "caption": f"has {k} more dogs", "img_set": {"id": k, "members": names}} for k in range(4)]
    _write(root / "captions" / "cap.rc2.train.json", json.dumps(entries))
    return root


def fashioniq_train(root: Path, size: int = 64) -> Path:
    for c, category in enumerate(("dress", "shirt", "toptee")):
        asins = [f"B{c}{i:03d}" for i in range(4)]
        for i, a in enumerate(asins):
            _write(root / "images" / f"{a}.jpg", image_bytes(1000 * c + i, size))
        _write(root / "image_splits" / f"split.{category}.train.json", json.dumps(asins))
        _write(root / "captions" / f"cap.{category}.train.json", json.dumps(
            [{"candidate": asins[i], "target": asins[i + 1], "captions": ["is darker", "has longer sleeves"]}
             for i in range(3)]))
    return root


def all_sources(root: Path, size: int = 64) -> dict[str, dict]:
    """triplet_sources entries for every format, over fixtures written under root."""
    lasco_root, coco = lasco(root / "lasco", size=size)
    return {"ip2p": {"path": str(ip2p_folder(root / "ip2p", size=size))},
            "ip2p_parquet": {"path": str(ip2p_parquet(root / "ip2p_parquet", size=size))},
            "megapairs": {"path": str(megapairs(root / "megapairs", size=size))},
            "lasco": {"path": str(lasco_root), "corpus": str(coco)},
            "synthtriplets": {"path": str(synthtriplets(root / "synth", size=size)), "key_map": SYNTH_KEY_MAP},
            "cirr": {"path": str(cirr_train(root / "cirr", size=size))},
            "fashioniq": {"path": str(fashioniq_train(root / "fashioniq", size=size))}}
