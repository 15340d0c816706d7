"""Features, the two training stages of the denoiser (paper 3.2) and the Combiner baseline."""

from functools import partial

from orchestration import asset_factories, feature_steps, train_steps


def build(params, shards) -> list:
    step_asset = partial(asset_factories.step_asset, params)
    pair_features = asset_factories.sharded_asset(
        params, "pair_features", shards, lambda lay, keys, log: feature_steps.pair_features_shards(lay, keys, log=log),
        "training", "CLIP image embeddings of the image-text pairs, with an Eq. (2) mask and masked-image "
        "embedding each.", ("count", "seconds"))
    triplet_features = step_asset(
        "triplet_features", feature_steps.triplet_features, "training",
        "CLIP embeddings of the filtered triplets' reference and target images, with both instructions.")
    stage1 = step_asset("stage1", train_steps.stage1, "training",
                        "Stage 1 (Eq. 1): text -> image embedding on the image-text pairs.",
                        artifact=lambda lay: lay.stage_dir("stage1") / "manifest.json")
    stage2 = step_asset("stage2", train_steps.stage2, "training",
                        "Stage 2: Eq. 1 / Eq. 2 / Eq. 3 mixed 30/30/40, from stage 1's EMA weights.",
                        artifact=lambda lay: lay.training_metrics)
    combiner = step_asset("combiner", train_steps.combiner, "training",
                          "The Combiner baseline (CLIP4Cir) on the same triplets, optional bi-directional loss.",
                          artifact=lambda lay: lay.combiner_metrics)
    return [pair_features, triplet_features, stage1, stage2, combiner]
