"""Dagster definitions: every step of the lifecycle as a materializable asset.

Thin: each asset opens its MLflow step run, calls the plain step function in
``orchestration.steps`` (the same one the DVC stage runs through the CLI) and
reports metadata. Outputs are files at the paths of ``orchestration.layout``,
so Dagster and DVC agree on where everything lives.
"""


import json
import os
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import dagster as dg

from compodiff.config import load_params
from datagen.coverage import under_covered
from datagen.shards import decode_png, read_shard
from datagen.world.truth import BENCHMARK_KINDS
from orchestration import (
    ablation_steps,
    asset_factories,
    encoder_steps,
    eval_steps,
    feature_steps,
    model_steps,
    pair_steps,
    real_benchmark_steps,
    registry,
    steps,
    train_steps,
    triplet_steps,
)
from orchestration.asset_factories import progress
from orchestration.resources import DeviceResource, ProjectResource, project_root
from orchestration.tracking import MLflowTracking


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


def executor(name: str):
    """Where the steps run: local processes by default; a Celery or Kubernetes cluster for the
    sharded steps at paper scale (deploy/*.yaml; the [cluster] extra installs the integrations)."""
    if name == "multiprocess":
        return dg.multiprocess_executor
    try:
        if name == "celery":
            from dagster_celery import celery_executor

            return celery_executor
        if name == "k8s":
            from dagster_k8s import k8s_job_executor

            return k8s_job_executor
    except ImportError as err:
        raise ImportError(f"COMPODIFF_EXECUTOR={name} needs the cluster extra: pip install -e '.[cluster]' "
                          f"({err})") from None
    raise ValueError(f"COMPODIFF_EXECUTOR={name!r}: one of multiprocess, celery, k8s")


