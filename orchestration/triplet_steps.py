"""The caption-triplet steps (paper 4.1-4.2): caption_pool, keyword_triplets, llm_adapter,
llm_triplets, caption_triplets. Plain functions called by the Dagster assets and the CLI."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np
import spacy
import torch

from compodiff.atomic import atomic_dir, write_json
from compodiff.config_schema import ConfigError
from compodiff.encoders import load_encoder
from datagen import llm_triplets as llm
from datagen.keyword_triplets import build_neighbours, keyword_triplets, object_terms
from datagen.llm_triplets import normalise
from datagen.shards import read_manifest, read_shard, write_shard
from datagen.world import edits, truth
from datagen.world.captions import CaptionParseError, parse_caption
from datagen.world.nlp import build_world_nlp
from orchestration.cores import use_cores
from orchestration.layout import Layout
from orchestration.steps import Log, Metrics, check_shard


def load_nlp(name: str):
    """"world" builds the lexicon pipeline; anything else goes to spacy.load (en_core_web_sm, a path)."""
    if name == "world":
        return build_world_nlp()
    try:
        return spacy.load(name)
    except OSError as err:
        raise ConfigError(f"spaCy pipeline {name!r} is not installed or not a path: {err}") from None


def _require(paths: list[Path], step: str) -> None:
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"{step} needs its upstream outputs first; missing: {missing}")


def caption_pool(layout: Layout, log: Log = print) -> dict:
    p = layout.params
    shards = [layout.world_pairs(s) for s in p.world.shards]
    _require(shards, "caption_pool")
    ids, captions, shard_of, scenes = [], [], [], []
    for s, path in zip(p.world.shards, shards):
        t = read_shard(path, ["id", "caption", "scene"])
        ids += t.column("id").to_pylist()
        captions += t.column("caption").to_pylist()
        scenes += t.column("scene").to_pylist()
        shard_of += [s] * t.num_rows
    t0 = time.perf_counter()
    nlp = load_nlp(p.caption_triplets.keyword.spacy)
    terms = object_terms(nlp.pipe(captions, batch_size=2000), p.caption_triplets.keyword.min_count)
    with atomic_dir(layout.caption_pool) as tmp:
        write_shard(tmp / "captions.parquet", {"id": ids, "caption": captions, "shard": shard_of, "scene": scenes},
                    {"kind": "caption_pool", "count": len(ids)})
        write_json(tmp / "terms.json", dict(terms.most_common()))
    log(f"caption_pool: {len(ids)} captions, {len(terms)} object terms ({time.perf_counter() - t0:.1f}s)")
    return {"captions": len(ids), "object_terms": len(terms)}


def _pool(layout: Layout):
    _require([layout.caption_pool / "captions.parquet"], "this step")
    t = read_shard(layout.caption_pool / "captions.parquet", ["id", "caption", "shard"])
    terms = json.loads((layout.caption_pool / "terms.json").read_text())
    return t.column("id").to_pylist(), t.column("caption").to_pylist(), t.column("shard").to_pylist(), terms


def _world_renderable(caption: str) -> bool:
    try:
        parse_caption(caption)
        return True
    except CaptionParseError:
        return False


def keyword_triplets_shard(layout: Layout, shard: str, log: Log = print) -> dict:
    check_shard(layout, shard)
    p = layout.params
    k = p.caption_triplets.keyword
    _require([layout.encoder_dir], "keyword_triplets")
    ids, captions, shards, terms = _pool(layout)
    mine = [(i, c) for i, c, s in zip(ids, captions, shards) if s == shard]
    enc = load_encoder(p.encoder.model, p.encoder.pretrained, root=layout.root)
    t0 = time.perf_counter()
    neighbours = build_neighbours(sorted(terms), lambda ts: enc.encode_text(ts).numpy(), *k.window)
    validate = _world_renderable if k.validate_with_world else None
    rows, stats = keyword_triplets([i for i, _ in mine], [c for _, c in mine], load_nlp(k.spacy), neighbours,
                                   seed=p.seed + p.world.shards.index(shard), validate=validate,
                                   both_directions=k.both_directions)
    seconds = time.perf_counter() - t0
    manifest = {"kind": "keyword_triplets", "shard": shard, **stats.to_dict(), "seconds": seconds,
                "terms_with_candidates": sum(bool(v) for v in neighbours.values()), "window": list(k.window)}
    write_shard(layout.keyword_triplets(shard), rows, manifest)
    log(f"keyword_triplets[{shard}]: {stats.triplets} triplets from {stats.captions} captions "
        f"({len(mine) / max(seconds, 1e-9):.0f} captions/s); skipped {dict(stats.skipped)}")
    return manifest


def _world_seed_edits(captions: list[str], count: int, seed: int, p_combined: float) -> list[tuple[str, str, str]]:
    rng = np.random.default_rng([seed, 4242])
    rows = []
    for c in captions:
        if len(rows) >= count:
            break
        spec = parse_caption(c)
        steps = edits.sample_edits(spec, rng, p_combined)
        if steps:
            rows.append((c, edits.instructions(spec, steps, rng),
                         edits.caption_of(edits.apply_edits(spec, steps), edits.phrasing_of(c))))
    return rows


def _pretraining_documents(layout: Layout, rows, per_document: int) -> list[str]:
    """World captions grouped as documents: each holds ``per_document`` captions of one scene in
    different phrasings (as COCO holds five per image), the pool's caption first."""
    from datagen.world.captions import caption
    from datagen.world.scene import Scene

    t = read_shard(layout.caption_pool / "captions.parquet", ["caption", "scene"])
    captions, scenes = t.column("caption").to_pylist(), t.column("scene").to_pylist()
    rng = np.random.default_rng([layout.params.seed, 31])
    docs = []
    for i in rows:
        scene = Scene.from_json(scenes[i])
        docs.append("\n".join([captions[i]] + [caption(scene, rng) for _ in range(per_document - 1)]))
    return docs


