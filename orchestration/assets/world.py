"""The procedural world's image-text pairs and its CLIP (the stand-ins for LAION and pretrained CLIP)."""

from functools import partial

from orchestration import asset_factories, encoder_steps, steps


def build(params, shards) -> list:
    step_asset = partial(asset_factories.step_asset, params)
    world_pairs = asset_factories.sharded_asset(
        params, "world_pairs", shards, lambda lay, keys, log: steps.world_pairs_shards(lay, keys, log=log), "world",
        "Sharded image-caption pairs of the procedural world (stand-in for LAION-2B).", ("count", "bytes", "seconds"))
    encoder = step_asset("encoder", encoder_steps.encoder, "world",
                         "The world's open_clip model, trained contrastively on world_pairs (stand-in for CLIP).",
                         artifact=lambda lay: lay.encoder_metrics)
    return [world_pairs, encoder]
