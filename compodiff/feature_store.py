"""Feature files: pre-extracted CLIP embeddings (and masks, texts) with the encoder that made them.

One ``.npz`` per shard, written atomically, no pickles: arrays as arrays, texts as unicode arrays, the
manifest (encoder id, dimension, counts) as JSON. Loading checks what a training run or an index
would otherwise find out too late: the dimension, finiteness, the encoder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from compodiff.atomic import atomic_path
from compodiff.errors import InputError


class FeatureError(InputError):
    pass


def save_features(path: str | Path, arrays: dict[str, np.ndarray], texts: dict[str, list[str]],
                  manifest: dict) -> Path:
    payload = {f"a_{k}": v for k, v in arrays.items()}
    payload.update({f"t_{k}": np.array(v, dtype=str) for k, v in texts.items()})
    payload["manifest"] = np.array(json.dumps(manifest, sort_keys=True, default=str))
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **payload)
    return Path(path)


def load_features(path: str | Path, dim: int | None = None, encoder: str | None = None,
                  embedding_keys: tuple[str, ...] = ()) -> tuple[dict[str, np.ndarray], dict[str, list[str]], dict]:
    """(arrays, texts, manifest). ``dim`` / ``encoder``: refuse features from another CLIP;
    ``embedding_keys``: arrays that must be (N, dim) and finite."""
    path = Path(path)
    if not path.is_file():
        raise FeatureError(f"feature file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            manifest = json.loads(str(z["manifest"]))
            arrays = {k[2:]: z[k] for k in z.files if k.startswith("a_")}
            texts = {k[2:]: z[k].tolist() for k in z.files if k.startswith("t_")}
    except (OSError, ValueError, KeyError) as err:
        raise FeatureError(f"feature file {path} is unreadable ({err}); delete it and rerun its step") from None
    if encoder is not None and manifest.get("encoder") != encoder:
        raise FeatureError(f"{path} was encoded with {manifest.get('encoder')!r}, this run uses {encoder!r}")
    for k in embedding_keys:
        a = arrays.get(k)
        if a is None:
            raise FeatureError(f"{path} has no {k!r} array")
        if a.ndim != 2 or (dim is not None and a.shape[1] != dim):
            raise FeatureError(f"{path}: {k!r} has shape {a.shape}, expected (N, {dim})")
        bad = np.flatnonzero(~np.isfinite(a).all(axis=1))
        if bad.size:
            raise FeatureError(f"{path}: {k!r} row {int(bad[0])} is not finite ({bad.size} such rows)")
    rows = {k: len(v) for k, v in {**arrays, **texts}.items()}
    if len(set(rows.values())) > 1:  # one row per item in every array and text list, or the file is damaged
        raise FeatureError(f"{path}: the arrays disagree on the row count {rows}; delete it and rerun its step")
    return arrays, texts, manifest