def llm_adapter(layout: Layout, log: Log = print, on_metrics: Metrics | None = None) -> dict:
    """Fine-tune the causal LM with LoRA on the seed triplets; save base, adapter and tokenizer.
    ``on_metrics(step, metrics)``: the loss curves, the pre-training's then LoRA's (steps counted on)."""
    p = layout.params
    cfg = p.caption_triplets.llm
    use_cores(cfg.threads)
    ids, captions, _, _ = _pool(layout)
    order = np.random.default_rng([p.seed, 17]).permutation(len(captions))
    if cfg.seed_triplets:
        seeds_raw, seed_stats = llm.read_ip2p_jsonl(cfg.seed_triplets)
        seeds = [(r["caption"], r["instruction"], r["output"]) for r in seeds_raw]
        skipped = dict(seed_stats.skipped)
    else:
        seeds = _world_seed_edits([captions[i] for i in order], cfg.seed_count, p.seed, cfg.seed_combined)
        skipped = {}
    if not seeds:
        raise ValueError("no seed triplets to fine-tune on")
    def report(step: int, key: str, loss: float, what: str) -> None:
        log(f"llm_adapter: {what} loss {loss:.3f}")
        if on_metrics:
            on_metrics(step, {key: loss})

    t0 = time.perf_counter()
    metrics: dict = {"seed_triplets": len(seeds), "seed_skipped": skipped}
    offset = 0  # LoRA's curve goes on from the pre-training's last step
    with atomic_dir(layout.llm_dir) as tmp:
        if cfg.base_model is None:
            if cfg.lm is None:
                raise ConfigError("caption_triplets.llm: base_model is null, so lm (the world's OPT) must be set")
            corpus = _pretraining_documents(layout, order[:cfg.lm.pretrain_captions], cfg.lm.captions_per_document)
            tok = llm.train_tokenizer(corpus + [s[1] for s in seeds] + [llm.SEP_EDIT, llm.SEP_OUT, llm.STOP],
                                      cfg.lm.vocab_size, tmp / "tokenizer", cfg.lm.tokenizer)
            # the initial weights from the params' seed, not from whatever this process drew before (an
            # in-process Dagster run executes other steps first in the same process)
            torch.manual_seed(p.seed)
            base = llm.build_world_lm(tok, cfg.lm.hidden, cfg.lm.layers, cfg.lm.heads, cfg.lm.ffn,
                                      cfg.lm.max_positions)
            metrics["pretrain_loss"] = llm.train_causal_lm(
                base, tok, corpus, None, cfg.lm.steps, cfg.lm.batch_size, cfg.lm.lr, p.seed,
                max_len=cfg.lm.max_positions,
                log=lambda s, v: report(s, "pretrain.loss", v, f"pre-training step {s + 1}/{cfg.lm.steps}"))
            offset = cfg.lm.steps
            base.save_pretrained(str(tmp / "base"))
            base_path, tok_path = tmp / "base", tmp / "tokenizer"
            new_tokens = llm.tokens_absent_from(tok, corpus) if cfg.lora.train_new_tokens else []
            metrics["new_tokens"] = tok.convert_ids_to_tokens(new_tokens)
        else:
            base_path, tok_path, new_tokens = cfg.base_model, cfg.base_model, []
        model, tok = llm.load_lm(base_path, None, tok_path, local_files_only=Path(str(base_path)).exists())
        if cfg.lora.train_embeddings:  # every row, the new ones included
            new_tokens = sorted(set(range(len(tok))) - set(tok.all_special_ids))
        tok.padding_side = "right"
        torch.manual_seed(p.seed)  # LoRA's A matrices too
        model = llm.add_lora(model, cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, list(cfg.lora.target_modules),
                             new_tokens)
        completions = llm.seed_completions(seeds, cfg.lora.instruction_dropout, p.seed)
        metrics["lora_loss"] = llm.train_causal_lm(
            model, tok, [llm.prompt_text(s[0]) for s in seeds], completions, cfg.lora.steps, cfg.lora.batch_size,
            cfg.lora.lr, p.seed,
            log=lambda s, v: report(offset + s, "lora.loss", v, f"LoRA step {s + 1}/{cfg.lora.steps}"))
        llm.save_adapter(model, tmp / "adapter", str(layout.llm_dir / "base") if cfg.base_model is None
                         else cfg.base_model)
        write_shard(tmp / "seed_triplets.parquet", {"reference": [s[0] for s in seeds],
                                                    "instruction": [s[1] for s in seeds],
                                                    "target": [s[2] for s in seeds]}, {"kind": "seed_triplets"})
        metrics["seconds"] = time.perf_counter() - t0
        write_json(tmp / "manifest.json", {**metrics, "base_model": cfg.base_model or "world-opt"})
    log(f"llm_adapter: LoRA loss {metrics['lora_loss']:.3f} on {len(seeds)} seed triplets")
    return metrics


