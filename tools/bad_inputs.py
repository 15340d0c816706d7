"""Bad inputs, per loader: each case builds one bad file beside good ones, hands it to the loader a step
uses, and records how it was answered.

A loader that reads one file refuses a bad one with an InputError whose message names the file; a loader
that filters many items (an image-text shard, a seed JSONL) skips and counts the bad ones and keeps the
rest. Nothing a loader is given is changed or removed. The result (``--out``) is the bad-input part of
the reliability section of docs/results.md; ``tests/test_bad_inputs.py`` runs every case.

  .venv/bin/python tools/bad_inputs.py --out benchmarks/results/bad_inputs.json
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import pickle
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from compodiff.errors import InputError  # noqa: E402


@dataclass
class Case:
    loader: str
    name: str
    hostile: bool  # a file built to attack the reader (code in a pickle, a path out of the archive, a bomb)
    build: Callable[[Path], tuple[Path, Callable[[], object]]]  # -> (the bad file, the loader's call)
    filters: bool = False  # the loader skips and counts bad items instead of refusing the file


def _png(pixels: np.ndarray) -> bytes:
    from datagen.shards import encode_png

    return encode_png(pixels)


# --- shards --------------------------------------------------------------------------------------
def _shard(d: Path) -> Path:
    from datagen.world.pairs import write_pairs_shard
    from orchestration.params import load_params

    path = d / "s00.parquet"
    write_pairs_shard(load_params(ROOT / "profiles" / "tiny.yaml").world, 0, "s00", 12, path)
    return path


def shard_truncated(d):
    from datagen.shards import read_shard

    path = _shard(d)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path, lambda: read_shard(path)


def shard_damaged_inside(d):
    import pyarrow.parquet as pq

    from datagen.shards import read_shard

    path = _shard(d)
    col = pq.ParquetFile(path).metadata.row_group(0).column(2)
    data = bytearray(path.read_bytes())
    at = col.data_page_offset + col.total_compressed_size // 2
    data[at:at + 8] = bytes(b ^ 0xFF for b in data[at:at + 8])
    path.write_bytes(bytes(data))
    return path, lambda: read_shard(path)


def shard_not_parquet(d):
    from datagen.shards import read_shard

    path = d / "s00.parquet"
    path.write_bytes(b"PK\x03\x04 this is a zip, not a parquet file" * 10)
    return path, lambda: read_shard(path)


def shard_missing_column(d):
    from datagen.shards import read_shard

    path = _shard(d)
    return path, lambda: read_shard(path, ["id", "image_png", "no_such_column"])


def png_truncated(d):
    from datagen.shards import decode_png

    data = _png(np.zeros((32, 32, 3), np.uint8))
    path = d / "row-3.png"
    path.write_bytes(data[: len(data) // 2])
    return path, lambda: decode_png(path.read_bytes(), str(path))


def png_garbage(d):
    from datagen.shards import decode_png

    path = d / "row-4.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    return path, lambda: decode_png(path.read_bytes(), str(path))


# --- features, checkpoints, indexes ---------------------------------------------------------------
def _features(d: Path, **arrays) -> Path:
    from compodiff.feature_store import save_features

    base = {"image": np.ones((6, 8), np.float32), "mask": np.zeros((6, 4, 4), np.uint8)}
    base.update(arrays)
    return save_features(d / "features.npz", base, {"caption": ["c"] * 6}, {"encoder": "world-clip"})


def features_nan(d):
    from compodiff.feature_store import load_features

    image = np.ones((6, 8), np.float32)
    image[4, 2] = np.nan
    path = _features(d, image=image)
    return path, lambda: load_features(path, 8, "world-clip", ("image",))


def features_wrong_dimension(d):
    from compodiff.feature_store import load_features

    path = _features(d)
    return path, lambda: load_features(path, 16, "world-clip", ("image",))


def features_row_counts_disagree(d):
    from compodiff.feature_store import load_features

    path = _features(d, mask=np.zeros((2, 4, 4), np.uint8))
    return path, lambda: load_features(path, 8, "world-clip", ("image",))


def features_other_encoder(d):
    from compodiff.feature_store import load_features

    path = _features(d)
    return path, lambda: load_features(path, 8, "ViT-L-14/openai", ("image",))


def features_garbage(d):
    from compodiff.feature_store import load_features

    path = d / "features.npz"
    path.write_bytes(b"\x93NUMPY" + b"\x00" * 64)
    return path, lambda: load_features(path)


PWNED = Path(tempfile.gettempdir()) / "compodiff-bad-inputs-pwned"  # written only if a pickle's code ran


class _Code:
    def __reduce__(self):  # what an attacker's pickle does: call a function on load
        import os

        return (os.system, (f"touch {PWNED}",))


def checkpoint_pickle_with_code(d):
    import torch

    from compodiff.checkpoint import load_official_checkpoint

    path = d / "pytorch_model.bin"
    torch.save({"model.net.to_text_embeds.0.weight": _Code()}, path)
    return path, lambda: load_official_checkpoint(path)


def checkpoint_plain_pickle(d):
    from compodiff.checkpoint import load_official_checkpoint

    path = d / "model.pkl"
    path.write_bytes(pickle.dumps(_Code()))
    return path, lambda: load_official_checkpoint(path)


def checkpoint_truncated(d):
    import compodiff
    from compodiff.checkpoint import load_checkpoint, save_checkpoint

    path = save_checkpoint(compodiff.build_denoiser("tiny"), d / "denoiser.safetensors")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    return path, lambda: load_checkpoint(path)


def checkpoint_other_architecture(d):
    import torch

    import compodiff
    from compodiff.checkpoint import load_official_checkpoint

    state = {f"model.net.{k}": v for k, v in compodiff.build_denoiser("tiny").state_dict().items()}
    state["model.net.to_text_embeds.0.weight"] = torch.zeros(3, 3)
    path = d / "pytorch_model.bin"
    torch.save(state, path)
    return path, lambda: load_official_checkpoint(path, compodiff.preset("tiny"))


def index_other_dimension(d):
    from compodiff.retrieval import GalleryIndex, IndexSpec

    GalleryIndex.build(np.eye(8, dtype=np.float32), "world-clip", IndexSpec("flat")).save(d / "gallery.faiss")
    path = d / "gallery.faiss"
    return path, lambda: GalleryIndex.load(path).search(np.ones((1, 16), np.float32), 3, "world-clip")


def index_garbage(d):
    from compodiff.retrieval import GalleryIndex, IndexSpec

    GalleryIndex.build(np.eye(8, dtype=np.float32), "world-clip", IndexSpec("flat")).save(d / "gallery.faiss")
    path = d / "gallery.faiss"
    path.write_bytes(b"not a faiss index" * 8)
    return path, lambda: GalleryIndex.load(path)


# --- archives and images from outside -------------------------------------------------------------
def _tar(d: Path, add: Callable[[tarfile.TarFile], None]) -> Path:
    path = d / "00000.tar"
    with tarfile.open(path, "w") as tar:
        for i in range(3):  # good samples beside the bad member
            for ext, data in (("png", _png(np.full((16, 16, 3), 40 * i, np.uint8))), ("txt", b"a red circle")):
                info = tarfile.TarInfo(f"{i:06d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        add(tar)
    return path


def _member(name: str, kind=tarfile.REGTYPE, link: str = ""):
    def add(tar):
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, link
        data = b"x" * (0 if kind != tarfile.REGTYPE else 4)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data) if data else None)
    return add


def tar_traversal(d):
    from datagen.tar_samples import iter_samples

    path = _tar(d, _member("../../etc/cron.d/evil.txt"))
    return path, lambda: list(iter_samples(path))


def tar_absolute(d):
    from datagen.tar_samples import iter_samples

    path = _tar(d, _member("/etc/passwd.txt"))
    return path, lambda: list(iter_samples(path))


def tar_symlink(d):
    from datagen.tar_samples import iter_samples

    path = _tar(d, _member("000009.png", tarfile.SYMTYPE, "/etc/shadow"))
    return path, lambda: list(iter_samples(path))


def tar_not_a_tar(d):
    from datagen.tar_samples import iter_samples

    path = d / "00000.tar"
    path.write_bytes(b"\x1f\x8b" + b"\x00" * 100)
    return path, lambda: list(iter_samples(path))


def _source(d: Path, extra: list[tuple[str, bytes, str]]) -> tuple[Path, Callable]:
    """An image-text parquet source shard of 3 good pairs and ``extra`` (key, image, caption) rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from datagen.image_text_shards import ingest_shard

    good = [(f"{i:06d}", _png(np.full((16, 16, 3), 40 * i, np.uint8)), "a red circle") for i in range(3)]
    rows = good + extra
    folder = d / "laion"
    folder.mkdir()
    path = folder / "00000.parquet"
    pq.write_table(pa.table({"key": [r[0] for r in rows], "jpg": [r[1] for r in rows],
                             "caption": [r[2] for r in rows]}), path)
    return path, lambda: ingest_shard(folder, "00000", d / "pairs.parquet", 16)


