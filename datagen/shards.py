"""Packed shard files: parquet tables, written atomically and validated when read.

Shards hold images as PNG bytes next to their captions and scene graphs, so a
shard is one file (DVC tracks a handful of files, never millions of loose images).
A shard records the manifest it was written with in the parquet metadata, and a
CRC of every data page; a rerun with the same manifest finds the shard complete and
skips it only when every page still matches its CRC, so a shard damaged inside, with
an intact footer, is written again.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError

from compodiff.atomic import atomic_path
from compodiff.errors import InputError

MANIFEST_KEY = b"compodiff.manifest"


class ShardError(InputError):
    pass


def write_shard(path: str | Path, columns: dict[str, list], manifest: dict, schema: pa.Schema | None = None) -> Path:
    """``schema`` pins column types that data alone cannot tell (a part whose keywords are all null)."""
    table = pa.table(columns, schema=schema)
    meta = dict(table.schema.metadata or {})
    meta[MANIFEST_KEY] = json.dumps(manifest, sort_keys=True, default=str).encode()
    table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", write_page_checksum=True)
    return Path(path)


def read_manifest(path: str | Path) -> dict | None:
    """The manifest a complete shard was written with, or None if absent/unreadable."""
    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return None
    raw = meta.get(MANIFEST_KEY)
    return json.loads(raw) if raw else None


def is_complete(path: str | Path, manifest: dict) -> bool:
    path = Path(path)
    return (path.is_file() and read_manifest(path) == json.loads(json.dumps(manifest, default=str))
            and pages_intact(path))


def pages_intact(path: str | Path) -> bool:
    """Every data page decodes and matches its CRC (shards written before CRCs decode only)."""
    try:
        pq.read_table(path, page_checksum_verification=True)
    except (OSError, pa.ArrowException):
        return False
    return True


def read_shard(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    path = Path(path)
    if not path.is_file():
        raise ShardError(f"shard not found: {path}")
    try:
        names = pq.read_schema(path).names
    except (OSError, pa.ArrowInvalid) as err:
        raise ShardError(f"shard {path} is corrupt or truncated ({err}); delete it and rerun its step") from None
    missing = [c for c in columns or [] if c not in names]
    if missing:
        raise ShardError(f"shard {path} lacks column(s) {missing}")
    try:
        table = pq.read_table(path, columns=columns, page_checksum_verification=True)
    except (OSError, pa.ArrowInvalid) as err:
        raise ShardError(f"shard {path} is corrupt or truncated ({err}); delete it and rerun its step") from None
    return table


def encode_png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode_png(data: bytes, where: str = "") -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB") if im.mode not in ("RGB", "L") else im)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ShardError(f"image {where} does not decode: {err}") from None