def build(root: Path | None = None, params_file: str | None = None) -> SimpleNamespace:
    """Assets, checks, jobs and resources for the project at ``root`` (default: COMPODIFF_ROOT or cwd)."""
    root = Path(root or project_root()).resolve()
    params_file = params_file or os.environ.get("COMPODIFF_PARAMS", "params.yaml")
    params = load_params(Path(params_file) if Path(params_file).is_absolute() else root / params_file)
    # The shard list of params.yaml is the partition set; DVC fans out over the same list.
    shards = dg.StaticPartitionsDefinition(list(params.world.shards))
    # every asset's code version covers the params its step reads: bind them once
    step_asset = partial(asset_factories.step_asset, params)
    sharded_asset = partial(asset_factories.sharded_asset, params)

    world_pairs = sharded_asset(
        "world_pairs", shards, [], lambda lay, keys, log: steps.world_pairs_shards(lay, keys, log=log), "world",
        "Sharded image-caption pairs of the procedural world (stand-in for LAION-2B).", ("count", "bytes", "seconds"))

    @dg.asset_check(asset=world_pairs, blocking=True, description="Every shard holds its pairs, decodable.")
    def world_pairs_valid(context: dg.AssetCheckExecutionContext, project: ProjectResource) -> dg.AssetCheckResult:
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

    @dg.asset(
        deps=[world_pairs],
        group_name="world",
        description="The world's open_clip model, trained contrastively on world_pairs (stand-in for CLIP).",
        kinds={"pytorch"},
        pool=registry.step("encoder").pool,
        code_version=registry.version("encoder", params),
    )
    def encoder(context: dg.AssetExecutionContext, project: ProjectResource, tracking: MLflowTracking,
                device: DeviceResource) -> dg.MaterializeResult:
        layout = project.layout()
        device.resolve()
        with tracking.step_run("encoder", layout.params, context.run.run_id) as run:
            metrics = encoder_steps.encoder(layout, log=progress(context),
                                    on_metrics=lambda s, m: run.log_metrics(m, step=s))
            run.log_metrics(metrics)
            run.log_artifact(layout.encoder_metrics)
            run.log_artifact(layout.encoder_dir / "open_clip_config.json", "encoder")
        return dg.MaterializeResult(metadata={
            **{k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))},
            "path": str(layout.encoder_dir),
            "mlflow_run": dg.MetadataValue.url(run.url),
        })


    @dg.asset_check(asset=encoder, blocking=True, description="Held-out text-to-image R@10 above the floor.")
    def encoder_recall_floor(project: ProjectResource) -> dg.AssetCheckResult:
        layout = project.layout()
        metrics = json.loads(layout.encoder_metrics.read_text())
        floor = 0.5 if layout.params.profile != "tiny" else 0.0
        return dg.AssetCheckResult(passed=metrics["t2i_R@10"] >= floor,
                                   metadata={"t2i_R@10": metrics["t2i_R@10"], "t2i_R@1": metrics["t2i_R@1"],
                                             "floor": floor,
                                             "benchmark_words_trained": metrics.get("benchmark_words_trained"),
                                             "benchmark_words": metrics.get("benchmark_words")})



    caption_pool = step_asset("caption_pool", [world_pairs], triplet_steps.caption_pool, "caption_triplets",
                              "Captions of every world pair and their object terms (spaCy nouns).")

    keyword_triplets = sharded_asset(
        "keyword_triplets", shards, [caption_pool, encoder],
        lambda lay, keys, log: [triplet_steps.keyword_triplets_shard(lay, k, log=log) for k in keys],
        "caption_triplets", "Keyword-based caption triplets (paper 4.1), one table per shard, both directions.",
        ("triplets", "captions", "seconds"))

    llm_adapter = step_asset("llm_adapter", [caption_pool], triplet_steps.llm_adapter, "caption_triplets",
                             "A causal LM LoRA-fine-tuned on seed edits in the IP2P format (paper 4.2).",
                             artifact=lambda lay: lay.llm_dir / "manifest.json")
    llm_triplets = step_asset("llm_triplets", [llm_adapter, caption_pool], triplet_steps.llm_triplets_step,
                              "caption_triplets", "Caption triplets sampled from the fine-tuned LM, parsed, "
                              "validated and deduplicated.")
    caption_triplets = step_asset("caption_triplets", [keyword_triplets, llm_triplets, llm_adapter, encoder],
                                  triplet_steps.caption_triplets, "caption_triplets",
                                  "All caption triplets, merged and deduplicated, with statistics (Fig. 7).",
                                  artifact=lambda lay: lay.caption_triplets_metrics)

    @dg.asset_check(asset=caption_triplets, blocking=True,
                    description="Every keyword triplet is valid: the target is the reference with the keyword "
                                "swapped, and (world) renders.")
    def keyword_triplets_valid(project: ProjectResource) -> dg.AssetCheckResult:
        m = json.loads(project.layout().caption_triplets_metrics.read_text())
        kw = m["keyword_valid_fraction"]
        return dg.AssetCheckResult(passed=m["triplets"] > 0 and (kw is None or kw == 1.0),
                                   metadata={"keyword_valid_fraction": kw, "triplets": m["triplets"]})

    @dg.asset_check(asset=caption_triplets, description="LLM triplets that follow their instruction (target 95%). "
                    "A warning, not a gate: the CLIP filter drops pairs that contradict their instruction.")
    def llm_triplets_consistency(project: ProjectResource) -> dg.AssetCheckResult:
        layout = project.layout()
        llm_stats = json.loads(layout.caption_triplets_metrics.read_text())["llm"]
        consistent = llm_stats.get("consistent_fraction")
        return dg.AssetCheckResult(passed=consistent is None or consistent >= 0.95,
                                   severity=dg.AssetCheckSeverity.WARN,
                                   metadata={"consistent_fraction": consistent, "kept": llm_stats.get("kept"),
                                             "prompts": llm_stats.get("prompts"),
                                             "parse_and_consistent_fraction": llm_stats.get(
                                                 "parse_and_consistent_fraction"),
                                             # what the LM-likelihood filter took out, and how much of it was right
                                             "min_output_logprob": llm_stats.get("min_output_logprob"),
                                             "consistent_fraction_of_dropped": llm_stats.get(
                                                 "consistent_fraction_of_dropped"),
                                             "consistent_fraction_by_kind": dg.MetadataValue.json(
                                                 llm_stats.get("consistent_fraction_by_kind", {}))})

    @dg.asset_check(asset=caption_triplets, description="LLM triplets spread over the grammar's edit kinds: no "
                    "kind above half of them. A warning: a near-greedy sampler can be consistent by writing one "
                    "easy kind only.")
    def llm_triplets_diversity(project: ProjectResource) -> dg.AssetCheckResult:
        llm_stats = json.loads(project.layout().caption_triplets_metrics.read_text())["llm"]
        share = llm_stats.get("top_edit_kind_share")
        return dg.AssetCheckResult(passed=share is None or share <= 0.5, severity=dg.AssetCheckSeverity.WARN,
                                   metadata={"top_edit_kind_share": share,
                                             "edit_kinds": dg.MetadataValue.json(llm_stats.get("edit_kinds", {}))})

    image_pairs = sharded_asset(
        "image_pairs", shards, [caption_triplets],
        lambda lay, keys, log: pair_steps.image_pairs_shards(lay, keys, log=log), "image_pairs",
        "Image pairs rendered from the caption triplets (paper 4.3): the world renderer with the reference's "
        "seed, or Stable Diffusion with self-attention injection. N samples per triplet.",
        ("pairs", "failed", "seconds"))
    filtered_triplets = step_asset(
        "filtered_triplets", [image_pairs, caption_triplets, encoder], pair_steps.filtered_triplets, "image_pairs",
        "Pairs that clear the CLIP filter (paper 4.4), best k per triplet by sim_dir, every score kept.",
        artifact=lambda lay: lay.filter_metrics)

    @dg.asset_check(asset=filtered_triplets, blocking=True,
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

    @dg.asset_check(asset=filtered_triplets, blocking=True,
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

    pair_features = sharded_asset(
        "pair_features", shards, [world_pairs, encoder],
        lambda lay, keys, log: feature_steps.pair_features_shards(lay, keys, log=log), "training",
        "CLIP image embeddings of the image-text pairs, with an Eq. (2) mask and masked-image embedding each.",
        ("count", "seconds"))
    triplet_features = step_asset(
        "triplet_features", [filtered_triplets, encoder], feature_steps.triplet_features, "training",
        "CLIP embeddings of the filtered triplets' reference and target images, with both instructions.")

    @dg.asset_check(asset=pair_features, blocking=True, description="NaN-free features of the encoder's dimension.")
    def pair_features_valid(project: ProjectResource) -> dg.AssetCheckResult:
        return _features_check(project.layout(), "pairs")

    @dg.asset_check(asset=triplet_features, blocking=True, description="NaN-free features of the encoder's dimension.")
    def triplet_features_valid(project: ProjectResource) -> dg.AssetCheckResult:
        return _features_check(project.layout(), "triplets")

    stage1 = step_asset("stage1", [pair_features, encoder], train_steps.stage1, "training",
                        "Stage 1 (Eq. 1): text -> image embedding on the image-text pairs.",
                        artifact=lambda lay: lay.stage_dir("stage1") / "manifest.json", training=True)
    stage2 = step_asset("stage2", [stage1, pair_features, triplet_features, encoder], train_steps.stage2, "training",
                        "Stage 2: Eq. 1 / Eq. 2 / Eq. 3 mixed 30/30/40, from stage 1's EMA weights.",
                        artifact=lambda lay: lay.training_metrics, training=True)
    combiner = step_asset("combiner", [triplet_features, encoder], train_steps.combiner, "training",
                          "The Combiner baseline (CLIP4Cir) on the same triplets, optional bi-directional loss.",
                          artifact=lambda lay: lay.combiner_metrics, training=True)

    def finite_loss(stage):
        @dg.asset_check(asset=stage, name=f"{stage.key.path[-1]}_loss_finite", blocking=True,
                        description="The training ended with a finite loss.")
        def _check(project: ProjectResource) -> dg.AssetCheckResult:
            m = json.loads((project.layout().stage_dir(stage.key.path[-1]) / "manifest.json").read_text())
            return dg.AssetCheckResult(passed=m["final_loss"] == m["final_loss"] and abs(m["final_loss"]) < 1e6,
                                       metadata={"final_loss": m["final_loss"], "steps": m["steps"]})
        return _check

    world_benchmark = step_asset("world_benchmark", [], eval_steps.world_benchmark, "evaluation",
                                 "The world benchmark: queries of nine types, several true targets each from the "
                                 "scene graphs, exported in the FashionIQ, CIRR, CIRCO and GeneCIS formats.")
    gallery_features = step_asset("gallery_features", [world_benchmark, encoder], eval_steps.gallery_features,
                                  "evaluation", "CLIP embeddings of the benchmark gallery.")
    faiss_index = step_asset("faiss_index", [gallery_features], eval_steps.faiss_index, "evaluation",
                             "FAISS index of the gallery (flat, IVF-PQ or HNSW from params).")
    benchmark_metrics = step_asset(
        "benchmark_metrics", [world_benchmark, gallery_features, faiss_index, stage1, stage2, combiner],
        eval_steps.benchmark_metrics, "evaluation",
        "Every method on the world benchmark in one run (mAP@K, R@K, per query type), and the same queries "
        "scored through the four official-format evaluators.",
        artifact=lambda lay: lay.benchmark_metrics)
    champion = step_asset(
        "champion", [benchmark_metrics, stage2, combiner, encoder, faiss_index], model_steps.champion, "evaluation",
        "Stage 2 and the Combiner as MLflow pyfunc models, registered with the alias 'champion' once the "
        "benchmark's blocking checks held.", artifact=lambda lay: lay.data / "champion.json")
    ablations = step_asset(
        "ablations", [world_benchmark, gallery_features, faiss_index, stage1, stage2, pair_features, triplet_features],
        ablation_steps.ablations, "evaluation",
        "Sampling steps, guidance sweep, triplet scale, stage-2 mixture and bi-directional alpha.",
        artifact=lambda lay: lay.plots, image=lambda lay: lay.plots / "ablations.png")

    real_benchmark = sharded_asset(
        "real_benchmark", dg.StaticPartitionsDefinition(list(real_benchmark_steps.REAL_BENCHMARKS)), [stage2, encoder],
        lambda lay, keys, log: [real_benchmark_steps.real_benchmark(lay, k, log) for k in keys], "evaluation",
        "Zero-shot FashionIQ, CIRR, CIRCO and GeneCIS from their local paths (sources.*), one partition each; "
        "a benchmark without a configured path is recorded as not configured.", ("configured",))

    @dg.asset_check(asset=faiss_index, blocking=True, description="The index holds the whole gallery.")
    def faiss_index_size(project: ProjectResource) -> dg.AssetCheckResult:
        from compodiff.feature_store import load_features
        from compodiff.retrieval import GalleryIndex

        layout = project.layout()
        arrays, _, _ = load_features(layout.gallery_features)
        size = GalleryIndex.load(layout.faiss_index).info.size
        return dg.AssetCheckResult(passed=size == len(arrays["image"]) > 0,
                                   metadata={"index_size": size, "gallery": len(arrays["image"])})

    @dg.asset_check(asset=benchmark_metrics, blocking=True,
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

    @dg.asset_check(asset=benchmark_metrics, description="The negative text at least halves the share of top-10 "
                    "results that show the negated object (a warning).")
    def negative_text_halves(project: ProjectResource) -> dg.AssetCheckResult:
        neg = json.loads(project.layout().benchmark_checks.read_text())["negative_text"]
        return dg.AssetCheckResult(passed=bool(neg["share_with"] <= 0.5 * neg["share_without"]),
                                   severity=dg.AssetCheckSeverity.WARN,
                                   metadata={"negated_share_with": neg["share_with"],
                                             "negated_share_without": neg["share_without"]})

    assets = [world_pairs, encoder, caption_pool, keyword_triplets, llm_adapter, llm_triplets, caption_triplets,
              image_pairs, filtered_triplets, pair_features, triplet_features, stage1, stage2, combiner,
              world_benchmark, gallery_features, faiss_index, benchmark_metrics, champion, ablations, real_benchmark]
    checks = [world_pairs_valid, encoder_recall_floor, keyword_triplets_valid, llm_triplets_consistency,
              llm_triplets_diversity, filtered_triplets_valid, pair_features_valid, triplet_features_valid,
              finite_loss(stage1), finite_loss(stage2), finite_loss(combiner), faiss_index_size, stage2_beats_baselines,
              negative_text_halves, triplet_kind_coverage]
    jobs = [dg.define_asset_job("world", selection=dg.AssetSelection.groups("world")),
            dg.define_asset_job("datagen", selection=dg.AssetSelection.groups("world", "caption_triplets",
                                                                              "image_pairs")),
            dg.define_asset_job("train", selection=dg.AssetSelection.groups("training")),
            dg.define_asset_job("evaluate", selection=dg.AssetSelection.groups("evaluation")),
            # a job holds one partitioning: real_benchmark (partitioned by benchmark) runs on its own
            dg.define_asset_job("all", selection=dg.AssetSelection.all() - dg.AssetSelection.assets("real_benchmark"))]
    resources = {
        "project": ProjectResource(root=str(root), params_file=params_file),
        "tracking": MLflowTracking(tracking_uri=params.tracking.tracking_uri,
                                   experiment=params.tracking.experiment, root=str(root)),
        "device": DeviceResource(),
    }
    defs = dg.Definitions(assets=assets, asset_checks=checks, jobs=jobs, resources=resources,
                          executor=executor(os.environ.get("COMPODIFF_EXECUTOR", "multiprocess")))
    return SimpleNamespace(root=root, params=params, assets=assets, checks=checks, resources=resources, defs=defs)


project = build()
defs = project.defs
