"""SynthTriplets18M: WebDataset tar shards whose per-sample member names are not documented, so a key map
in params says which member holds what: ``{reference: jpg, target: tgt.jpg, instruction: "json:edit"}``,
each value a member extension, or ``EXT:FIELD`` for a field of a JSON member. ``list_keys`` shows what
the first samples of a shard hold, to write the map."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from compodiff.config_schema import ConfigError
from datagen.image_triplets.record import Skip, Triplet
from datagen.image_triplets.sources import SourceError
from datagen.tar_samples import TarError, iter_samples

FIELDS = ("reference", "target", "instruction", "source_caption", "target_caption")
REQUIRED = ("reference", "target", "instruction")


def shards(path: str | Path) -> list[Path]:
    path = Path(path)
    found = sorted(path.glob("*.tar")) if path.is_dir() else [path]
    if not found or not found[0].is_file():
        raise SourceError(f"SynthTriplets18M: no .tar shard at {path}")
    return found


def check_key_map(key_map: dict | None) -> dict[str, tuple[str, str | None]]:
    if not key_map:
        raise ConfigError("triplet_sources.synthtriplets.key_map is required: list a shard's keys with "
                          "`compodiff triplet-keys SHARD.tar` and map reference, target and instruction")
    unknown = sorted(set(key_map) - set(FIELDS))
    missing = [f for f in REQUIRED if f not in key_map]
    if unknown or missing:
        raise ConfigError(f"triplet_sources.synthtriplets.key_map: unknown field(s) {unknown}, missing {missing}; "
                          f"fields: {FIELDS}")
    return {f: (v.split(":", 1)[0].lower(), v.split(":", 1)[1] if ":" in v else None) for f, v in key_map.items()}


def _value(sample: dict, ext: str, field: str | None):
    if ext not in sample:
        return KeyError
    data = sample[ext]
    if field is None:
        return data
    try:
        value = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return KeyError
    return value.get(field, KeyError) if isinstance(value, dict) else KeyError


def _text(value) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return value if isinstance(value, str) else None


def read(path: str | Path, key_map: dict | None) -> Iterator[Triplet | Skip]:
    """Samples of every shard in name order. A mapped member missing from a shard's first sample means the
    map is wrong: SourceError naming the shard and the keys it has. Later samples missing one are skipped."""
    mapping = check_key_map(key_map)
    for shard in shards(path):
        try:
            for n, (key, sample) in enumerate(iter_samples(shard)):
                got = {f: _value(sample, ext, field) for f, (ext, field) in mapping.items()}
                lacking = [f"{f} ({key_map[f]})" for f, v in got.items() if v is KeyError and f in REQUIRED]
                if lacking and n == 0:
                    raise SourceError(f"{shard}: the first sample {key!r} has no {', '.join(lacking)}; its keys are "
                                      f"{describe(sample)}; fix triplet_sources.synthtriplets.key_map")
                if lacking:
                    yield Skip(key, f"{shard}:{key}", "sample lacks a mapped key")
                    continue
                got = {f: (None if v is KeyError else v) for f, v in got.items()}
                yield Triplet(key, f"{shard}:{key}", got["reference"], got["target"], _text(got["instruction"]),
                              _text(got.get("source_caption")), _text(got.get("target_caption")))
        except TarError as err:
            raise SourceError(str(err)) from None


def describe(sample: dict) -> dict[str, str]:
    """Each member extension with what it holds: byte size, or a JSON member's field names."""
    out = {}
    for ext, data in sample.items():
        try:
            value = json.loads(data) if ext.endswith("json") else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            value = None
        out[ext] = f"json fields {sorted(value)}" if isinstance(value, dict) else f"{len(data)} bytes"
    return out


def list_keys(shard: str | Path, samples: int = 3) -> list[tuple[str, dict[str, str]]]:
    """(sample key, members) of the first samples of a shard."""
    out = []
    try:
        for key, sample in iter_samples(shard):
            out.append((key, describe(sample)))
            if len(out) >= samples:
                break
    except TarError as err:
        raise SourceError(str(err)) from None
    return out
