"""Gallery indexes with FAISS, and the rankings every evaluator reads.

Cosine similarity of L2-normalised float32 features, as every peer ranks. ``flat`` is exact inner
product (small galleries, and the reference every approximate index is measured against);
``ivfpq`` and ``hnsw`` are for large ones. A gallery is built in shards, each a FAISS index over
its slice with global ids, then merged (``merge_from``), the way a billion-image gallery is built on
many machines. The index records the encoder that made
its features, their dimension and their normalisation, and refuses queries from another encoder.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

from compodiff.atomic import atomic_path
from compodiff.errors import InputError


class IndexError_(InputError):  # noqa: N801 - not the builtin IndexError (a lookup failure)
    pass


@dataclass(frozen=True)
class IndexSpec:
    kind: str = "flat"  # flat | ivfpq | hnsw
    nlist: int = 1024  # ivfpq: coarse cells
    m: int = 64  # ivfpq: sub-quantisers (dim % m == 0)
    nbits: int = 8  # ivfpq: bits per sub-quantiser code
    nprobe: int = 32  # ivfpq: cells visited per query
    hnsw_m: int = 32  # hnsw: links per node
    ef_construction: int = 80
    ef_search: int = 128
    refine_factor: int = 0  # > 0: re-rank k * refine_factor candidates exactly (keeps the vectors)


@dataclass(frozen=True)
class IndexInfo:
    encoder: str
    dim: int
    normalized: bool
    size: int
    spec: dict


def normalize(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32).copy()
    if x.ndim != 2:
        raise IndexError_(f"features must be (N, D), got shape {x.shape}")
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if bad.size:
        raise IndexError_(f"features hold NaN or infinite values (row {int(bad[0])})")
    faiss.normalize_L2(x)
    return x


class GalleryIndex:
    def __init__(self, index: faiss.Index, info: IndexInfo, vectors: np.ndarray | None = None,
                 source: str = "the index"):
        self.index, self.info, self.vectors = index, info, vectors
        self.source = source  # where it was loaded from, for messages

    # --- building ------------------------------------------------------------------
    @staticmethod
    def build(features: np.ndarray, encoder: str, spec: IndexSpec = IndexSpec(), shards: int = 1,
              train_sample: int = 100_000, seed: int = 0) -> GalleryIndex:
        x = normalize(features)
        n, d = x.shape
        if n == 0:
            raise IndexError_("the gallery is empty: nothing to index")
        # An HNSW graph cannot be merged: it is built in one piece (shard it at query time instead).
        bounds = np.linspace(0, n, (1 if spec.kind == "hnsw" else max(1, shards)) + 1).astype(int)
        trained = _empty(spec, d)
        if not trained.is_trained:  # IVF: one coarse quantiser and codebook for every shard
            rng = np.random.default_rng(seed)
            sample = x[rng.choice(n, min(n, train_sample), replace=False)]
            trained.train(sample)
        parts = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            part = faiss.clone_index(trained) if spec.kind == "ivfpq" else _empty(spec, d)
            _add(part, x[a:b], np.arange(a, b))
            parts.append(part)
        index = merge(parts, spec)
        return GalleryIndex(index, IndexInfo(encoder, d, True, int(index.ntotal), asdict(spec)),
                            x if spec.refine_factor > 0 else None)

    # --- searching -----------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int, encoder: str) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (Q, k), ranked by (-score, id)."""
        if encoder != self.info.encoder:
            raise IndexError_(f"the index holds {self.info.encoder!r} features; a query from {encoder!r} "
                              "lives in another embedding space")
        q = normalize(queries)
        if q.shape[1] != self.info.dim:
            raise IndexError_(f"queries have dimension {q.shape[1]}, {self.source} holds {self.info.dim}")
        if k < 1 or k > self.info.size:
            raise IndexError_(f"k={k} but the gallery holds {self.info.size} items")
        _tune(self.index, self.info.spec)
        refine = self.info.spec.get("refine_factor", 0)
        if refine > 0 and self.vectors is not None:
            _, cand = self.index.search(q, min(self.info.size, k * refine))
            cand = np.where(cand < 0, cand.max(), cand)  # unfilled slots: repeat a real candidate
            exact = np.einsum("qd,qkd->qk", q, self.vectors[cand])
            top = np.argsort(-exact, axis=1, kind="stable")[:, :k]
            scores, ids = np.take_along_axis(exact, top, 1), np.take_along_axis(cand, top, 1)
        else:
            scores, ids = self.index.search(q, k)
        order = np.lexsort((ids, -scores), axis=1)  # deterministic tie-break by gallery index
        return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)

    # --- persistence ------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        with atomic_path(path, suffix=".faiss") as tmp:
            faiss.write_index(self.index, str(tmp))
        with atomic_path(path.with_suffix(".json")) as tmp:
            tmp.write_text(json.dumps(asdict(self.info), indent=2))
        if self.vectors is not None:
            with atomic_path(path.with_suffix(".vectors.npy"), suffix=".npy") as tmp:
                np.save(tmp, self.vectors)
        return path

    @staticmethod
    def load(path: str | Path) -> GalleryIndex:
        path = Path(path)
        meta = path.with_suffix(".json")
        if not path.is_file() or not meta.is_file():
            raise IndexError_(f"index {path} (and its {meta.name}) not found")
        try:
            info = IndexInfo(**json.loads(meta.read_text()))
        except (ValueError, TypeError) as err:
            raise IndexError_(f"{meta} is not an index record ({err}); rebuild it (faiss_index step)") from None
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as err:  # FAISS reports an unreadable file as a C++ exception
            raise IndexError_(f"{path} is not a readable FAISS index ({str(err).splitlines()[-1][-120:]}); "
                              "rebuild it (faiss_index step)") from None
        if index.ntotal != info.size or index.d != info.dim:
            raise IndexError_(f"{path} holds {index.ntotal} x {index.d}, its record says {info.size} x {info.dim}")
        vectors = None
        if info.spec.get("refine_factor", 0) > 0:
            vectors = np.load(path.with_suffix(".vectors.npy"), mmap_mode="r")
        return GalleryIndex(index, info, vectors, source=str(path))