def llm_triplets_step(layout: Layout, log: Log = print) -> dict:
    p = layout.params
    cfg = p.caption_triplets.llm
    _require([layout.llm_dir / "adapter"], "llm_triplets")
    use_cores(cfg.threads)
    ids, captions, _, _ = _pool(layout)
    seeds = set(read_shard(layout.llm_dir / "seed_triplets.parquet", ["reference"]).column("reference").to_pylist())
    order = np.random.default_rng([p.seed, 23]).permutation(len(captions))
    picked = [i for i in order if captions[i] not in seeds][:cfg.prompts]
    base = layout.llm_dir / "base" if cfg.base_model is None else cfg.base_model
    tok_path = layout.llm_dir / "tokenizer" if cfg.base_model is None else cfg.base_model
    model, tok = llm.load_lm(base, layout.llm_dir / "adapter", tok_path)
    world = cfg.seed_triplets is None  # the world's grammar checks and counts what the LM writes
    rows, stats = llm.llm_triplets(model, tok, [ids[i] for i in picked], [captions[i] for i in picked],
                                   asdict(cfg.sample), p.seed,  # its fields are generate's sampling arguments
                                   consistent=edits.consistent if world else None,
                                   edit_kind=edits.edit_kind if world else None,
                                   min_output_logprob=cfg.min_output_logprob)
    write_shard(layout.llm_triplets, rows, {"kind": "llm_triplets", **stats})
    log(f"llm_triplets: kept {stats['kept']}/{stats['prompts']} "
        + (f"(consistent {stats.get('consistent_fraction', 0):.3f}) " if "consistent_fraction" in stats else "")
        + f"rejected {stats['rejected']}"
        + (f"; edit kinds {stats['edit_kinds']}" if "edit_kinds" in stats else ""))
    return stats


