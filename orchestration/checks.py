"""The asset checks. Blocking checks stop the downstream steps; warnings are reported. Thresholds come
from params (a step's own setting, or the `checks` section), read when the check runs."""

from __future__ import annotations

import json

import dagster as dg

from datagen.coverage import under_covered
from datagen.shards import decode_png, read_shard
from datagen.world.truth import BENCHMARK_KINDS
from orchestration.resources import ProjectResource


@dg.asset_check(asset="world_pairs", blocking=True, description="Every shard holds its pairs, decodable.")
def world_pairs_valid(project: ProjectResource) -> dg.AssetCheckResult:
    layout = project.layout()
    problems, total = [], 0
    for shard in layout.params.world.shards:
        path = layout.world_pairs(shard)
        if not path.is_file():
            continue  # a partition not materialized yet
        table = read_shard(path, ["id", "image_png"])
        total += table.num_rows
        if table.num_rows != layout.params.world.pairs_per_shard:
            problems.append(f"{path}: {table.num_rows} rows, expected {layout.params.world.pairs_per_shard}")
        first = table.slice(0, 1).to_pylist()[0]
        decode_png(first["image_png"], f"{path}:{first['id']}")
    return dg.AssetCheckResult(passed=not problems, metadata={"rows": total, "problems": problems})


@dg.asset_check(asset="encoder", blocking=True, description="Held-out text-to-image R@10 above the floor.")
def encoder_recall_floor(project: ProjectResource) -> dg.AssetCheckResult:
    layout = project.layout()
    metrics = json.loads(layout.encoder_metrics.read_text())
    floor = layout.params.checks.encoder_min_t2i_recall_at_10
    return dg.AssetCheckResult(passed=metrics["t2i_R@10"] >= floor,
                               metadata={"t2i_R@10": metrics["t2i_R@10"], "t2i_R@1": metrics["t2i_R@1"],
                                         "floor": floor,
                                         "benchmark_words_trained": metrics.get("benchmark_words_trained"),
                                         "benchmark_words": metrics.get("benchmark_words")})


@dg.asset_check(asset="caption_triplets", blocking=True,
                description="Every keyword triplet is valid: the target is the reference with the keyword "
                            "swapped, and (world) renders.")
def keyword_triplets_valid(project: ProjectResource) -> dg.AssetCheckResult:
    m = json.loads(project.layout().caption_triplets_metrics.read_text())
    kw = m["keyword_valid_fraction"]
    return dg.AssetCheckResult(passed=m["triplets"] > 0 and (kw is None or kw == 1.0),
                               metadata={"keyword_valid_fraction": kw, "triplets": m["triplets"]})


@dg.asset_check(asset="caption_triplets", description="LLM triplets that follow their instruction (checks."
                "llm_min_consistent_fraction). A warning, not a gate: the CLIP filter drops pairs that contradict "
                "their instruction.")
def llm_triplets_consistency(project: ProjectResource) -> dg.AssetCheckResult:
    layout = project.layout()
    llm_stats = json.loads(layout.caption_triplets_metrics.read_text())["llm"]
    consistent = llm_stats.get("consistent_fraction")
    floor = layout.params.checks.llm_min_consistent_fraction
    return dg.AssetCheckResult(passed=consistent is None or consistent >= floor, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"consistent_fraction": consistent, "floor": floor,
                                         "kept": llm_stats.get("kept"),
                                         "prompts": llm_stats.get("prompts"),
                                         "parse_and_consistent_fraction": llm_stats.get(
                                             "parse_and_consistent_fraction"),
                                         # what the LM-likelihood filter took out, and how much of it was right
                                         "min_output_logprob": llm_stats.get("min_output_logprob"),
                                         "consistent_fraction_of_dropped": llm_stats.get(
                                             "consistent_fraction_of_dropped"),
                                         "consistent_fraction_by_kind": dg.MetadataValue.json(
                                             llm_stats.get("consistent_fraction_by_kind", {}))})


