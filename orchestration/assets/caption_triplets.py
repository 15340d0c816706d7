"""Caption triplets (paper 4.1-4.2): keyword swaps and the LoRA-tuned causal LM's edits."""

from functools import partial

from orchestration import asset_factories, triplet_steps


def build(params, shards) -> list:
    step_asset = partial(asset_factories.step_asset, params)
    caption_pool = step_asset("caption_pool", triplet_steps.caption_pool, "caption_triplets",
                              "Captions of every world pair and their object terms (spaCy nouns).")
    keyword_triplets = asset_factories.sharded_asset(
        params, "keyword_triplets", shards,
        lambda lay, keys, log: [triplet_steps.keyword_triplets_shard(lay, k, log=log) for k in keys],
        "caption_triplets", "Keyword-based caption triplets (paper 4.1), one table per shard, both directions.",
        ("triplets", "captions", "seconds"))
    llm_adapter = step_asset("llm_adapter", triplet_steps.llm_adapter, "caption_triplets",
                             "A causal LM LoRA-fine-tuned on seed edits in the IP2P format (paper 4.2).",
                             artifact=lambda lay: lay.llm_dir / "manifest.json")
    llm_triplets = step_asset("llm_triplets", triplet_steps.llm_triplets_step, "caption_triplets",
                              "Caption triplets sampled from the fine-tuned LM, parsed, validated and deduplicated.")
    caption_triplets = step_asset("caption_triplets", triplet_steps.caption_triplets, "caption_triplets",
                                  "All caption triplets, merged and deduplicated, with statistics (Fig. 7).",
                                  artifact=lambda lay: lay.caption_triplets_metrics)
    return [caption_pool, keyword_triplets, llm_adapter, llm_triplets, caption_triplets]
