"""The world CLIP's training speed when the caption LM trains beside it, with OpenMP's idle threads spinning
(OpenMP's default) and sleeping (``OMP_WAIT_POLICY=PASSIVE``).

The lifecycle's lanes put the world CLIP (params: 2 threads) beside the LM (1 thread) on the machine's
cores; this measures what that costs, alone and beside, in one run so that the ratios compare like with
like. It trains in a temporary copy of the project's world data with ``--steps`` encoder steps.

  .venv/bin/python benchmarks/bench_shared_cores.py --root . --out benchmarks/results/shared_cores_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from report import report  # noqa: E402


def encoder_seconds(project: Path, root: Path, policy: str | None) -> float:
    env = {**os.environ, "COMPODIFF_ROOT": str(project)}
    env.pop("OMP_WAIT_POLICY", None)
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run([str(root / ".venv" / "bin" / "compodiff"), "run", "encoder"], env=env, cwd=project,
                         capture_output=True, text=True, check=True).stdout
    summary = json.loads(next(line for line in reversed(out.splitlines()) if line.startswith("{")))
    return summary["train_seconds"]


def beside_lm(project: Path, root: Path, policy: str | None) -> float:
    """The encoder's seconds while llm_adapter trains in its own process; the LM is stopped after."""
    env = {**os.environ, "COMPODIFF_ROOT": str(project)}
    lm = subprocess.Popen([str(root / ".venv" / "bin" / "compodiff"), "run", "llm_adapter"], env=env,
                          cwd=project, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(20)  # past the LM's start-up, into its training loop
        return encoder_seconds(project, root, policy)
    finally:
        lm.kill()
        lm.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=".", help="a project whose data/world_pairs and data/caption_pool exist")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--out")
    args = ap.parse_args()
    root = Path(args.root).resolve()
    with tempfile.TemporaryDirectory(prefix="shared_cores_") as tmp:
        project = Path(tmp)
        params = yaml.safe_load((root / "params.yaml").read_text())
        params["encoder"]["train"]["steps"] = args.steps
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        for name in ("world_pairs", "caption_pool"):
            shutil.copytree(root / "data" / name, project / "data" / name)
        seconds = {}
        for policy in (None, "PASSIVE"):
            label = policy or "spin (OpenMP default)"
            seconds[label] = {"alone": encoder_seconds(project, root, policy),
                              "beside the caption LM": beside_lm(project, root, policy)}
    spin, passive = seconds["spin (OpenMP default)"], seconds["PASSIVE"]
    report({"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                        "encoder_threads": params["encoder"]["train"]["threads"],
                        "lm_threads": params["caption_triplets"]["llm"]["threads"]},
            "encoder_steps": args.steps, "encoder_train_seconds": seconds,
            "beside_speedup_passive_over_spin": spin["beside the caption LM"] / passive["beside the caption LM"],
            "alone_cost_passive_over_spin": passive["alone"] / spin["alone"]}, args.out)


if __name__ == "__main__":
    main()
