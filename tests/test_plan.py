"""`compodiff plan`: the paper profiles resolve, every model and dataset is named and checked."""

import subprocess
import sys
from pathlib import Path

import pytest

from compodiff.config import load_params

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