def image_bomb(d):
    import zlib

    # a 12000 x 12000 greyscale PNG: a few kB on disk, 144 MB decoded (the project's limit refuses it)
    raw = b"".join(b"\x00" + b"\x00" * 12000 for _ in range(12000))
    ihdr = (12000).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])

    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    return _source(d, [("bomb", bomb, "a huge image")])


def image_truncated_in_source(d):
    return _source(d, [("cut", _png(np.zeros((16, 16, 3), np.uint8))[:40], "a cut image")])


# --- annotations and seeds ------------------------------------------------------------------------
def _cirr(d: Path, entries, images=("a", "b")) -> Path:
    (d / "captions").mkdir(parents=True)
    (d / "image_splits").mkdir()
    for name in images:
        (d / f"{name}.png").write_bytes(_png(np.zeros((8, 8, 3), np.uint8)))
    path = d / "captions" / "cap.rc2.val.json"
    path.write_text(entries if isinstance(entries, str) else json.dumps(entries))
    (d / "image_splits" / "split.rc2.val.json").write_text(json.dumps({"a": "./a.png", "b": "./b.png"}))
    return path


GOOD_CIRR = {"pairid": 1, "reference": "a", "target_hard": "b", "caption": "c", "img_set": {"members": ["a", "b"]}}


