"""The house rules that a reader sees: the project speaks only of itself, its licence and its lock."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Words that narrate the work (sessions, rounds, the author's machine) rather than describe the project.
NARRATION = re.compile(r"\bsessions? [0-9]+|next session|this machine|next round|work rounds?|\bround [0-9]+\b|"
                       r"next time", re.IGNORECASE)
SWEEP_TAG = re.compile(r"\bEXP\b")


def tracked_text_files() -> list[Path]:
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    return [ROOT / n for n in names if (ROOT / n).suffix in {".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".txt", ""}
            and (ROOT / n).is_file() and n != "tests/test_house.py"]


def test_tracked_files_speak_only_of_the_project():
    hits = []
    for path in tracked_text_files():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for i, line in enumerate(text.splitlines(), 1):
            if NARRATION.search(line) or SWEEP_TAG.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()[:100]}")
    assert not hits, "tracked lines narrate the work instead of the project:\n" + "\n".join(hits)


def test_narration_pattern_catches_what_it_is_for():
    for line in ("as measured in session 12", "the next round should", "on this machine it took", "EXP 4 table"):
        assert NARRATION.search(line) or SWEEP_TAG.search(line), line
    for line in ("a round trip through DVC", "np.exp(x)", "dvc exp run", "the machine's speed"):
        assert not (NARRATION.search(line) or SWEEP_TAG.search(line)), line


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_the_lock_pins_every_dependency_that_set_up_installs():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]}
    pinned = {_name(line) for line in (ROOT / "requirements.lock").read_text().splitlines()
              if line and not line.startswith(" ") and not line.startswith("#")}
    assert wanted <= pinned, f"requirements.lock lacks {sorted(wanted - pinned)}: relock (see setup.sh)"
    dvc = (ROOT / "requirements-dvc.lock").read_text()
    assert re.search(r"^dvc==3\.", dvc, re.MULTILINE), "requirements-dvc.lock must pin dvc 3"


def test_licence_file_is_the_one_pyproject_names():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"]["text"] == "Apache-2.0"
    assert "Apache License" in (ROOT / "LICENSE").read_text() and "Version 2.0" in (ROOT / "LICENSE").read_text()


def test_dvc_yaml_is_the_registry_rendered():
    from orchestration.dvc_yaml import render

    assert (ROOT / "dvc.yaml").read_text() == render(), "dvc.yaml is stale: run `compodiff dvc-yaml`"


def test_every_step_lists_the_code_it_imports():
    """The bug this guards: a stage that misses a module it runs (stage2 without the denoiser) is not
    rerun by `dvc repro` after that module changes."""
    import yaml

    from orchestration.code_deps import code_deps

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    stage2 = stages["stage2"]["deps"]
    assert {"compodiff/denoiser.py", "compodiff/training.py", "compodiff/objectives.py"} <= set(stage2)
    bench = stages["benchmark_metrics"]["deps"]
    assert {"compodiff/pipeline.py", "compodiff/sampling.py", "compodiff/retrieval.py"} <= set(bench)
    assert "datagen/data/keyword_templates.txt" in code_deps("orchestration.triplet_steps")
    assert "orchestration/cli.py" not in code_deps("orchestration.eval_steps")


def test_the_steps_are_declared_once():
    from orchestration import registry
    from orchestration.definitions import project

    assets = {a.key.to_user_string() for a in project.assets}
    assert assets == set(registry.BY_NAME)
    for s in registry.STEPS:
        assert callable(registry.function(s)), s.name


def test_the_library_calls_no_private_torch_operator():
    """Private operators (torch.ops.<ns>._name, torch._C) may change in any torch release; the one
    the project measures (oneDNN's reordered linear weights) stays in benchmarks/cpu_prepack.py."""
    private = re.compile(r"torch\.ops\.\w+\._\w+|torch\._C\b")
    hits = [f"{path.relative_to(ROOT)}:{i}" for package in ("compodiff", "datagen", "orchestration")
            for path in sorted((ROOT / package).rglob("*.py"))
            for i, line in enumerate(path.read_text().splitlines(), 1) if private.search(line)]
    assert not hits, hits
    assert private.search((ROOT / "benchmarks" / "cpu_prepack.py").read_text())  # the pattern finds what it is for
