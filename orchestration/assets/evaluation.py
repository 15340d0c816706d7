"""The world benchmark and its index, every method scored, the champion models, the ablations and the
four public benchmarks."""

from functools import partial

import dagster as dg

from orchestration import ablation_steps, asset_factories, eval_steps, model_steps, real_benchmark_steps
from orchestration.registry import REAL_BENCHMARKS


def build(params, shards) -> list:
    step_asset = partial(asset_factories.step_asset, params)
    world_benchmark = step_asset("world_benchmark", eval_steps.world_benchmark, "evaluation",
                                 "The world benchmark: queries of nine types, several true targets each from the "
                                 "scene graphs, exported in the FashionIQ, CIRR, CIRCO and GeneCIS formats.")
    gallery_features = step_asset("gallery_features", eval_steps.gallery_features, "evaluation",
                                  "CLIP embeddings of the benchmark gallery.")
    faiss_index = step_asset("faiss_index", eval_steps.faiss_index, "evaluation",
                             "FAISS index of the gallery (flat, IVF-PQ or HNSW from params).")
    benchmark_metrics = step_asset(
        "benchmark_metrics", eval_steps.benchmark_metrics, "evaluation",
        "Every method on the world benchmark in one run (mAP@K, R@K, per query type), and the same queries "
        "scored through the four official-format evaluators.", artifact=lambda lay: lay.benchmark_metrics)
    champion = step_asset(
        "champion", model_steps.champion, "evaluation",
        "Stage 2 and the Combiner as MLflow pyfunc models, registered with the alias 'champion' once the "
        "benchmark's blocking checks held.", artifact=lambda lay: lay.data / "champion.json")
    ablations = step_asset(
        "ablations", ablation_steps.ablations, "evaluation",
        "Sampling steps, guidance sweep, triplet scale, stage-2 mixture and bi-directional alpha.",
        artifact=lambda lay: lay.plots, image=lambda lay: lay.plots / "ablations.png")
    real_benchmark = asset_factories.sharded_asset(
        params, "real_benchmark", dg.StaticPartitionsDefinition(list(REAL_BENCHMARKS)),
        lambda lay, keys, log: [real_benchmark_steps.real_benchmark(lay, k, log) for k in keys], "evaluation",
        "Zero-shot FashionIQ, CIRR, CIRCO and GeneCIS from their local paths (sources.*), one partition each; "
        "a benchmark without a configured path is recorded as not configured.", ("configured",))
    return [world_benchmark, gallery_features, faiss_index, benchmark_metrics, champion, ablations, real_benchmark]
