"""Image pairs (paper 4.3) and the CLIP filter (paper 4.4)."""

from orchestration import asset_factories, pair_steps


def build(params, shards) -> list:
    image_pairs = asset_factories.sharded_asset(
        params, "image_pairs", shards, lambda lay, keys, log: pair_steps.image_pairs_shards(lay, keys, log=log),
        "image_pairs", "Image pairs rendered from the caption triplets (paper 4.3): the world renderer with the "
        "reference's seed, or Stable Diffusion with self-attention injection. N samples per triplet.",
        ("pairs", "failed", "seconds"))
    filtered_triplets = asset_factories.step_asset(
        params, "filtered_triplets", pair_steps.filtered_triplets, "image_pairs",
        "Pairs that clear the CLIP filter (paper 4.4), best k per triplet by sim_dir, every score kept.",
        artifact=lambda lay: lay.filter_metrics)
    return [image_pairs, filtered_triplets]
