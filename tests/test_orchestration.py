"""Dagster, DVC and MLflow for real, on the tiny profile, in a temporary copy of the project."""

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import dagster as dg
import mlflow
import pyarrow.parquet as pq
import pytest
import yaml
from transformers import AutoTokenizer

from compodiff.profiles import render
from orchestration import registry
from orchestration.definitions import build
from orchestration.lifecycle import materialize
from tools.lifecycle_screenshot import dagster_dev, graphql

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ["world_pairs", "caption_pool", "encoder", "keyword_triplets", "llm_adapter", "llm_triplets",
          "caption_triplets", "image_pairs", "filtered_triplets", "pair_features", "triplet_features", "stage1",
          "stage2", "combiner", "world_benchmark", "gallery_features", "faiss_index", "benchmark_metrics",
          "champion", "ablations", "real_benchmark", "image_triplets"]
DVC = ROOT / ".venv-dvc" / "bin" / "dvc"
DAGSTER = ROOT / ".venv" / "bin" / "dagster"


def result_of(results, asset: str):
    """The in-process run that materialized ``asset``."""
    return next(r for r in results if r.asset_materializations_for_node(asset))


def copy_project(dest: Path) -> Path:
    """The project's files (tracked or not ignored) on the tiny profile; .venv linked, not copied."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    for rel in listed:
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    (dest / ".venv").symlink_to(ROOT / ".venv")
    (dest / "params.yaml").write_text(render(ROOT / "profiles" / "tiny.yaml"))
    return dest


def env_for(root: Path, dagster_home: Path | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPODIFF_", "DAGSTER_"))}
    env["COMPODIFF_ROOT"] = str(root)
    env["DAGSTER_HOME"] = str(dagster_home or root / ".dagster_home")
    (Path(env["DAGSTER_HOME"])).mkdir(parents=True, exist_ok=True)
    return env


def run(cmd, cwd, env, timeout=600):
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{cmd} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.fixture(scope="module")
def materialized(tmp_path_factory):
    root = copy_project(tmp_path_factory.mktemp("dagster_project"))
    project = build(root)
    results = [o.result for o in materialize(project, dg.DagsterInstance.ephemeral(), log=lambda m: None)]
    return root, project, results


@pytest.mark.slow  # the whole tiny graph, or a full DVC / lifecycle round trip
def test_whole_asset_graph_materializes_with_checks_passing(materialized):
    root, project, results = materialized
    # the lifecycle job in one run; image_triplets (by source) before it, real_benchmark (by benchmark) after
    assert len(results) == 3 and all(r.success for r in results)
    done = [{e.asset_key.to_user_string() for e in r.all_events if e.event_type_value == "ASSET_MATERIALIZATION"}
            for r in results]
    assert done[0] == {"image_triplets"} and done[2] == {"real_benchmark"}
    assert done[1] == set(ASSETS) - {"image_triplets", "real_benchmark"}
    checks = [e for r in results for e in r.get_asset_check_evaluations()]
    assert {c.check_name for c in checks} == {
        "world_pairs_valid", "encoder_recall_floor", "keyword_triplets_valid", "llm_triplets_consistency",
        "llm_triplets_diversity", "filtered_triplets_valid", "pair_features_valid", "triplet_features_valid",
        "stage1_loss_finite", "stage2_loss_finite", "combiner_loss_finite", "faiss_index_size",
        "stage2_beats_baselines", "negative_text_halves", "triplet_kind_coverage"}
    # tiny models: warnings, not gates (stage2_beats_baselines is one through benchmark.require_stage2_lead)
    warnings = {"llm_triplets_consistency", "llm_triplets_diversity", "stage2_beats_baselines", "negative_text_halves"}
    assert all(c.passed for c in checks if c.check_name not in warnings)
    consistency = next(c for c in checks if c.check_name == "llm_triplets_consistency")
    assert {"consistent_fraction", "parse_and_consistent_fraction"} <= set(consistency.metadata)  # both reported
    threshold = project.params.caption_triplets.llm.min_output_logprob
    assert consistency.metadata["min_output_logprob"].value == threshold
    scores = pq.read_table(root / "data" / "llm_triplets.parquet").column("output_logprob").to_pylist()
    assert all(s >= threshold for s in scores)
    adapter = json.loads((root / "data" / "llm" / "adapter" / "adapter_config.json").read_text())
    tok = AutoTokenizer.from_pretrained(root / "data" / "llm" / "tokenizer")  # train_embeddings: every row trains
    assert sorted(adapter["trainable_token_indices"]) == sorted(set(range(len(tok))) - set(tok.all_special_ids))
    for shard in project.params.world.shards:
        assert (root / "data" / "world_pairs" / f"{shard}.parquet").is_file()
    metrics = json.loads((root / "metrics" / "encoder.json").read_text())
    assert 0.0 <= metrics["t2i_R@10"] <= 1.0 and metrics["eval_pairs"] == 64
    meta = result_of(results, "encoder").asset_materializations_for_node("encoder")[0].metadata
    assert "mlflow_run" in meta and "t2i_R@10" in meta
    triplets = json.loads((root / "metrics" / "caption_triplets.json").read_text())
    assert triplets["triplets"] > 0 and triplets["keyword_valid_fraction"] == 1.0
    assert set(triplets["per_method"]) <= {"keyword", "llm"} and triplets["per_method"]["keyword"] > 0
    filt = json.loads((root / "metrics" / "filter.json").read_text())
    assert filt["pairs"] > 0 and 0 <= filt["world"]["kept_consistent_fraction"] <= 1
    assert sum(filt["removed_by"].values()) + filt["kept"] == filt["pairs"]  # every pair accounted for
    cov = filt["coverage"]  # edit kinds at every stage, from the scene graphs
    assert cov["generated"]["total"] == triplets["triplets"] and cov["kept"]["total"] == filt["kept"]
    assert cov["rendered"]["total"] == filt["pairs"] - filt["removed_by"]["generation failed"]
    assert triplets["llm"]["reused_seeds"] == 16 and "llm" in filt["thresholds_per_method"]
    filtered = result_of(results, "filtered_triplets")
    filter_meta = filtered.asset_materializations_for_node("filtered_triplets")[0].metadata
    assert filter_meta["dagster/row_count"].value == filt["kept"]  # table metadata: the kept pairs' table
    assert "instruction" in {c.name for c in filter_meta["dagster/column_schema"].value.columns}
    pairs_meta = result_of(results, "world_pairs").asset_materializations_for_node("world_pairs")[0].metadata
    assert pairs_meta["run.rows"].value == 2 * project.params.world.pairs_per_shard
    assert all(filter_meta[f"kept.{k}"].value == n for k, n in cov["kept"]["counts"].items())  # also in MLflow
    coverage_check = next(c for c in checks if c.check_name == "triplet_kind_coverage")
    assert coverage_check.metadata["kept_by_kind"].value == cov["kept"]["counts"]
    kinds = pq.read_table(root / "data" / "filtered_triplets" / "pairs.parquet").column("edit_kind").to_pylist()
    assert sorted(set(kinds)) == sorted(cov["kept"]["counts"])
    training = json.loads((root / "metrics" / "training.json").read_text())
    assert training["stage1"]["steps"] == 4 and training["stage2"]["steps"] == 4
    assert training["stage2"]["triplets"] > 0 and training["stage2"]["pairs"] == 192
    bench = json.loads((root / "metrics" / "benchmark.json").read_text())
    assert {"image_only", "text_only", "image_text_sum", "combiner", "combiner_bidirectional", "compodiff_stage1",
            "compodiff_stage2", "compodiff_stage2_no_negative_no_mask"} == set(bench)
    for m in bench.values():
        assert 0 <= m["mAP@10"] <= 100 and set(m["per_type"]) == {"replace", "colour", "add", "remove", "background",
                                                                  "size", "negative", "mask", "combined"}
    checks_file = json.loads((root / "metrics" / "benchmark_checks.json").read_text())
    # the CIRCO-format export scores the same queries the same way as the direct evaluation
    assert checks_file["exports"]["circo"]["mAP@10"] == pytest.approx(bench["compodiff_stage2"]["mAP@10"])
    abl = json.loads((root / "metrics" / "ablations.json").read_text())
    assert [r["steps"] for r in abl["sampling_steps"]] == [1, 2]
    assert (root / "metrics" / "plots" / "ablations.png").is_file()


@pytest.mark.slow  # the whole tiny graph, or a full DVC / lifecycle round trip
def test_one_mlflow_run_per_asset_step_with_lineage_tags(materialized):
    root, project, results = materialized
    uri = f"sqlite:///{root}/mlflow.db"
    client = mlflow.MlflowClient(uri)
    every = client.search_runs([client.get_experiment_by_name("compodiff").experiment_id])
    groups = {r.data.tags["dagster.run_id"]: r for r in every if r.data.tags.get("compodiff.kind") == "dagster_run"}
    runs = [r for r in every if r.data.tags.get("compodiff.kind") != "dagster_run"]
    by_asset = {r.data.tags["dagster.asset"]: r for r in runs}
    assert set(by_asset) == set(ASSETS) and len(runs) == len(ASSETS)
    # each step run is nested in the grouping run of its Dagster run: three Dagster runs, three groups
    assert set(groups) == {r.run_id for r in results} and len(every) == len(ASSETS) + 3
    assert all(r.data.tags["mlflow.parentRunId"] == groups[r.data.tags["dagster.run_id"]].info.run_id for r in runs)
    enc = by_asset["encoder"]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert enc.data.tags["dagster.run_id"] == result_of(results, "encoder").run_id
    assert enc.data.tags["params.hash"] == project.params.digest()
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", enc.data.tags["git.commit"])
    assert by_asset["world_pairs"].data.tags["dagster.partition"] == "s00,s01"
    assert enc.data.params["encoder.train.steps"] == "4"
    assert "t2i_R_at_10" in enc.data.metrics and "loss" in enc.data.metrics
    stage2 = by_asset["stage2"]
    assert stage2.data.params["training.stage2.mix"] == "(0.3, 0.3, 0.4)"
    assert "loss" in stage2.data.metrics and "lr" in stage2.data.metrics
    assert any(k.startswith("system/") for k in stage2.data.metrics)  # system metrics sampled
    kept = json.loads((root / "metrics" / "filter.json").read_text())["coverage"]["kept"]["counts"]
    logged = by_asset["filtered_triplets"].data.metrics
    assert {f"kept.{k}": float(n) for k, n in kept.items()}.items() <= logged.items()
    history = client.get_metric_history(stage2.info.run_id, "loss")
    assert len(history) >= 2  # per training step, not just the final value
    lm = project.params.caption_triplets.llm
    pretrain = client.get_metric_history(by_asset["llm_adapter"].info.run_id, "pretrain.loss")
    lora = client.get_metric_history(by_asset["llm_adapter"].info.run_id, "lora.loss")
    assert [m.step for m in pretrain] == [0, lm.lm.steps - 1]  # the LM's curves too, LoRA's after the base's
    assert [m.step for m in lora] == [lm.lm.steps, lm.lm.steps + lm.lora.steps - 1]
    # the alias moves in the champion step, after the benchmark: its version is the champion run's model
    champion = json.loads((root / "data" / "champion.json").read_text())
    for name in ("compodiff-stage2", "combiner"):
        version = client.get_model_version_by_alias(name, "champion")
        assert version.run_id == by_asset["champion"].info.run_id and str(version.version) == champion[name]["version"]
        logged = client.get_logged_model(champion[name]["model_id"])  # an MLflow 3 logged model
        linked = {m.key: m.value for m in logged.metrics}  # with the benchmark figures it was chosen on
        assert linked["world_mAP_at_10"] == pytest.approx(champion[name]["mAP@10"])
    assert "compodiff-stage1" not in {m.name for m in client.search_registered_models()}


@pytest.mark.slow  # the whole tiny graph, or a full DVC / lifecycle round trip
def test_the_champion_pyfunc_answers_composed_queries_as_the_pipeline_does(materialized):
    """`mlflow.pyfunc.load_model("models:/compodiff-stage2@champion")` on real MLflow, in this project."""
    import numpy as np
    import pandas as pd

    from compodiff.checkpoint import load_checkpoint
    from compodiff.combiner import load_combiner
    from compodiff.encoders import load_encoder
    from compodiff.pipeline import CompoDiffPipeline

    root, project, _ = materialized
    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
    b = project.params.benchmark
    enc = load_encoder(project.params.encoder.model, project.params.encoder.pretrained, root=root)
    ref = np.random.default_rng(0).standard_normal((3, enc.embed_dim)).astype(np.float32)
    texts = ["make the circle red", "add a star", "remove the square"]
    frame = pd.DataFrame({"reference": list(ref), "instruction": texts, "negative": ["", "a blue star", ""]})
    model = mlflow.pyfunc.load_model("models:/compodiff-stage2@champion")
    got = model.predict(frame)
    pipe = CompoDiffPipeline(load_checkpoint(root / "data" / "stage2" / "denoiser.safetensors"), enc)
    want = pipe.compose(ref, texts, ["", "a blue star", ""], w_image=b.w_image, w_text=b.w_text, steps=b.steps,
                        seed=0, eta=b.eta, mix_reference=b.mix_reference).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    ids = model.predict(frame, params={"k": 5})
    size = json.loads((root / "data" / "faiss_index" / "gallery.json").read_text())["size"]
    assert ids.shape == (3, 5) and 0 <= ids.min() and ids.max() < size
    comb = mlflow.pyfunc.load_model("models:/combiner@champion").predict(frame[["reference", "instruction"]])
    import torch

    with torch.no_grad():
        direct = load_combiner(root / "data" / "combiner" / "combiner.safetensors")(torch.from_numpy(ref),
                                                                                    enc.encode_text(texts))
    np.testing.assert_allclose(comb, direct.numpy(), rtol=1e-5, atol=1e-6)


def test_a_missing_upstream_fails_clearly(tmp_path):
    root = copy_project(tmp_path)
    project = build(root)
    with pytest.raises(Exception, match="encoder failed"):
        materialize(project, dg.DagsterInstance.ephemeral(), select={"encoder"}, log=lambda m: None)


LANE_SELECT = "world_pairs,encoder,caption_pool,llm_adapter,world_benchmark,gallery_features,pair_features,stage1"


def _steps_of_run(home: Path) -> tuple[str, dict[str, tuple[float, float]]]:
    """The lifecycle's one run in the instance at ``home``: its id and each step's (start, end) times."""
    instance = dg.DagsterInstance.from_config(str(home))
    runs = instance.get_runs()
    assert len(runs) == 1, [r.job_name for r in runs]
    spans: dict = {}
    for e in instance.all_logs(runs[0].run_id):
        kind = e.dagster_event.event_type_value if e.dagster_event else None
        if kind in ("STEP_START", "STEP_SUCCESS"):
            start, end = spans.get(e.step_key, (None, None))
            spans[e.step_key] = (e.timestamp, end) if kind == "STEP_START" else (start, e.timestamp)
    return runs[0].run_id, spans


def _weights(root: Path) -> dict:
    from safetensors.torch import load_file

    files = [root / "data" / rel for rel in ("encoder/open_clip_model.safetensors",
                                             "llm/adapter/adapter_model.safetensors", "llm/base/model.safetensors")]
    files += sorted((root / "data" / "stage1").glob("*.safetensors"))
    assert len(files) > 3, "stage 1 saved its weights"
    return {f"{f.relative_to(root)}:{k}": v for f in files for k, v in load_file(f).items()}


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="the side lane needs a core beside the main chain")
@pytest.mark.slow  # the whole tiny graph, or a full DVC / lifecycle round trip
def test_lifecycle_is_one_dagster_run_whose_models_do_not_depend_on_what_ran_beside(tmp_path):
    """One run on the multiprocess executor, the caption LM beside the world CLIP; then the same selection one
    step at a time in another copy: every trained weight is bit-identical."""
    import torch

    cli_path = str(ROOT / ".venv" / "bin" / "compodiff")
    beside = copy_project(tmp_path / "beside")
    env = env_for(beside)
    out = run([cli_path, "lifecycle", "--select", LANE_SELECT], beside, env)
    assert "Dagster run(s): " in out
    run_id, spans = _steps_of_run(Path(env["DAGSTER_HOME"]))
    assert set(LANE_SELECT.split(",")) <= set(spans)
    assert all(end is not None for _, end in spans.values()), spans
    lm, enc = spans["llm_adapter"], spans["encoder"]
    overlap = lambda a, b: a[0] < b[1] and b[0] < a[1]  # noqa: E731
    assert overlap(spans["caption_pool"], enc) or overlap(lm, enc) or overlap(spans["world_benchmark"], enc)
    # at most one step of each lane at a time (the tag concurrency limits)
    for lane in ("main", "side"):
        steps = [spans[n] for n in LANE_SELECT.split(",") if (lane == "side") == registry.step(n).side_lane]
        assert not any(overlap(a, b) for i, a in enumerate(steps) for b in steps[i + 1:]), lane
    instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
    for name in LANE_SELECT.split(","):
        event = instance.get_latest_materialization_event(dg.AssetKey(name))
        assert event is not None and event.run_id == run_id, name

    alone = copy_project(tmp_path / "alone")
    run([cli_path, "lifecycle", "--serial", "--select", LANE_SELECT], alone, env_for(alone))
    _, serial_spans = _steps_of_run(alone / ".dagster_home")
    steps = sorted(serial_spans.values())
    assert all(a[1] <= b[0] for a, b in zip(steps, steps[1:])), "--serial runs one step at a time"
    mine, theirs = _weights(beside), _weights(alone)
    assert mine.keys() == theirs.keys() and len(mine) > 50
    for k in mine:
        assert torch.equal(mine[k], theirs[k]), k

    # a side-lane step that fails fails the run with its name; what the main chain wrote stays
    adapter = (beside / "data" / "llm" / "manifest.json").read_text()
    params = (beside / "params.yaml").read_text().replace("seed_triplets: null", "seed_triplets: /nonexistent.jsonl")
    (beside / "params.yaml").write_text(params)
    failed = subprocess.run([cli_path, "lifecycle", "--select", "llm_adapter,world_benchmark,gallery_features"],
                            cwd=beside, env=env, capture_output=True, text=True, timeout=600)
    assert failed.returncode == 1
    assert "llm_adapter failed (Dagster run" in failed.stderr
    assert (beside / "data" / "llm" / "manifest.json").read_text() == adapter


def test_the_lifecycle_job_launched_anywhere_covers_every_shard_with_the_lanes_limits(tmp_path):
    """`dagster job execute -j lifecycle` or the UI's launch make the run `compodiff lifecycle` makes."""
    project = build(copy_project(tmp_path))
    job = project.defs.resolve_job_def("lifecycle")
    shards = project.params.world.shards
    assert job.tags["dagster/asset_partition_range_start"] == shards[0]
    assert job.tags["dagster/asset_partition_range_end"] == shards[-1]
    config = job.get_run_config_for_partition_key(shards[0])["execution"]["config"]
    assert config["tag_concurrency_limits"] == [{"key": "compodiff/lane", "value": "main", "limit": 1},
                                                {"key": "compodiff/lane", "value": "side", "limit": 1}]
    keys = {k.to_user_string() for k in job.asset_layer.executable_asset_keys}
    assert keys == set(ASSETS) - {"image_triplets", "real_benchmark"}
    lanes = {n.name: n.tags.get("compodiff/lane") for n in job.graph.nodes if n.name in keys}
    assert {n for n, lane in lanes.items() if lane == "side"} == {"caption_pool", "llm_adapter", "llm_triplets",
                                                                  "world_benchmark"}
    assert all(lane in ("main", "side") for lane in lanes.values())