@dg.asset_check(asset="caption_triplets", description="LLM triplets spread over the grammar's edit kinds (checks."
                "llm_max_top_edit_kind_share). A warning: a near-greedy sampler can be consistent by writing one "
                "easy kind only.")
def llm_triplets_diversity(project: ProjectResource) -> dg.AssetCheckResult:
    layout = project.layout()
    llm_stats = json.loads(layout.caption_triplets_metrics.read_text())["llm"]
    share, ceiling = llm_stats.get("top_edit_kind_share"), layout.params.checks.llm_max_top_edit_kind_share
    return dg.AssetCheckResult(passed=share is None or share <= ceiling, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"top_edit_kind_share": share, "ceiling": ceiling,
                                         "edit_kinds": dg.MetadataValue.json(llm_stats.get("edit_kinds", {}))})


@dg.asset_check(asset="filtered_triplets", blocking=True,
                description="Keep rate above the floor, kept images decode, and no NaN score.")
def filtered_triplets_valid(project: ProjectResource) -> dg.AssetCheckResult:
    layout = project.layout()
    m = json.loads(layout.filter_metrics.read_text())
    table = read_shard(layout.filtered_triplets / "pairs.parquet", ["id", "target_png", "sim_dir"])
    problems = []
    if m["keep_rate"] < layout.params.clip_filter.min_keep_rate:
        problems.append(f"keep rate {m['keep_rate']:.3f} < {layout.params.clip_filter.min_keep_rate}")
    if table.num_rows:
        first = table.slice(0, 1).to_pylist()[0]
        decode_png(first["target_png"], f"filtered pair {first['id']}")
    if any(v is None or v != v for v in table.column("sim_dir").to_pylist()):
        problems.append("a kept pair has no sim_dir")
    meta = {"keep_rate": m["keep_rate"], "kept": m["kept"], "problems": problems}
    if "world" in m:
        meta["kept_consistent_fraction"] = m["world"]["kept_consistent_fraction"]
    return dg.AssetCheckResult(passed=not problems, metadata=meta)


@dg.asset_check(asset="filtered_triplets", blocking=True,
                description="Every edit kind the world benchmark asks about is at least clip_filter.min_kind_share "
                            "of the kept triplets (what stage 2 trains on); the failure names the kind and counts.")
def triplet_kind_coverage(project: ProjectResource) -> dg.AssetCheckResult:
    layout = project.layout()
    coverage = json.loads(layout.filter_metrics.read_text()).get("coverage")
    if coverage is None:  # no scene graphs to read the kinds from (a real-data profile)
        return dg.AssetCheckResult(passed=True, metadata={"coverage": "not measured: no world ground truth"})
    short = under_covered(coverage["kept"], BENCHMARK_KINDS, layout.params.clip_filter.min_kind_share)
    return dg.AssetCheckResult(
        passed=not short, description="; ".join(short) or None,
        metadata={"under_covered": dg.MetadataValue.json(short),
                  **{f"{stage}_by_kind": dg.MetadataValue.json(coverage[stage]["counts"])
                     for stage in ("generated", "selected", "rendered", "kept")},
                  "kept_by_method": dg.MetadataValue.json({m: c["counts"]
                                                           for m, c in coverage["kept_by_method"].items()})})


def _features_check(layout, which: str) -> dg.AssetCheckResult:
    from compodiff.encoders import load_encoder
    from compodiff.feature_store import FeatureError, load_features

    dim = load_encoder(layout.params.encoder.model, layout.params.encoder.pretrained, root=layout.root).embed_dim
    if which == "pairs":
        files = [(layout.pair_features(s), ("image", "masked")) for s in layout.params.world.shards
                 if layout.pair_features(s).is_file()]
    else:
        files = [(layout.triplet_features, ("reference", "target"))]
    problems, rows = [], 0
    for path, keys in files:
        try:
            arrays, _, _ = load_features(path, dim, layout.params.encoder.model, keys)
            rows += len(arrays[keys[0]])
        except FeatureError as err:
            problems.append(str(err))
    return dg.AssetCheckResult(passed=not problems and rows > 0, metadata={"rows": rows, "dim": dim,
                                                                          "problems": problems})


