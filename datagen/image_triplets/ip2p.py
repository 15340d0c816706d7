"""InstructPix2Pix: the zip release's folder layout and the hub's parquet files.

Folder layout (the release's ``clip-filtered-dataset``): ``seeds.json`` lists ``[prompt_id, [seed, ...]]``,
the seeds that passed the authors' CLIP filter; ``<prompt_id>/prompt.json`` holds ``input`` (source
caption), ``edit`` (the instruction) and ``output`` (target caption); ``<seed>_0.jpg`` is the source
image and ``<seed>_1.jpg`` the edited one; ``metadata.jsonl`` has one line per seed with its CLIP
scores (``clip_sim_0``, ``clip_sim_1``, ``clip_sim_dir``, ``clip_sim_image``).

Parquet (``timbrooks/instructpix2pix-clip-filtered``): ``original_prompt``, ``original_image``,
``edit_prompt``, ``edited_prompt``, ``edited_image``; images as the hub's ``{bytes, path}`` structs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq

from compodiff.benchmarks.common import AnnotationError, read_json
from datagen.image_triplets.record import Skip, Triplet, under
from datagen.image_triplets.sources import SourceError

SCORES = ("clip_sim_0", "clip_sim_1", "clip_sim_dir", "clip_sim_image")
PARQUET_COLUMNS = ("original_prompt", "original_image", "edit_prompt", "edited_prompt", "edited_image")


def _scores(path: Path) -> dict[int, dict[str, float]]:
    """seed -> its CLIP scores; an absent file means no scores, a bad line is an error naming it."""
    if not path.is_file():
        return {}
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out[int(row["seed"])] = {k: float(row[k]) for k in SCORES if k in row}
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise AnnotationError(f"{path} line {n}: not a metadata record with a seed ({err})") from None
    return out


def read_folder(root: str | Path) -> Iterator[Triplet | Skip]:
    root = Path(root)
    seeds_file = root / "seeds.json"
    entries = read_json(seeds_file)
    if not isinstance(entries, list):
        raise AnnotationError(f"{seeds_file}: expected a list of [prompt_id, [seeds]], got {type(entries).__name__}")
    for n, entry in enumerate(entries):
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)
                and isinstance(entry[1], list)):
            raise AnnotationError(f"{seeds_file} entry {n}: expected [prompt_id, [seeds]], "
                                  f"got {json.dumps(entry)[:120]}")
        name, seeds = entry
        folder = under(root, name, f"{seeds_file} entry {n}")
        if isinstance(folder, Skip):
            yield folder
            continue
        prompt_file = folder / "prompt.json"
        try:
            prompt = json.loads(prompt_file.read_text())
        except FileNotFoundError:
            yield Skip(name, str(prompt_file), "prompt.json missing")
            continue
        except json.JSONDecodeError:
            yield Skip(name, str(prompt_file), "prompt.json is not valid JSON")
            continue
        scores = _scores(folder / "metadata.jsonl")
        for seed in seeds:
            yield Triplet(f"{name}/{seed}", str(prompt_file), folder / f"{seed}_0.jpg", folder / f"{seed}_1.jpg",
                          prompt.get("edit"), prompt.get("input"), prompt.get("output"),
                          scores=scores.get(int(seed), {}))


def _image_bytes(value) -> bytes | None:
    if isinstance(value, dict):  # the hub's Image feature: {"bytes": ..., "path": ...}
        value = value.get("bytes")
    return value if isinstance(value, (bytes, bytearray)) and value else None


def read_parquet(path: str | Path) -> Iterator[Triplet | Skip]:
    """Every ``*.parquet`` under ``path`` (or the one file), in name order, streamed by row group."""
    path = Path(path)
    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    if not files or not files[0].is_file():
        raise SourceError(f"{path}: no parquet file")
    for f in files:
        try:
            pf = pq.ParquetFile(f)
        except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a bad file
            raise SourceError(f"{f}: not a readable parquet file ({err})") from None
        missing = [c for c in PARQUET_COLUMNS if c not in pf.schema_arrow.names]
        if missing:
            raise SourceError(f"{f}: lacks the InstructPix2Pix column(s) {missing}; it has {pf.schema_arrow.names}")
        row = 0
        for batch in pf.iter_batches(batch_size=256, columns=list(PARQUET_COLUMNS)):
            for r in batch.to_pylist():
                yield Triplet(f"{f.stem}/{row}", f"{f} row {row}", _image_bytes(r["original_image"]),
                              _image_bytes(r["edited_image"]), r["edit_prompt"], r["original_prompt"],
                              r["edited_prompt"])
                row += 1