def test_each_partition_of_a_one_run_range_reports_its_own_numbers(tmp_path):
    """Dagster copies a range run's one materialization to every partition: the totals say they are the
    run's, and each partition's own count and row count come as that partition's observation."""
    root = copy_project(tmp_path)
    project = build(root)
    instance = dg.DagsterInstance.ephemeral()
    materialize(project, instance, select={"world_pairs"}, log=lambda m: None)
    per_shard = project.params.world.pairs_per_shard
    shards = list(project.params.world.shards)
    key = dg.AssetKey("world_pairs")
    seen = {}
    for record in instance.fetch_observations(key, limit=10).records:
        obs = record.asset_observation
        seen[obs.partition] = {k: v.value for k, v in obs.metadata.items()}
    assert sorted(seen) == shards
    assert all(m["count"] == per_shard and m["dagster/row_count"] == per_shard for m in seen.values())
    for shard in shards:
        records = instance.fetch_materializations(dg.AssetRecordsFilter(key, asset_partitions=[shard]), limit=1)
        mat = records.records[0].asset_materialization
        assert mat.metadata["run.count"].value == per_shard * len(shards) and "count" not in mat.metadata
        assert mat.metadata["run.rows"].value == per_shard * len(shards) and "dagster/row_count" not in mat.metadata


