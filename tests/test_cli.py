"""The CLI's answers to bad arguments and missing inputs: one line naming what, a non-zero exit."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.test_orchestration import copy_project, env_for

ROOT = Path(__file__).resolve().parents[1]
CLI = str(ROOT / ".venv" / "bin" / "compodiff")


def cli(args, cwd, env):
    return subprocess.run([CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_search_without_the_upstream_data_is_one_line(tmp_path):
    root = copy_project(tmp_path)
    out = cli(["search", "--text", "a red circle"], root, env_for(root))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith("error: shard not found") and "gallery.parquet" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_non_positive_k_and_steps_are_refused_by_name(tmp_path):
    root = copy_project(tmp_path)
    for flag in ("--k", "--steps"):
        out = cli(["search", "--text", "x", flag, "0"], root, env_for(root))
        assert out.returncode == 2 and f"argument {flag}: 0 is not a positive whole number" in out.stderr


def test_an_unknown_lifecycle_selection_is_an_error(tmp_path):
    root = copy_project(tmp_path)
    out = cli(["lifecycle", "--select", "world_pairs,nosuch"], root, env_for(root))
    assert out.returncode == 2 and "no asset(s) ['nosuch']" in out.stderr and "world_pairs" in out.stderr
    assert not (root / "data").exists()  # nothing ran


def test_profile_acts_on_the_project_it_is_run_in(tmp_path):
    here, elsewhere = copy_project(tmp_path / "here"), copy_project(tmp_path / "elsewhere")
    before = (elsewhere / "params.yaml").read_text()
    env = env_for(elsewhere)  # COMPODIFF_ROOT names the other project
    out = cli(["profile", "world"], here / "compodiff", env)  # run from a subfolder of this one
    assert out.returncode == 0, out.stderr
    assert (here / "params.yaml").read_text() == (here / "profiles" / "world.yaml").read_text()
    assert (elsewhere / "params.yaml").read_text() == before
    missing = cli(["profile", "nosuch"], here, env)
    assert missing.returncode == 2 and "no profile 'nosuch'; available:" in missing.stderr