def caption_triplets(layout: Layout, log: Log = print) -> dict:
    """Merge, deduplicate, and describe (counts per method, keywords, templates, token lengths)."""
    p = layout.params
    parts = [layout.keyword_triplets(s) for s in p.world.shards] + [layout.llm_triplets]
    _require(parts, "caption_triplets")
    cols = ("id", "source_id", "reference", "instruction", "target", "method")
    merged: dict[str, list] = {c: [] for c in (*cols, "source_keyword", "target_keyword", "template_id")}
    seen, duplicates = set(), 0
    tables = [read_shard(path).to_pydict() for path in parts]
    reused = _reused_seeds(layout, p.caption_triplets.llm.reuse_seeds)
    if reused:
        tables.append(reused)
    for t in tables:
        n = len(t["id"])
        for i in range(n):
            key = (normalise(t["reference"][i]), normalise(t["instruction"][i]), normalise(t["target"][i]))
            if key in seen:
                duplicates += 1
                continue
            seen.add(key)
            for c in cols:
                merged[c].append(t[c][i])
            merged["source_keyword"].append(t.get("source_keyword", [None] * n)[i])
            merged["target_keyword"].append(t.get("target_keyword", [None] * n)[i])
            merged["template_id"].append(t.get("template_id", [-1] * n)[i])
    enc = load_encoder(p.encoder.model, p.encoder.pretrained, root=layout.root)
    token_lengths = [int(x) for x in (enc.tokenize(merged["instruction"]) > 0).sum(dim=1) - 2] \
        if merged["instruction"] else []
    hist = Counter(min(n, 40) for n in token_lengths)  # Fig. 7 buckets, "40+" as 40
    kw = [i for i, m in enumerate(merged["method"]) if m == "keyword"]
    valid_kw = None
    if p.caption_triplets.keyword.validate_with_world:
        valid_kw = sum(truth.keyword_swap_is_exact(merged["reference"][i], merged["target"][i],
                                                   merged["source_keyword"][i], merged["target_keyword"][i])[0]
                       for i in kw)
    llm_stats = {**(read_manifest(layout.llm_triplets) or {}), "reused_seeds": len(reused["id"]) if reused else 0}
    metrics = {
        "triplets": len(merged["id"]), "duplicates_removed": duplicates,
        "per_method": dict(Counter(merged["method"])),
        "unique_keywords": len({k for k in merged["source_keyword"] + merged["target_keyword"] if k}),
        "template_histogram": {str(k): v for k, v in sorted(Counter(merged["template_id"][i] for i in kw).items())},
        "instruction_token_histogram": {str(k): v for k, v in sorted(hist.items())},
        "keyword_valid_fraction": None if valid_kw is None else valid_kw / max(1, len(kw)),
        "llm": llm_stats,
        "keyword_skipped": _sum_skips(layout),
    }
    write_shard(layout.caption_triplets, merged, {"kind": "caption_triplets", "count": len(merged["id"])})
    write_json(layout.caption_triplets_metrics, metrics)
    log(f"caption_triplets: {metrics['triplets']} triplets {metrics['per_method']}, "
        f"{metrics['unique_keywords']} keywords, {duplicates} duplicates removed")
    return metrics


def _reused_seeds(layout: Layout, count: int) -> dict[str, list] | None:
    """The first ``count`` seed triplets the LM was fine-tuned on, as LLM-method triplets: the paper
    re-uses IP2P's caption triplets beside the ones its OPT writes (Table 1: IP2P's are part of the
    LLM-based triplets)."""
    if not count:
        return None
    path = layout.llm_dir / "seed_triplets.parquet"
    _require([path], "caption_triplets (caption_triplets.llm.reuse_seeds)")
    t = read_shard(path, ["reference", "instruction", "target"]).slice(0, count).to_pydict()
    ids = [f"seed-{i:06d}" for i in range(len(t["reference"]))]
    return {"id": ids, "source_id": ids, **t, "method": ["llm"] * len(ids)}


def _sum_skips(layout: Layout) -> dict:
    total: Counter = Counter()
    for s in layout.params.world.shards:
        total.update((read_manifest(layout.keyword_triplets(s)) or {}).get("skipped", {}))
    return dict(total)