@dg.asset_check(asset="pair_features", blocking=True, description="NaN-free features of the encoder's dimension.")
def pair_features_valid(project: ProjectResource) -> dg.AssetCheckResult:
    return _features_check(project.layout(), "pairs")


@dg.asset_check(asset="triplet_features", blocking=True, description="NaN-free features of the encoder's dimension.")
def triplet_features_valid(project: ProjectResource) -> dg.AssetCheckResult:
    return _features_check(project.layout(), "triplets")


def finite_loss(stage: str):
    @dg.asset_check(asset=stage, name=f"{stage}_loss_finite", blocking=True,
                    description="The training ended with a finite loss.")
    def _check(project: ProjectResource) -> dg.AssetCheckResult:
        m = json.loads((project.layout().stage_dir(stage) / "manifest.json").read_text())
        return dg.AssetCheckResult(passed=m["final_loss"] == m["final_loss"] and abs(m["final_loss"]) < 1e6,
                                   metadata={"final_loss": m["final_loss"], "steps": m["steps"]})
    return _check


@dg.asset_check(asset="faiss_index", blocking=True, description="The index holds the whole gallery.")
def faiss_index_size(project: ProjectResource) -> dg.AssetCheckResult:
    from compodiff.feature_store import load_features
    from compodiff.retrieval import GalleryIndex

    layout = project.layout()
    arrays, _, _ = load_features(layout.gallery_features)
    size = GalleryIndex.load(layout.faiss_index).info.size
    return dg.AssetCheckResult(passed=size == len(arrays["image"]) > 0,
                               metadata={"index_size": size, "gallery": len(arrays["image"])})


@dg.asset_check(asset="benchmark_metrics", blocking=True,
                description="CompoDiff stage 2 beats every baseline on world mAP@10: the product works.")
def stage2_beats_baselines(project: ProjectResource) -> dg.AssetCheckResult:
    layout = project.layout()
    c = json.loads(layout.benchmark_checks.read_text())
    required = layout.params.benchmark.require_stage2_lead
    return dg.AssetCheckResult(passed=bool(c["stage2_beats_baselines"]),
                               severity=dg.AssetCheckSeverity.ERROR if required else dg.AssetCheckSeverity.WARN,
                               metadata={"required": required, "stage2_mAP@10": c.get("stage2_mAP@10"),
                                         "best_baseline": c.get("best_baseline"),
                                         "best_baseline_mAP@10": c["best_baseline_mAP@10"]})


@dg.asset_check(asset="benchmark_metrics", description="The negative text cuts the share of top-10 results that "
                "show the negated object to checks.negative_max_share_ratio of it without (a warning).")
def negative_text_halves(project: ProjectResource) -> dg.AssetCheckResult:
    layout = project.layout()
    neg = json.loads(layout.benchmark_checks.read_text())["negative_text"]
    ratio = layout.params.checks.negative_max_share_ratio
    return dg.AssetCheckResult(passed=bool(neg["share_with"] <= ratio * neg["share_without"]),
                               severity=dg.AssetCheckSeverity.WARN,
                               metadata={"negated_share_with": neg["share_with"],
                                         "negated_share_without": neg["share_without"], "ratio": ratio})


CHECKS = [world_pairs_valid, encoder_recall_floor, keyword_triplets_valid, llm_triplets_consistency,
          llm_triplets_diversity, filtered_triplets_valid, triplet_kind_coverage, pair_features_valid,
          triplet_features_valid, finite_loss("stage1"), finite_loss("stage2"), finite_loss("combiner"),
          faiss_index_size, stage2_beats_baselines, negative_text_halves]
