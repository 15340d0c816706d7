"""Keyword-based caption triplets (paper 4.1).

Object terms are the nouns spaCy tags in the caption pool, frequency-filtered.
Each term's replacements are the other terms whose CLIP text similarity lies in
the window (paper: [0.5, 0.7]), found with one FAISS range search over all
terms. For a caption, one object term is replaced and the instruction is one of
the 48 templates of Table 2; the reversed triplet (target -> reference, source
and target swapped in the same template) is recorded too.

Bad input is skipped and counted by reason, never a crash mid-shard.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import faiss
import numpy as np

from datagen.instructions import fill_template, keyword_templates

_ENGLISH = re.compile(r"^[A-Za-z0-9 ,.'\-!?:;()&/\"]+$")


@dataclass
class KeywordStats:
    captions: int = 0
    triplets: int = 0
    skipped: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict:
        return {"captions": self.captions, "triplets": self.triplets, "skipped": dict(self.skipped)}


def object_terms(docs: Iterable, min_count: int) -> Counter:
    """Nouns (``token.pos_ == "NOUN"``, lower-cased) seen at least ``min_count`` times."""
    counts = Counter(t.lower_ for doc in docs for t in doc if t.pos_ == "NOUN" and t.is_alpha)
    return Counter({k: v for k, v in counts.items() if v >= min_count})


def similarity_window(embeddings: np.ndarray, low: float, high: float) -> list[list[tuple[int, float]]]:
    """For each row, the other rows whose cosine similarity is in [low, high] (FAISS range search)."""
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    faiss.normalize_L2(x)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    # range_search keeps sim > radius; nudge it so a similarity of exactly `low` is kept
    lims, sims, ids = index.range_search(x, float(np.nextafter(np.float32(low), np.float32(-1))))
    out = []
    for i in range(len(x)):
        s, j = sims[lims[i]:lims[i + 1]], ids[lims[i]:lims[i + 1]]
        keep = (j != i) & (s <= high)
        out.append(sorted(zip(j[keep].tolist(), s[keep].tolist()), key=lambda p: (-p[1], p[0])))
    return out


def build_neighbours(terms: list[str], encode_text: Callable[[list[str]], np.ndarray], low: float,
                     high: float) -> dict[str, list[tuple[str, float]]]:
    if not terms:
        return {}
    emb = np.asarray(encode_text(terms), dtype=np.float32)
    return {terms[i]: [(terms[j], s) for j, s in row] for i, row in enumerate(similarity_window(emb, low, high))}


def keyword_triplets(ids: list[str], captions: list[str], nlp, neighbours: dict[str, list[tuple[str, float]]],
                     seed: int, validate: Callable[[str], bool] | None = None,
                     both_directions: bool = True, n_process: int = 1) -> tuple[dict[str, list], KeywordStats]:
    """Rows of caption triplets with provenance, and the counted skips. ``n_process`` > 1 tags
    captions in that many spaCy worker processes."""
    rng = np.random.default_rng(seed)
    templates = keyword_templates()
    rows: dict[str, list] = {k: [] for k in ("id", "source_id", "reference", "instruction", "target",
                                             "source_keyword", "target_keyword", "similarity", "template_id",
                                             "method", "direction", "seed")}
    stats = KeywordStats()
    texts = []
    for cid, text in zip(ids, captions):
        stats.captions += 1
        if not isinstance(text, str) or not text.strip():
            stats.skipped["empty caption"] += 1
        elif not _ENGLISH.match(text):
            stats.skipped["non-English caption"] += 1
        else:
            texts.append((cid, text))
    docs = nlp.pipe([t for _, t in texts], batch_size=1000, n_process=n_process)
    for (cid, text), doc in zip(texts, docs):
        nouns = [t for t in doc if t.pos_ == "NOUN" and t.is_alpha]
        if not nouns:
            stats.skipped["no noun"] += 1
            continue
        usable = [t for t in nouns if neighbours.get(t.lower_)]
        if not usable:
            stats.skipped["no keyword in the similarity window"] += 1
            continue
        # a random object term and a random replacement from its window; where a validator is given, the
        # first renderable (term, replacement) in that random order (a swap of a shape for a background
        # word renders nothing, as a nonsense prompt does not)
        choice = None
        for t in rng.permutation(len(usable)):
            token = usable[int(t)]
            cands = neighbours[token.lower_]
            for c in rng.permutation(len(cands)):
                new, sim = cands[int(c)]
                target = text[:token.idx] + new + text[token.idx + len(token.text):]
                if validate is None or validate(target):
                    choice = token, new, sim, target
                    break
            if choice is not None:
                break
        if choice is None:
            stats.skipped["target caption not renderable"] += 1
            continue
        token, new, sim, target = choice
        k = int(rng.integers(len(templates)))
        src = token.lower_
        directions = [("forward", text, target, src, new)]
        if both_directions:
            directions.append(("reverse", target, text, new, src))
        for direction, ref, tgt, a, b in directions:
            rows["id"].append(f"{cid}:kw:{direction[0]}")
            rows["source_id"].append(cid)
            rows["reference"].append(ref)
            rows["instruction"].append(fill_template(templates[k], a, b))
            rows["target"].append(tgt)
            rows["source_keyword"].append(a)
            rows["target_keyword"].append(b)
            rows["similarity"].append(float(sim))
            rows["template_id"].append(k)
            rows["method"].append("keyword")
            rows["direction"].append(direction)
            rows["seed"].append(seed)
            stats.triplets += 1
    return rows, stats
