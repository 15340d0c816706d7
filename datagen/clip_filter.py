"""CLIP filtering of generated pairs (paper 4.4, IP2P).

Scores, all from one CLIP with L2-normalised features:
  sim_0 = cos(img_0, txt_0), sim_1 = cos(img_1, txt_1), sim_image = cos(img_0, img_1),
  sim_dir = cos(img_1 - img_0, txt_1 - txt_0) (IP2P's directional similarity),
  sim_keyword = cos(target keyword, img_1) for keyword triplets,
  sim_instruction = cos(instruction, img_1) for LLM triplets (CompoDiff's additions).
A pair is kept when every score that applies clears its threshold; then, per caption triplet, the best
``best_k`` by sim_dir. Scoring and thresholding are separate, and every score is stored with the
pair, so a re-filter with other thresholds is a table operation, not a regeneration.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict

import numpy as np
import torch

from compodiff.encoders import Encoder, l2_normalize
from datagen.config import SCORES, ClipFilterConfig


def _unique_text(encoder: Encoder, texts: list[str], batch_size: int) -> torch.Tensor:
    """Encode each distinct text once (captions and keywords repeat across the N samples)."""
    uniq = sorted(set(texts))
    emb = l2_normalize(encoder.encode_text(uniq, batch_size=batch_size)) if uniq else torch.zeros(0, encoder.embed_dim)
    index = {t: i for i, t in enumerate(uniq)}
    return emb[torch.tensor([index[t] for t in texts], dtype=torch.long)]


@torch.no_grad()
def clip_scores(encoder: Encoder, reference_images: np.ndarray, target_images: np.ndarray,
                reference_captions: list[str], target_captions: list[str], instructions: list[str],
                methods: list[str], target_keywords: list[str | None], batch_size: int = 512,
                image_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, np.ndarray]:
    """Every score for every pair; sim_keyword / sim_instruction are NaN where they do not apply.
    ``image_embeddings``: the images' raw embeddings (``encoder.encode_images``), when already made."""
    n = len(reference_captions)
    if not (len(reference_images) == len(target_images) == len(target_captions) == len(instructions) == n):
        raise ValueError("clip_scores: images, captions and instructions must have one entry per pair")
    if image_embeddings is None:
        image_embeddings = (encoder.encode_images(reference_images, batch_size=batch_size),
                            encoder.encode_images(target_images, batch_size=batch_size))
    img0, img1 = (l2_normalize(e) for e in image_embeddings)
    txt0 = _unique_text(encoder, reference_captions, batch_size)
    txt1 = _unique_text(encoder, target_captions, batch_size)
    is_kw = np.array([m == "keyword" for m in methods], dtype=bool)
    aux_text = [(k or "") if kw else ins for kw, k, ins in zip(is_kw, target_keywords, instructions)]
    aux = _unique_text(encoder, aux_text, batch_size)
    aux_sim = (aux * img1).sum(-1).numpy()
    out = {
        "sim_0": (img0 * txt0).sum(-1).numpy(),
        "sim_1": (img1 * txt1).sum(-1).numpy(),
        "sim_image": (img0 * img1).sum(-1).numpy(),
        "sim_dir": torch.nn.functional.cosine_similarity(img1 - img0, txt1 - txt0, dim=-1, eps=1e-8).numpy(),
        "sim_keyword": np.where(is_kw, aux_sim, np.nan),
        "sim_instruction": np.where(~is_kw, aux_sim, np.nan),
    }
    checked = {**{k: out[k] for k in ("sim_0", "sim_1", "sim_image", "sim_dir")}, "sim_keyword/instruction": aux_sim}
    for name, v in checked.items():
        bad = np.flatnonzero(~np.isfinite(v))
        if bad.size:  # a NaN image embedding would otherwise pass every "NaN: not applicable" rule
            raise FloatingPointError(f"CLIP score {name} is not finite for pair {int(bad[0])}")
    return {k: v.astype(np.float32) for k, v in out.items()}


def thresholds_of(cfg: ClipFilterConfig, method: str | None = None) -> dict[str, float]:
    """The score thresholds that apply to a pair of ``method``: the shared ones, with the method's own over them."""
    shared = {k: v for k, v in asdict(cfg).items() if k in SCORES}
    own = cfg.per_method.get(method, {}) if method is not None else {}
    unknown = sorted(set(own) - set(SCORES))
    if unknown:
        raise ValueError(f"clip_filter.per_method.{method}: unknown score(s) {unknown}; scores: {list(SCORES)}")
    return {**shared, **own}


def apply_filter(scores: dict[str, np.ndarray], triplet_ids: list[str], cfg: ClipFilterConfig,
                 valid: np.ndarray | None = None, methods: list[str] | None = None) -> tuple[np.ndarray, dict]:
    """Boolean keep mask and what each rule removed.

    ``removed_by`` counts each failing pair once, at the first rule it fails in the order listed
    (IP2P's order); ``fails`` counts every rule a pair fails, so the two together show both the
    marginal and the sequential effect of each threshold. ``valid`` marks pairs that were generated
    at all (failed generations are counted apart). ``methods`` (one per pair) selects the per-method
    thresholds of ``cfg.per_method``."""
    n = len(triplet_ids)
    valid = np.ones(n, dtype=bool) if valid is None else valid.astype(bool)
    thresholds = thresholds_of(cfg)
    for m in cfg.per_method:  # a misspelt score is an error even where that method has no pair here
        thresholds_of(cfg, m)
    limit = {name: np.full(n, t, dtype=np.float64) for name, t in thresholds.items()}
    per_method = {}
    if methods is not None:
        methods_arr = np.asarray(methods)
        for m in sorted(set(methods)):
            own = thresholds_of(cfg, m)
            if own != thresholds:
                per_method[m] = own
                for name, t in own.items():
                    limit[name][methods_arr == m] = t
    passes = {}
    for name in thresholds:
        s = np.asarray(scores[name])
        passes[name] = np.where(np.isnan(s), True, s >= limit[name])  # NaN: the rule does not apply to this pair
    keep = valid.copy()
    removed_by: Counter = Counter({"generation failed": int((~valid).sum())})
    fails: Counter = Counter()
    for name in thresholds:
        fails[name] = int((valid & ~passes[name]).sum())
        newly = keep & ~passes[name]
        removed_by[name] = int(newly.sum())
        keep &= passes[name]
    # best k per caption triplet by sim_dir (IP2P kept up to 4 of 100 samples)
    by_triplet: dict[str, list[int]] = {}
    for i in np.flatnonzero(keep):
        by_triplet.setdefault(triplet_ids[i], []).append(int(i))
    dropped_k = 0
    for rows in by_triplet.values():
        if len(rows) > cfg.best_k:
            rows.sort(key=lambda i: -float(scores["sim_dir"][i]))
            for i in rows[cfg.best_k:]:
                keep[i] = False
                dropped_k += 1
    removed_by["best_k"] = dropped_k
    stats = {"pairs": n, "kept": int(keep.sum()), "keep_rate": float(keep.sum() / max(1, n)),
             "removed_by": dict(removed_by), "fails": dict(fails), "thresholds": thresholds,
             "thresholds_per_method": per_method, "best_k": cfg.best_k,
             "triplets_kept": len({triplet_ids[i] for i in np.flatnonzero(keep)})}
    return keep, stats
