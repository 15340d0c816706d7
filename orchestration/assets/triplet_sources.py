"""Public triplet datasets converted into triplet shards, one partition per source kind."""

import dagster as dg

from orchestration import asset_factories, triplet_source_steps
from orchestration.registry import TRIPLET_SOURCES


def build(params, shards) -> list:
    image_triplets = asset_factories.sharded_asset(
        params, "image_triplets", dg.StaticPartitionsDefinition(list(TRIPLET_SOURCES)),
        lambda lay, keys, log: [triplet_source_steps.image_triplets(lay, k, log) for k in keys], "triplet_sources",
        "Public triplet datasets (IP2P, MegaPairs, LaSCo, SynthTriplets18M, CIRR / FashionIQ train) read from "
        "local copies into triplet shards; an unconfigured source is recorded as such.", ("read", "kept"),
        per_partition=True)
    return [image_triplets]