def cirr_not_json(d):
    from compodiff.benchmarks import cirr

    path = _cirr(d, '[{"pairid": 1, "reference": "a",')
    return path, lambda: cirr.load(d)


def cirr_missing_field(d):
    from compodiff.benchmarks import cirr

    path = _cirr(d, [GOOD_CIRR, {k: v for k, v in GOOD_CIRR.items() if k != "caption"}])
    return path, lambda: cirr.load(d)


def cirr_wrong_type(d):
    from compodiff.benchmarks import cirr

    path = _cirr(d, [GOOD_CIRR, {**GOOD_CIRR, "img_set": "a,b"}])
    return path, lambda: cirr.load(d)


def cirr_missing_image(d):
    from compodiff.benchmarks import cirr

    _cirr(d, [GOOD_CIRR], images=("a",))
    return d / "b.png", lambda: cirr.load(d)


def fashioniq_one_caption(d):
    from compodiff.benchmarks import fashioniq

    (d / "captions").mkdir()
    (d / "image_splits").mkdir()
    path = d / "captions" / "cap.dress.val.json"
    path.write_text(json.dumps([{"candidate": "x", "target": "y", "captions": ["is red"]}]))
    (d / "image_splits" / "split.dress.val.json").write_text(json.dumps(["x", "y"]))
    return path, lambda: fashioniq.load(d, "dress", check_images=False)