def test_dagster_definitions_validate(tmp_path):
    """What `dagster dev` loads: jobs, partitions, checks and resources all valid."""
    root = copy_project(tmp_path)
    out = run([str(DAGSTER), "definitions", "validate", "-m", "orchestration.definitions"], root, env_for(root))
    assert "error" not in out.lower()


def test_dagster_cli_string_selection_works(tmp_path):
    """The trap of shared/reference/mlops.md: with DVC's antlr 4.9 this selection crashes."""
    root = copy_project(tmp_path)
    run([str(DAGSTER), "asset", "materialize", "-m", "orchestration.definitions", "--select", "world_pairs",
         "--partition", "s01"], root, env_for(root))
    assert (root / "data" / "world_pairs" / "s01.parquet").is_file()
    assert not (root / "data" / "world_pairs" / "s00.parquet").exists()


def dvc_project(tmp_path) -> tuple[Path, dict]:
    assert DVC.is_file(), "DVC is installed by ./setup.sh into .venv-dvc"
    root = copy_project(tmp_path)
    env = env_for(root)
    run(["git", "init", "-q"], root, env)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A"], root, env)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"], root, env)
    assert (root / ".dvc" / "config").is_file(), "a clone is a DVC repository: .dvc/config is tracked"
    (Path(env["DAGSTER_HOME"]) / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")  # as setup.sh
    return root, env


def test_dvc_dag_is_the_dagster_asset_graph(tmp_path):
    root, env = dvc_project(tmp_path)
    dot = run([str(DVC), "dag", "--dot"], root, env)
    strip = lambda s: s.strip().strip('"').split("@")[0]  # noqa: E731  world_pairs@s00 -> world_pairs
    dvc_edges = {(strip(a), strip(b)) for a, b in re.findall(r'("?[\w@.\-/]+"?)\s*->\s*("?[\w@.\-/]+"?)', dot)}
    dvc_nodes = {strip(n) for n in re.findall(r'^\s*("?[\w@.\-/]+"?)\s*;?\s*$', dot, re.M)} | \
        {n for e in dvc_edges for n in e}
    project = build(root)
    graph = project.defs.resolve_asset_graph()
    dagster_nodes = {k.to_user_string() for k in graph.get_all_asset_keys()}
    dagster_edges = {(p.to_user_string(), k.to_user_string())
                     for k in graph.get_all_asset_keys() for p in graph.get(k).parent_keys}
    assert dvc_nodes - {"digraph", "strict"} == dagster_nodes
    assert dvc_edges == dagster_edges


@pytest.mark.slow  # the whole tiny graph, or a full DVC / lifecycle round trip
def test_dvc_repro_exp_run_metrics_diff_push_and_pull(tmp_path):
    root, env = dvc_project(tmp_path)
    run([str(DVC), "repro", "-q"], root, env, timeout=1500)
    first = json.loads((root / "metrics" / "encoder.json").read_text())
    assert (root / "data" / "encoder" / "open_clip_model.safetensors").is_file()
    assert json.loads((root / "metrics" / "benchmark.json").read_text())["compodiff_stage2"]["mAP@10"] >= 0
    assert "up to date" in run([str(DVC), "status"], root, env).lower()
    # what DVC built is a materialization in the project's Dagster instance, with the step's metadata
    instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
    event = instance.get_latest_materialization_event(dg.AssetKey("stage2"))
    assert event is not None and event.asset_materialization.metadata["orchestrator"].value == "dvc"
    assert "final_loss" in event.asset_materialization.metadata
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    run(git + ["add", "-A"], root, env)
    run(git + ["commit", "-qm", "repro"], root, env)
    dagster_sees_what_dvc_built_and_what_a_change_makes_stale(root, env)
    # a dry run runs nothing and names the stages a changed parameter would rerun first (`dvc exp run --dry`
    # itself fails in DVC 3.67 on any chain of stages: its temporary workspace has no outputs checked out)
    assert not re.findall(r"Running stage '([^']+)'", run([str(DVC), "repro", "--dry"], root, env))
    params = (root / "params.yaml").read_text()
    edited = yaml.safe_load(params)
    edited["combiner"]["steps"] = 6
    (root / "params.yaml").write_text(yaml.safe_dump(edited, sort_keys=False))
    dry = run([str(DVC), "repro", "--dry"], root, env)
    assert re.findall(r"Running stage '([^']+)'", dry) == ["combiner"], dry
    assert json.loads((root / "metrics" / "combiner.json").read_text())["steps"] != 6
    (root / "params.yaml").write_text(params)
    # an experiment with one parameter changed reruns only what reads it
    run([str(DVC), "exp", "run", "-q", "-S", "combiner.steps=6"], root, env, timeout=900)
    combiner = json.loads((root / "metrics" / "combiner.json").read_text())
    assert combiner["steps"] == 6
    assert json.loads((root / "metrics" / "encoder.json").read_text()) == first  # upstream not rerun
    shown = json.loads(run([str(DVC), "metrics", "show", "--json"], root, env))
    files = {f for rev in shown.values() for f in rev["data"]}
    assert files == {"metrics/headline.json"}, files  # the headline only, not every record of every step
    run([str(DVC), "metrics", "diff", "HEAD"], root, env)
    assert re.search(r'"steps":\s*6', run([str(DVC), "exp", "show", "--json"], root, env))
    assert "combiner.steps" in run([str(DVC), "params", "diff", "HEAD"], root, env)
    # push to a local remote, lose the outputs, pull them back
    # the tracked default remote is a folder in the project; a user points it elsewhere in config.local
    assert "storage" in run([str(DVC), "remote", "list"], root, env)
    run([str(DVC), "remote", "modify", "--local", "storage", "url", str(tmp_path / "remote")], root, env)
    run([str(DVC), "push", "-q"], root, env)
    weights = root / "data" / "stage2" / "denoiser.safetensors"
    before = weights.read_bytes()
    shutil.rmtree(root / "data" / "stage2")
    shutil.rmtree(root / "data" / "encoder")
    shutil.rmtree(root / ".dvc" / "cache")  # only the remote holds them now
    run([str(DVC), "pull", "-q"], root, env)
    assert any((tmp_path / "remote").rglob("*")) and not (root / ".dvc-storage").exists()
    assert weights.read_bytes() == before
    assert (root / "data" / "encoder" / "open_clip_model.safetensors").is_file()
    assert "up to date" in run([str(DVC), "status"], root, env).lower()
    # one stage rerun alone with a changed param: Dagster marks the steps that read it stale, as after its own run
    edited = yaml.safe_load((root / "params.yaml").read_text())
    edited["combiner"]["steps"] = 8
    (root / "params.yaml").write_text(yaml.safe_dump(edited, sort_keys=False))
    run([str(DVC), "repro", "-q", "-s", "combiner"], root, env, timeout=900)
    readers = {s.name for s in registry.STEPS if not s.sharded and "combiner" in registry.upstream(s.name)}
    with dagster_dev(root, env) as url:
        stale = stale_assets(url)
    assert readers and set(stale) == readers, stale
    # GraphQL gives the root cause: the upstream's new data version
    assert all(causes == ["has a new data version"] for causes in stale.values()), stale


STALE_QUERY = "{ assetNodes { assetKey { path } isPartitioned staleStatus staleCauses { reason } } }"


def stale_assets(url: str) -> dict[str, list[str]]:
    graphql(url, 'mutation { reloadRepositoryLocation(repositoryLocationName: "orchestration.definitions") '
                 "{ __typename } }", timeout=180)  # the reload restarts the code server: slow on a busy machine
    nodes = graphql(url, STALE_QUERY, timeout=180)["assetNodes"]
    return {n["assetKey"]["path"][-1]: [c["reason"] for c in n["staleCauses"]] for n in nodes
            if n["staleStatus"] == "STALE"}


def dagster_sees_what_dvc_built_and_what_a_change_makes_stale(root: Path, env: dict) -> None:
    """The Dagster UI's staleness (its GraphQL API, as the asset graph draws it) after `dvc repro`: nothing
    stale; a changed param makes stale exactly the step that reads it; a code change, the steps whose code
    closure holds the file (Dagster marks their downstream once they re-materialize with new data)."""
    from orchestration.code_deps import code_deps

    params = (root / "params.yaml").read_text()
    code = root / "orchestration" / "model_steps.py"
    source = code.read_text()
    with dagster_dev(root, env) as url:
        assert stale_assets(url) == {}
        edited = yaml.safe_load(params)
        edited["combiner"]["steps"] = 6
        (root / "params.yaml").write_text(yaml.safe_dump(edited, sort_keys=False))
        assert stale_assets(url) == {"combiner": ["has a new code version"]}
        (root / "params.yaml").write_text(params)
        code.write_text(source + "\n# a change\n")
        expected = {s.name for s in registry.STEPS if not s.sharded
                    and "orchestration/model_steps.py" in code_deps(f"orchestration.{s.module}", root)}
        assert expected and set(stale_assets(url)) == expected
        code.write_text(source)
        assert stale_assets(url) == {}


@pytest.mark.slow  # two DVC processes on one repository
def test_a_second_dvc_repro_while_one_runs_gets_the_lock_message_and_loses_nothing(tmp_path):
    from datagen.shards import read_shard

    root, env = dvc_project(tmp_path)
    cmd = [str(DVC), "repro", "encoder"]
    first = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not (root / ".dvc" / "tmp" / "rwlock").is_file() and time.time() < deadline:
        time.sleep(0.2)  # the first is inside a stage from here
    time.sleep(2)
    second = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=1200)
    out, _ = first.communicate(timeout=1200)
    answers = {"first": (first.returncode, out), "second": (second.returncode, second.stdout + second.stderr)}
    # DVC does not queue: whichever asks for the repository or a stage's lock while the other holds it stops,
    # and says so (the first, too, when it comes back for the repository lock between its stages)
    failed = {k: v for k, v in answers.items() if v[0] != 0}
    assert failed, answers
    assert all("lock" in text.lower() or "is busy" in text.lower() for _, text in failed.values()), failed
    # nothing is lost: every shard written is whole, and a rerun completes what was stopped
    for shard in (root / "data" / "world_pairs").glob("*.parquet"):
        read_shard(shard)
    run(cmd, root, env, timeout=1200)
    assert "up to date" in run([str(DVC), "status", "encoder"], root, env).lower()
    assert (root / "data" / "encoder" / "open_clip_model.safetensors").is_file()
    assert not [p for p in (root / "data").rglob("*") if p.name.endswith((".tmp", ".old"))]


