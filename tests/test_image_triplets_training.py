"""Public triplet datasets trained on end to end through Dagster, and the readers' oracle: the world's
filtered triplets exported in IP2P's and MegaPairs' layouts, read back, train the same stage-2 weights."""

import json
import shutil

import dagster as dg
import mlflow
import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file

from compodiff.feature_store import load_features
from datagen.image_triplets.export import export_ip2p, export_megapairs
from orchestration import feature_steps, train_steps, triplet_source_steps
from orchestration.definitions import build
from orchestration.layout import Layout
from orchestration.lifecycle import materialize
from orchestration.params import load_params
from tests import triplet_fixtures as fx
from tests.test_orchestration import copy_project

pytestmark = pytest.mark.slow  # the tiny graph up to stage 1, then stage 2 several times

UPSTREAM = {"world_pairs", "caption_pool", "encoder", "keyword_triplets", "llm_adapter", "llm_triplets",
            "caption_triplets", "image_pairs", "filtered_triplets", "pair_features", "stage1"}


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    root = copy_project(tmp_path_factory.mktemp("triplets_project"))
    materialize(build(root), dg.DagsterInstance.ephemeral(), select=UPSTREAM, log=lambda m: None)
    return root


def _variant(upstream, dest, triplet_sources: dict):
    """A copy of the upstream project whose params mix in ``triplet_sources``."""
    shutil.copytree(upstream, dest, symlinks=True)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["triplet_sources"].update(triplet_sources)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dest


def test_every_format_is_read_converted_and_trained_on_through_dagster(upstream, tmp_path):
    sources = fx.all_sources(tmp_path / "datasets")
    sources["megapairs"]["weight"] = 3.0
    root = _variant(upstream, tmp_path / "project", sources)
    project = build(root)
    results = [o.result for o in materialize(project, dg.DagsterInstance.ephemeral(),
                                             select={"image_triplets", "triplet_features", "stage2"},
                                             log=lambda m: None)]
    assert all(r.success for r in results)
    meta = results[0].asset_materializations_for_node("image_triplets")[0].metadata
    fx_counts = {"ip2p": 6, "ip2p_parquet": 5, "megapairs": 4, "lasco": 4, "synthtriplets": 6, "cirr": 4,
                 "fashioniq": 9}
    assert meta["run.kept"].value == sum(fx_counts.values())
    assert all(meta[f"{s}.kept"].value == n for s, n in fx_counts.items())  # per source, in Dagster
    client = mlflow.MlflowClient(f"sqlite:///{root}/mlflow.db")
    run = client.search_runs([client.get_experiment_by_name("compodiff").experiment_id],
                             "tags.`dagster.asset` = 'image_triplets'")[0]
    assert run.data.metrics["lasco.kept"] == 4 and run.data.metrics["read"] == sum(fx_counts.values())  # and MLflow
    layout = Layout(root, load_params(root / "params.yaml"))
    _, texts, manifest = load_features(layout.triplet_features)
    assert {s: manifest["per_source"][s] for s in fx_counts} == fx_counts and manifest["per_source"]["generated"] > 0
    share = json.loads(layout.training_metrics.read_text())["stage2"]["triplet_source_share"]
    assert share["megapairs"] == pytest.approx(3 / 10) and share["generated"] == pytest.approx(1 / 10)
    assert share["cirr"] == pytest.approx(1 / 10) and sum(share.values()) == pytest.approx(1)


def _train(root) -> tuple[dict, dict]:
    layout = Layout(root, load_params(root / "params.yaml"))
    for name in ("ip2p", "megapairs"):
        triplet_source_steps.image_triplets(layout, name, log=lambda m: None)
    feature_steps.triplet_features(layout, log=lambda m: None)
    train_steps.stage2(layout, log=lambda m: None)
    arrays, texts, _ = load_features(layout.triplet_features)
    return {**arrays, "instruction": np.array(texts["instruction"])}, load_file(
        layout.stage_dir("stage2") / "denoiser.safetensors")


def test_the_world_exported_in_public_layouts_trains_the_same_weights_as_the_direct_path(upstream, tmp_path):
    # the direct path encodes the filtered images, as a public source's path must (no filter embeddings)
    direct_root = _variant(upstream, tmp_path / "direct", {})
    (direct_root / "data" / "filtered_triplets" / "image_embeddings.npz").unlink()
    features, weights = _train(direct_root)
    pairs = direct_root / "data" / "filtered_triplets" / "pairs.parquet"
    for name, export in (("ip2p", export_ip2p), ("megapairs", export_megapairs)):
        out = export(pairs, tmp_path / f"export_{name}")
        path = out / "megapairs.jsonl" if name == "megapairs" else out
        root = _variant(upstream, tmp_path / name, {"generated_weight": 0.0, name: {"path": str(path)}})
        got_features, got_weights = _train(root)
        for key in ("reference", "target", "instruction"):
            np.testing.assert_array_equal(got_features[key], features[key], err_msg=f"{name}: {key}")
        assert got_weights.keys() == weights.keys()
        for key in weights:
            np.testing.assert_array_equal(got_weights[key], weights[key], err_msg=f"{name}: {key}")  # bit-equal
    # and the comparison can fail: one instruction changed in the export changes the weights
    prompt = tmp_path / "export_ip2p" / "0000000" / "prompt.json"
    prompt.write_text(json.dumps({**json.loads(prompt.read_text()), "edit": "something else entirely"}))
    shutil.rmtree(tmp_path / "ip2p")
    root = _variant(upstream, tmp_path / "ip2p",
                    {"generated_weight": 0.0, "ip2p": {"path": str(tmp_path / "export_ip2p")}})
    _, changed = _train(root)
    assert any(not np.array_equal(changed[k], weights[k]) for k in weights)