def _empty(spec: IndexSpec, d: int) -> faiss.Index:
    if spec.kind == "flat":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(d))
    if spec.kind == "hnsw":
        h = faiss.IndexHNSWFlat(d, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        h.hnsw.efConstruction = spec.ef_construction
        return faiss.IndexIDMap2(h)
    if spec.kind == "ivfpq":
        if d % spec.m:
            raise IndexError_(f"ivfpq: dimension {d} is not a multiple of m={spec.m}")
        quantizer = faiss.IndexFlatIP(d)
        return faiss.IndexIVFPQ(quantizer, d, spec.nlist, spec.m, spec.nbits, faiss.METRIC_INNER_PRODUCT)
    raise IndexError_(f"unknown index kind {spec.kind!r}: flat, ivfpq or hnsw")


def _add(index: faiss.Index, x: np.ndarray, ids: np.ndarray) -> None:
    index.add_with_ids(x, ids.astype(np.int64))


def merge(parts: list[faiss.Index], spec: IndexSpec) -> faiss.Index:
    """One index from shard indexes built with the same training (their ids are global already)."""
    out = parts[0]
    for p in parts[1:]:
        out.merge_from(p, 0)
    return out


def _tune(index: faiss.Index, spec: dict) -> None:
    if spec["kind"] == "ivfpq":
        faiss.extract_index_ivf(index).nprobe = spec["nprobe"]
    elif spec["kind"] == "hnsw":
        faiss.downcast_index(index.index).hnsw.efSearch = spec["ef_search"]


def rank_all(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """Exact similarity matrix (Q, G) of normalised features: what the benchmark evaluators rank."""
    return normalize(queries) @ normalize(gallery).T


def ranking(similarity: np.ndarray) -> np.ndarray:
    """Gallery indices by (-score, index), per query: the peers' order wherever there is no exact tie."""
    n = similarity.shape[1]
    return np.lexsort((np.broadcast_to(np.arange(n), similarity.shape), -similarity), axis=1)