@pytest.mark.slow  # the whole tiny graph, or a full DVC / lifecycle round trip
def test_triplet_features_reuse_the_filters_image_embeddings_exactly(materialized):
    import numpy as np

    from compodiff.encoders import load_encoder
    from compodiff.feature_store import load_features
    from datagen.shards import decode_png, read_shard

    root, project, _ = materialized
    layout = project.resources["project"].layout()
    enc = load_encoder(project.params.encoder.model, project.params.encoder.pretrained, root=root)
    arrays, texts, _ = load_features(layout.triplet_features, enc.embed_dim)
    pairs = read_shard(layout.filtered_triplets / "pairs.parquet", ["id", "reference_png", "target_png"]).to_pydict()
    assert texts["id"] == pairs["id"] and len(pairs["id"]) > 0
    made, made_ids, _ = load_features(layout.filtered_triplets / "image_embeddings.npz", enc.embed_dim)
    assert made_ids["id"] == pairs["id"]
    for key in ("reference", "target"):
        np.testing.assert_array_equal(arrays[key], made[key])  # taken over, not encoded again
        fresh = enc.encode_images(np.stack([decode_png(b) for b in pairs[f"{key}_png"]])).numpy()
        np.testing.assert_allclose(arrays[key], fresh, rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # the whole tiny graph, or a full DVC / lifecycle round trip
def test_compodiff_search_prints_results_and_writes_a_contact_sheet(materialized):
    root, _, _ = materialized
    out = run([str(ROOT / ".venv" / "bin" / "compodiff"), "search", "--gallery-item", "0", "--text",
               "have a star instead of the red circle", "--negative", "a blue heart", "--k", "3", "--sheet",
               str(root / "sheet.png")], root, env_for(root))
    ranks = re.findall(r"^\s+(\d)\s+gallery\s+(\d+)\s+score\s+([-\d.]+)$", out, re.M)
    assert [r[0] for r in ranks] == ["1", "2", "3"]
    scores = [float(r[2]) for r in ranks]
    assert scores == sorted(scores, reverse=True)
    from PIL import Image

    assert Image.open(root / "sheet.png").size[0] > 3 * 128
    bad = subprocess.run([str(ROOT / ".venv" / "bin" / "compodiff"), "search", "--gallery-item", "999999", "--text",
                          "x"], cwd=root, env=env_for(root), capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--gallery-item 999999 is out of range: the gallery has" in bad.stderr


@pytest.mark.slow  # the whole tiny graph, or a full DVC / lifecycle round trip
def test_real_benchmarks_run_on_the_world_export_in_their_official_formats(materialized):
    """The real-benchmark step, pointed at the world benchmark exported as FashionIQ, CIRR, CIRCO and
    GeneCIS files, scores the same model through each loader and evaluator."""
    from dataclasses import replace

    from datagen.config import SourcesConfig
    from orchestration.layout import Layout
    from orchestration.params import load_params
    from orchestration.real_benchmark_steps import real_benchmark

    root, _, _ = materialized
    assert json.loads((root / "metrics" / "real" / "cirr.json").read_text()) == {"benchmark": "cirr",
                                                                                 "configured": False}
    exports = root / "data" / "world_benchmark" / "exports"
    sources = SourcesConfig(image_text_pairs="-", captions="-", fashioniq=str(exports / "fashioniq"),
                            cirr=str(exports / "cirr"), circo=str(exports / "circo"), genecis=str(exports / "genecis"))
    layout = Layout(root, replace(load_params(root / "params.yaml"), sources=sources))
    for name in ("fashioniq", "cirr", "circo", "genecis"):
        real_benchmark(layout, name, log=lambda m: None)
    m = {n: json.loads((root / "metrics" / "real" / f"{n}.json").read_text()) for n in ("fashioniq", "cirr", "circo",
                                                                                          "genecis")}
    assert set(m["fashioniq"]["per_category"]) == {"world"} and 0 <= m["fashioniq"]["R@10"] <= 100
    assert 0 <= m["cirr"]["R_subset@1"] <= 100 and 0 <= m["circo"]["mAP@10"] <= 100
    assert set(m["genecis"]["per_task"]) == {"change_object"} and m["genecis"]["mean_R@1"] is not None


@pytest.mark.slow  # the whole tiny graph, or a full DVC / lifecycle round trip
def test_llm_adapter_is_reproducible_whatever_the_process_drew_before(materialized, tmp_path):
    """An in-process run executes other steps before llm_adapter in one process: the world LM's
    initial weights and LoRA's come from the params' seed, so the same inputs give the same adapter."""
    import torch
    from safetensors.torch import load_file

    from orchestration import triplet_steps
    from orchestration.layout import Layout

    root, project, _ = materialized
    layout = project.resources["project"].layout()
    other = Layout(tmp_path, layout.params)
    shutil.copytree(layout.caption_pool, other.caption_pool)
    torch.rand(1000)  # a different global RNG state than the fixture's run had
    triplet_steps.llm_adapter(other, log=lambda m: None)
    for part in ("base/model.safetensors", "adapter/adapter_model.safetensors"):
        mine, theirs = load_file(other.llm_dir / part), load_file(layout.llm_dir / part)
        assert mine.keys() == theirs.keys()
        for k in mine:
            torch.testing.assert_close(mine[k], theirs[k], rtol=0, atol=0, msg=f"{part}: {k}")