def circo_id_not_index(d):
    from compodiff.benchmarks import circo

    (d / "annotations").mkdir()
    (d / "COCO2017_unlabeled" / "annotations").mkdir(parents=True)
    path = d / "annotations" / "val.json"
    path.write_text(json.dumps([{"id": 7, "reference_img_id": 1, "relative_caption": "c", "shared_concept": "s",
                                 "gt_img_ids": [2], "target_img_id": 2}]))
    (d / "COCO2017_unlabeled" / "annotations" / "image_info_unlabeled2017.json").write_text(
        json.dumps({"images": [{"id": 1}, {"id": 2}]}))
    return path, lambda: circo.load(d, check_images=False)


def genecis_nan_box(d):
    from compodiff.benchmarks import genecis

    path = d / "change_attribute.json"
    item = {"image_id": 3, "instance_bbox": [1.0, float("nan"), 4.0, 4.0]}
    path.write_text(json.dumps([{"reference": item, "target": item, "gallery": [item], "condition": "red"}]))
    return path, lambda: genecis.load(path, d)


def seeds_bad_lines(d):
    from datagen.llm_triplets import read_ip2p_jsonl

    path = d / "gpt-generated-prompts.jsonl"
    good = json.dumps({"input": "a red circle", "edit": "make it blue", "output": "a blue circle"})
    path.write_text("\n".join([good, "{not json", "[1, 2]", json.dumps({"input": "x"}), good]) + "\n")
    return path, lambda: read_ip2p_jsonl(path)


def params_unknown_key(d):
    from orchestration.params import load_params

    path = d / "params.yaml"
    path.write_text((ROOT / "profiles" / "world.yaml").read_text().replace("training:\n", "training:\n  stpes: 3\n", 1))
    return path, lambda: load_params(path)


def params_out_of_range(d):
    from orchestration.params import load_params

    path = d / "params.yaml"
    text = (ROOT / "profiles" / "world.yaml").read_text()
    path.write_text(text.replace("checkpoint_every:", "checkpoint_every: 0 #", 1))
    return path, lambda: load_params(path)


CASES = [
    Case("datagen.shards.read_shard", "truncated parquet", False, shard_truncated),
    Case("datagen.shards.read_shard", "page damaged inside, footer intact", False, shard_damaged_inside),
    Case("datagen.shards.read_shard", "not a parquet file", False, shard_not_parquet),
    Case("datagen.shards.read_shard", "a column the step needs is missing", False, shard_missing_column),
    Case("datagen.shards.decode_png", "truncated PNG", False, png_truncated),
    Case("datagen.shards.decode_png", "garbage after a PNG signature", False, png_garbage),
    Case("compodiff.feature_store.load_features", "a NaN row", False, features_nan),
    Case("compodiff.feature_store.load_features", "another dimension", False, features_wrong_dimension),
    Case("compodiff.feature_store.load_features", "arrays disagree on the row count", False,
         features_row_counts_disagree),
    Case("compodiff.feature_store.load_features", "encoded by another CLIP", False, features_other_encoder),
    Case("compodiff.feature_store.load_features", "not an npz", False, features_garbage),
    Case("compodiff.checkpoint.load_official_checkpoint", "a torch pickle carrying code", True,
         checkpoint_pickle_with_code),
    Case("compodiff.checkpoint.load_official_checkpoint", "a plain pickle carrying code", True,
         checkpoint_plain_pickle),
    Case("compodiff.checkpoint.load_official_checkpoint", "another architecture's shapes", False,
         checkpoint_other_architecture),
    Case("compodiff.checkpoint.load_checkpoint", "truncated safetensors", False, checkpoint_truncated),
    Case("compodiff.retrieval.GalleryIndex", "queries of another dimension", False, index_other_dimension),
    Case("compodiff.retrieval.GalleryIndex", "not a FAISS index", False, index_garbage),
    Case("datagen.tar_samples.iter_samples", "a member with '..'", True, tar_traversal),
    Case("datagen.tar_samples.iter_samples", "an absolute member path", True, tar_absolute),
    Case("datagen.tar_samples.iter_samples", "a symbolic link", True, tar_symlink),
    Case("datagen.tar_samples.iter_samples", "not a tar", False, tar_not_a_tar),
    Case("datagen.image_text_shards.ingest_shard", "a decompression bomb among good pairs", True, image_bomb,
         filters=True),
    Case("datagen.image_text_shards.ingest_shard", "a truncated image among good pairs", False,
         image_truncated_in_source, filters=True),
    Case("compodiff.benchmarks.cirr.load", "not JSON", False, cirr_not_json),
    Case("compodiff.benchmarks.cirr.load", "an entry without its caption", False, cirr_missing_field),
    Case("compodiff.benchmarks.cirr.load", "a field of the wrong type", False, cirr_wrong_type),
    Case("compodiff.benchmarks.cirr.load", "the split names a missing image", False, cirr_missing_image),
    Case("compodiff.benchmarks.fashioniq.load", "one caption instead of two", False, fashioniq_one_caption),
    Case("compodiff.benchmarks.circo.load", "an id that is not its index", False, circo_id_not_index),
    Case("compodiff.benchmarks.genecis.load", "a NaN in an instance box", False, genecis_nan_box),
    Case("datagen.llm_triplets.read_ip2p_jsonl", "bad lines among good ones", False, seeds_bad_lines, filters=True),
    Case("orchestration.params.load_params", "an unknown key", False, params_unknown_key),
    Case("orchestration.params.load_params", "a value out of range", False, params_out_of_range),
]


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _kept(result) -> tuple[int | None, dict]:
    """(items kept, items skipped by reason) of a filtering loader's result."""
    if isinstance(result, tuple) and hasattr(result[1], "skipped"):  # read_ip2p_jsonl: (rows, SeedStats)
        return len(result[0]), dict(result[1].skipped)
    return result.get("count"), dict(result.get("skipped_pairs", {}))


