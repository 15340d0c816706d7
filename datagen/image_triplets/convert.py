"""Records of any reader -> the project's triplet shards, counted by outcome.

Every record is read in the reader's order and grouped into parts of ``records_per_part`` records
(skipped ones included, so a part's records do not depend on what was kept). A part is one parquet
file written atomically with its manifest; a rerun keeps complete parts without decoding them, so a
killed conversion resumes at the part it was in. Images are decoded, centre-cropped and resized as
the image-text pairs are, and stored as PNG; one that already has the shard's size keeps its own bytes
(the ``*_png`` columns hold whatever PIL decodes: the same pixels, no second lossy encoding).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable
from itertools import islice
from pathlib import Path

import pyarrow as pa
from PIL import Image, UnidentifiedImageError

from compodiff.atomic import write_json
from datagen.image_text_shards import MAX_PIXELS, TooLarge, open_image, square
from datagen.image_triplets.record import ImageRef, Skip, Triplet
from datagen.shards import encode_png, is_complete, write_shard

# the columns triplet_features reads from the generated triplets, plus what public datasets add
SCHEMA = pa.schema([("id", pa.string()), ("triplet_id", pa.string()), ("instruction", pa.string()),
                    ("method", pa.string()), ("template_id", pa.int64()), ("source_keyword", pa.string()),
                    ("target_keyword", pa.string()), ("edit_kind", pa.string()), ("reference_png", pa.binary()),
                    ("target_png", pa.binary()), ("source_caption", pa.string()), ("target_caption", pa.string()),
                    ("negatives_png", pa.list_(pa.binary())), ("source", pa.string())])
EXAMPLES = 3  # record locations kept per skip reason


class _Skipped(Exception):
    def __init__(self, reason: str):
        self.reason = reason


PASSTHROUGH = ("JPEG", "PNG", "WEBP")  # formats every later step decodes as PIL decodes them here


def shard_image(data: bytes, size: int) -> bytes:
    """The image as the shard stores it: the source's own bytes when it is already an RGB ``size`` x ``size``
    JPEG / PNG / WebP (decoded once to prove it whole: the same pixels, no re-encoding), else decoded,
    centre-cropped, resized and PNG-encoded as the image-text pairs are."""
    with open_image(data) as im:
        if im.size == (size, size) and im.mode == "RGB" and im.format in PASSTHROUGH:
            im.load()
            return data
        return encode_png(square(im, size))


def _image(ref: ImageRef | None, size: int) -> bytes:
    if ref is None:
        raise _Skipped("no image")
    if isinstance(ref, Path):
        try:
            data = ref.read_bytes()
        except FileNotFoundError:
            raise _Skipped("missing image") from None
        except OSError:
            raise _Skipped("unreadable image file") from None
    else:
        data = bytes(ref)
    try:
        return shard_image(data, size)
    except TooLarge:
        raise _Skipped(f"image over {MAX_PIXELS} pixels") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise _Skipped("image does not decode") from None


def convert_record(t: Triplet, size: int, max_negatives: int, min_scores: dict | None) -> dict:
    """One record as a shard row; _Skipped with the reason when it cannot be one."""
    instruction = " ".join(t.instruction.split()) if isinstance(t.instruction, str) else ""
    if not instruction:
        raise _Skipped("no instruction")
    for name, floor in (min_scores or {}).items():
        if name not in t.scores:
            raise _Skipped(f"no {name} score")
        if t.scores[name] < floor:
            raise _Skipped(f"{name} below {floor}")
    reference, target = _image(t.reference, size), _image(t.target, size)
    negatives = []
    for ref in t.negatives[:max_negatives]:
        try:
            negatives.append(_image(ref, size))
        except _Skipped:  # a missing negative costs the negative, not the triplet
            continue
    return {"instruction": instruction, "reference_png": reference, "target_png": target,
            "source_caption": t.source_caption, "target_caption": t.target_caption, "negatives_png": negatives}


def convert(source: str, records: Iterable[Triplet | Skip], out: str | Path, image_size: int, max_negatives: int,
            records_per_part: int, min_scores: dict | None = None, max_records: int | None = None,
            identity: dict | None = None, log=print) -> dict:
    """Convert ``records`` into ``out/part-NNNNN.parquet``; returns the counts (read, kept, skipped by
    reason with examples) and writes them to ``out/manifest.json``. ``identity``: what makes the source
    (its path, settings); a part written with another identity is converted again."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    it = iter(records if max_records is None else islice(records, max_records))
    read = kept = 0
    skipped, examples = Counter(), {}
    parts = []
    while True:
        chunk = list(islice(it, records_per_part))
        if not chunk:
            break
        path = out / f"part-{len(parts):05d}.parquet"
        manifest = {"kind": "image_triplets", "source": source, "part": len(parts), "image_size": image_size,
                    "max_negatives": max_negatives, "min_scores": min_scores, "records": len(chunk),
                    "first": chunk[0].key, "last": chunk[-1].key, **(identity or {})}
        stats_file = path.with_suffix(".stats.json")
        if is_complete(path, manifest) and stats_file.is_file():
            stats = json.loads(stats_file.read_text())
        else:
            stats = _convert_part(source, chunk, path, manifest, image_size, max_negatives, min_scores)
            write_json(stats_file, stats)
        read += stats["read"]
        kept += stats["kept"]
        skipped.update(stats["skipped"])
        for reason, where in stats["examples"].items():
            examples.setdefault(reason, [])
            examples[reason] += where[:EXAMPLES - len(examples[reason])]
        parts.append(path.name)
        log(f"image_triplets[{source}]: {path.name} kept {stats['kept']}/{stats['read']}")
    for stale in out.glob("part-*.parquet"):  # parts of an earlier, longer conversion
        if stale.name not in parts:
            stale.unlink()
            stale.with_suffix(".stats.json").unlink(missing_ok=True)
    seconds = time.perf_counter() - t0
    result = {"source": source, "configured": True, "read": read, "kept": kept, "skipped": dict(skipped),
              "examples": examples, "parts": parts, "seconds": seconds,
              "triplets_per_second": read / max(seconds, 1e-9)}
    write_json(out / "manifest.json", result)
    return result


def _convert_part(source: str, chunk: list, path: Path, manifest: dict, size: int, max_negatives: int,
                  min_scores: dict | None) -> dict:
    rows: dict[str, list] = {f.name: [] for f in SCHEMA}
    skipped, examples = Counter(), {}
    for t in chunk:
        try:
            if isinstance(t, Skip):
                raise _Skipped(t.reason)
            row = convert_record(t, size, max_negatives, min_scores)
        except _Skipped as s:
            skipped[s.reason] += 1
            where = examples.setdefault(s.reason, [])
            if len(where) < EXAMPLES:
                where.append(t.where)
            continue
        rows["id"].append(f"{source}-{t.key}")
        rows["triplet_id"].append(f"{source}-{t.key}")
        for k in ("method", "source"):
            rows[k].append(source)
        for k in ("template_id", "source_keyword", "target_keyword", "edit_kind"):
            rows[k].append(None)  # no keyword template, no world truth: reversed by prefix, kind unknown
        for k, v in row.items():
            rows[k].append(v)
    write_shard(path, rows, manifest, SCHEMA)
    return {"read": len(chunk), "kept": len(rows["id"]), "skipped": dict(skipped), "examples": examples}
