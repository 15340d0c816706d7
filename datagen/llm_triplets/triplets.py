"""LLM caption triplets from captions: sample, parse, validate, deduplicate."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

from datagen.llm_triplets.format import normalise, parse_completion
from datagen.llm_triplets.sampling import generate, output_logprob


def llm_triplets(model, tokenizer, ids: list[str], captions: list[str], sample_cfg: dict, seed: int,
                 consistent: Callable[[str, str, str], tuple[bool, str]] | None = None,
                 edit_kind: Callable[[str, str], str] | None = None,
                 min_output_logprob: float | None = None) -> tuple[dict, dict]:
    """Generate, parse, validate, deduplicate, score; keep what scores at least ``min_output_logprob``
    (None: all). Returns (rows, statistics with counted rejections).

    Every row records its score and token count (columns ``output_logprob``, ``output_tokens``; see
    ``output_logprob``), so a later run can re-filter with another threshold. With ``edit_kind`` the
    statistics count the kept triplets per kind of edit, and with ``consistent`` as well, the consistency
    per kind (a near-greedy sampler can be consistent by writing one easy kind only, which the overall
    fraction alone would hide) and the consistency of what the threshold dropped."""
    t0 = time.perf_counter()
    completions = generate(model, tokenizer, captions, seed=seed, **sample_cfg)
    seconds = time.perf_counter() - t0
    rejected, seen, parsed_rows = Counter(), set(), []
    for cid, cap, comp in zip(ids, captions, completions):
        parsed = parse_completion(cap, comp)
        if isinstance(parsed, str):
            rejected[parsed] += 1
            continue
        instruction, output = parsed
        key = (normalise(cap), normalise(instruction), normalise(output))
        if key in seen:
            rejected["duplicate"] += 1
            continue
        seen.add(key)
        parsed_rows.append((cid, cap, instruction, output))
    t1 = time.perf_counter()
    logp, n_tokens = output_logprob(model, tokenizer, [r[1] for r in parsed_rows], [r[2] for r in parsed_rows],
                                    [r[3] for r in parsed_rows], sample_cfg["batch_size"])
    scoring_seconds = time.perf_counter() - t1
    rows = {k: [] for k in ("id", "source_id", "reference", "instruction", "target", "method", "seed",
                            "output_logprob", "output_tokens")}
    checked = good = dropped = dropped_good = 0
    kinds, kinds_good = Counter(), Counter()
    for (cid, cap, instruction, output), lp, nt in zip(parsed_rows, logp, n_tokens):
        ok = consistent(cap, instruction, output)[0] if consistent is not None else None
        if min_output_logprob is not None and not lp >= min_output_logprob:  # NaN (a broken LM) fails too
            rejected["output log-likelihood below min_output_logprob"] += 1
            dropped += 1
            dropped_good += bool(ok)
            continue
        kind = edit_kind(cap, instruction) if edit_kind is not None else None
        kinds[kind] += 1
        if consistent is not None:
            checked += 1
            good += ok
            kinds_good[kind] += ok
        rows["id"].append(f"{cid}:llm")
        rows["source_id"].append(cid)
        rows["reference"].append(cap)
        rows["instruction"].append(instruction)
        rows["target"].append(output)
        rows["method"].append("llm")
        rows["seed"].append(seed)
        rows["output_logprob"].append(float(lp))
        rows["output_tokens"].append(int(nt))
    stats = {"prompts": len(captions), "kept": len(rows["id"]), "rejected": dict(rejected),
             "generation_seconds": seconds, "scoring_seconds": scoring_seconds,
             "triplets_per_second": len(captions) / max(seconds + scoring_seconds, 1e-9),
             "min_output_logprob": min_output_logprob}
    if consistent is not None:
        stats["consistency_checked"] = checked
        stats["consistent_fraction"] = good / checked if checked else 0.0
        stats["parse_and_consistent_fraction"] = good / max(1, len(captions))
        stats["consistent_fraction_of_dropped"] = dropped_good / dropped if dropped else None
    if edit_kind is not None:
        stats["edit_kinds"] = dict(kinds.most_common())
        stats["top_edit_kind_share"] = max(kinds.values()) / len(rows["id"]) if rows["id"] else 0.0
        if consistent is not None:
            stats["consistent_fraction_by_kind"] = {k: kinds_good[k] / n for k, n in kinds.most_common()}
    return rows, stats
