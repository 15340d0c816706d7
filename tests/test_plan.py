"""`compodiff plan`: the paper profiles resolve, every model and dataset is named and checked."""

import subprocess
import sys
from pathlib import Path

import pytest

from orchestration.params import load_params

ROOT = Path(__file__).resolve().parents[1]
PAPER = ("paper-vitl", "paper-vitl-t5", "paper-vitg")


@pytest.mark.parametrize("name", PAPER)
def test_paper_profiles_name_every_model(name):
    p = load_params(ROOT / "profiles" / f"{name}.yaml")
    assert p.encoder.train is None and p.encoder.model in ("ViT-L-14", "ViT-bigG-14")
    assert p.caption_triplets.llm.base_model == "facebook/opt-6.7b"
    assert p.caption_triplets.keyword.spacy == "en_core_web_sm"
    assert p.image_pairs.generator == "diffusers" and len(p.image_pairs.diffusers.checkpoints) == 4
    assert p.features.masks.startswith("clipseg:") and p.sources is not None
    assert p.clip_filter.sim_image == 0.70 and p.caption_triplets.keyword.window == (0.5, 0.7)
    assert (p.sources.text_encoder2 is not None) == (name == "paper-vitl-t5")


def test_plan_checks_paths_and_prints_the_steps():
    out = subprocess.run([sys.executable, "-m", "orchestration.cli", "plan", "--profile", "paper-vitl-t5"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stderr[-2000:]  # the datasets are not present
    assert "MISSING" in out.stdout and "/datasets/cirr" in out.stdout and "google/t5-v1_1-xl" in out.stdout
    assert "stage2" in out.stdout and "[128 shards]" in out.stdout
    tiny = subprocess.run([sys.executable, "-m", "orchestration.cli", "plan", "--profile", "tiny"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert tiny.returncode == 0 and "everything is available" in tiny.stdout


def test_plan_counts_each_triplet_source_from_its_annotations(tmp_path):
    from compodiff.config_schema import from_dict
    from compodiff.profiles import merge, resolve
    from orchestration.params import Params
    from orchestration.plan import triplet_sources
    from tests import triplet_fixtures as fx

    sources = fx.all_sources(tmp_path)
    sources["megapairs"]["weight"] = 2.0
    p = from_dict(Params, merge(resolve(ROOT / "profiles" / "tiny.yaml"), {"triplet_sources": sources}))
    rows = {what.split()[0]: (what, status, ok) for what, _, status, ok in triplet_sources(p, ROOT)}
    assert all(ok for _, _, ok in rows.values())
    assert rows["ip2p"][1] == "6 pairs in seeds.json" and rows["ip2p_parquet"][1] == "5 rows in 1 parquet files"
    assert rows["megapairs"][:2] == ("megapairs (weight 2)", "4 records")
    assert rows["lasco"][1] == "4 records in lasco_train.json"
    assert rows["synthtriplets"][1] == "2 tar shards, 3 samples in the first: ~6"
    assert rows["cirr"][1] == "4 CIRR train triplets" and rows["fashioniq"][1] == "9 FashionIQ train triplets"
    (tmp_path / "lasco" / "coco").rename(tmp_path / "elsewhere")
    rows = {what.split()[0]: (status, ok) for what, _, status, ok in triplet_sources(p, ROOT)}
    assert rows["lasco"] == (f"MISSING corpus {tmp_path / 'lasco' / 'coco'}", False)


@pytest.mark.parametrize("name", ["paper-synthtriplets", "paper-cirr-finetune"])
def test_the_public_triplet_profiles_name_their_sources_and_plan_checks_them(name):
    p = load_params(ROOT / "profiles" / f"{name}.yaml")
    assert p.triplet_sources.generated_weight == 0 and p.sources is not None
    configured = [s for s in ("synthtriplets", "cirr") if getattr(p.triplet_sources, s) is not None]
    assert configured == (["synthtriplets"] if name == "paper-synthtriplets" else ["cirr"])
    assert (p.training.stage2.init is not None) == (name == "paper-cirr-finetune")
    out = subprocess.run([sys.executable, "-m", "orchestration.cli", "plan", "--profile", name], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and "triplet sources (generated triplets weigh 0)" in out.stdout, out.stderr[-2000:]
    assert f"MISSING path /datasets/{'synthtriplets18m' if configured == ['synthtriplets'] else 'cirr'}" in out.stdout
    assert "image_triplets       [7 parts]" in out.stdout