def run_case(case: Case) -> dict:
    """Build the case in a fresh folder, call the loader and say how it answered."""
    with tempfile.TemporaryDirectory() as d:
        bad, call = case.build(Path(d))
        before = _digest(bad)
        PWNED.unlink(missing_ok=True)
        row = {"loader": case.loader, "case": case.name, "hostile": case.hostile, "filters": case.filters}
        try:
            result = call()
        except InputError as err:
            row.update(answer="refused", error=type(err).__name__, message=str(err)[:300],
                       names_file=bad.name in str(err))
        except Exception as err:  # noqa: BLE001 - any other exception is what the catalog exists to find
            row.update(answer="crashed", error=type(err).__name__, message=str(err)[:300], names_file=False)
        else:
            if case.filters:
                kept, skipped = _kept(result)
                row.update(answer="skipped and counted", kept=kept, skipped=skipped, names_file=True)
            else:
                row.update(answer="accepted", names_file=False)
        row["input_unchanged"] = _digest(bad) == before
        row["code_ran"] = PWNED.exists()
        return row


def campaign() -> dict:
    rows = [run_case(c) for c in CASES]
    ok = [r for r in rows if (r["answer"] == "refused" and r["names_file"]) or r["answer"] == "skipped and counted"]
    return {"run": "bad_inputs", "cases": rows, "summary": {
        "tried": len(rows), "loaders": len({r["loader"] for r in rows}), "answered_as_required": len(ok),
        "hostile_tried": sum(r["hostile"] for r in rows),
        "hostile_refused": sum(r["hostile"] and r["answer"] in ("refused", "skipped and counted") for r in rows),
        "crashed": sum(r["answer"] == "crashed" for r in rows),
        "accepted": sum(r["answer"] == "accepted" for r in rows),
        "inputs_changed": sum(not r["input_unchanged"] for r in rows),
        "code_ran": sum(r["code_ran"] for r in rows)}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out")
    args = ap.parse_args()
    result = campaign()
    for r in result["cases"]:
        print(f"{r['loader']:45s} {r['case']:40s} {r['answer']}: {r.get('error', '')} {r.get('skipped', '')}")
    print(json.dumps(result["summary"]))
    if args.out:
        from compodiff.atomic import write_json

        write_json(args.out, result)
    s = result["summary"]
    return 0 if s["answered_as_required"] == s["tried"] and not s["inputs_changed"] and not s["code_ran"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
