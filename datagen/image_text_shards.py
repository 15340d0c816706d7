"""Real image-text pairs (LAION-2B's role in the paper) into the project's pair shards.

The paper profiles point ``sources.image_text_pairs`` at a folder of img2dataset output, one file per
shard named like the shard: a WebDataset tar (``KEY.jpg|png|webp`` + ``KEY.txt``, optional
``KEY.json``) or a parquet file (image bytes in ``jpg`` / ``png`` / ``webp`` / ``image``, the caption in
``caption`` / ``txt``). Each pair is decoded, centre-cropped and resized to ``image_size``, and written
in the same packed parquet shard as the world's pairs, so every later step reads one format. Pairs
that cannot be used (an image that does not decode, an empty or missing caption, no image) are
skipped and counted by reason, with an example key each, in the step's result and beside the shard
(``<shard>.parquet.stats.json``); the shard is written atomically.
"""

from __future__ import annotations

import io
import json
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError

from compodiff.atomic import write_json
from compodiff.errors import InputError
from datagen.shards import encode_png, is_complete, write_shard
from datagen.tar_samples import TarError, iter_samples

SOURCE_EXTS = ("tar", "parquet")  # one source file per shard: <shard>.tar or <shard>.parquet
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
IMAGE_COLUMNS = ("jpg", "png", "webp", "image")
CAPTION_COLUMNS = ("caption", "txt")


class SourceError(InputError):
    """The source shard itself is unusable (missing, unreadable, no image or caption column)."""


def source_path(folder: str | Path, shard: str) -> Path:
    """``folder/shard.tar`` or ``folder/shard.parquet``: exactly one must exist."""
    candidates = [Path(folder) / f"{shard}.{ext}" for ext in SOURCE_EXTS]
    found = [c for c in candidates if c.is_file()]
    if len(found) != 1:
        what = "neither" if not found else "both"
        raise SourceError(f"shard {shard!r}: {what} of {Path(folder) / shard}.tar / .parquet exist"
                          + ("" if found else "; is sources.image_text_pairs the img2dataset output folder?"))
    return found[0]


UNSAFE = "unsafe member (absolute path, '..' or a link)"


def read_webdataset(path: Path):
    """(key, image bytes | None, caption | None) per sample, in the tar's order; a member with an unsafe
    name or a link comes back as (name, UNSAFE, None), to be counted and skipped."""
    try:
        for key, sample in iter_samples(path, lambda ext: ext in IMAGE_EXTS or ext == "txt", strict=False):
            if sample is None:
                yield key, UNSAFE, None
                continue
            image = next((sample[e] for e in IMAGE_EXTS if e in sample), None)
            text = sample.get("txt")
            yield key, image, None if text is None else text.decode("utf-8", errors="replace")
    except TarError as err:
        raise SourceError(str(err)) from None


def read_parquet(path: Path):
    try:
        table = pq.read_table(path)
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise SourceError(f"{path}: not a readable parquet file ({err})") from None
    names = table.column_names
    image_col = next((c for c in IMAGE_COLUMNS if c in names), None)
    caption_col = next((c for c in CAPTION_COLUMNS if c in names), None)
    if image_col is None or caption_col is None:
        raise SourceError(f"{path}: needs an image column (one of {IMAGE_COLUMNS}) and a caption column "
                          f"(one of {CAPTION_COLUMNS}); it has {names}")
    keys = table.column("key").to_pylist() if "key" in names else [str(i) for i in range(table.num_rows)]
    yield from zip(keys, table.column(image_col).to_pylist(), table.column(caption_col).to_pylist())


MAX_PIXELS = 8192 * 8192  # a source image larger than this is refused before it is decoded


class TooLarge(ValueError):
    pass


def open_image(data: bytes) -> Image.Image:
    """The image, opened lazily: TooLarge when its header says it is over MAX_PIXELS (nothing decoded yet)."""
    with warnings.catch_warnings():  # PIL's own bomb warning: the limit below is this project's
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        im = Image.open(io.BytesIO(data))
    if im.width * im.height > MAX_PIXELS:
        im.close()
        raise TooLarge(f"{im.width}x{im.height} pixels")
    return im


def square(im: Image.Image, size: int) -> np.ndarray:
    """Convert to RGB, centre-crop to a square and resize (bicubic), as CLIP preprocessing does."""
    im = im.convert("RGB")
    w, h = im.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return np.asarray(im.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC))


def square_image(data: bytes, size: int) -> np.ndarray:
    """Decode, convert to RGB, centre-crop to a square and resize: ``square`` of ``open_image``."""
    with open_image(data) as im:
        return square(im, size)


def ingest_shard(folder: str | Path, shard: str, out: str | Path, image_size: int,
                 max_pairs: int | None = None) -> dict:
    """One source shard -> one pair shard (columns of ``datagen.world.pairs.PAIR_COLUMNS``; scene,
    render seed and segmentation are null for real images). A complete shard with the same manifest
    is kept as is."""
    src = source_path(folder, shard)
    stat = src.stat()
    manifest = {"kind": "image_text_pairs", "shard": shard, "source": str(src), "source_bytes": stat.st_size,
                "source_mtime": int(stat.st_mtime), "image_size": image_size, "max_pairs": max_pairs}
    if is_complete(out, manifest):  # kept as is; report what it holds
        stats_file = Path(str(out) + ".stats.json")
        stats = (json.loads(stats_file.read_text()) if stats_file.is_file()
                 else {"count": pq.read_metadata(out).num_rows})
        return {**manifest, **stats, "skipped": True}
    t0 = time.perf_counter()
    reader = read_webdataset if src.suffix == ".tar" else read_parquet
    cols: dict[str, list] = {c: [] for c in ("id", "caption", "scene", "render_seed", "image_png", "segmap_png")}
    skipped, examples = Counter(), {}

    def skip(reason: str, key: str) -> None:
        skipped[reason] += 1
        examples.setdefault(reason, f"{src.name}:{key}")

    for key, image, text in reader(src):
        if max_pairs is not None and len(cols["id"]) >= max_pairs:
            break
        caption = " ".join(text.split()) if isinstance(text, str) else ""
        if image is UNSAFE:
            skip(UNSAFE, key)
            continue
        if image is None:
            skip("no image", key)
            continue
        if not caption:
            skip("empty or missing caption", key)
            continue
        try:
            pixels = square_image(image, image_size)
        except TooLarge:
            skip(f"image over {MAX_PIXELS} pixels", key)
            continue
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
            skip("image does not decode", key)
            continue
        cols["id"].append(f"{shard}-{key}")
        cols["caption"].append(caption)
        cols["scene"].append(None)
        cols["render_seed"].append(None)
        cols["image_png"].append(encode_png(pixels))
        cols["segmap_png"].append(None)
    if not cols["id"]:
        raise SourceError(f"{src}: no usable image-text pair (skipped: {dict(skipped)}; e.g. {examples})")
    stats = {"count": len(cols["id"]), "skipped_pairs": dict(skipped), "skipped_examples": examples,
             "seconds": time.perf_counter() - t0}
    write_shard(out, cols, manifest)
    write_json(Path(str(out) + ".stats.json"), stats)  # what was skipped, beside the shard
    return {**manifest, **stats, "skipped": False}
