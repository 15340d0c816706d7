"""Fault campaign: kill -9 long steps at random points, rerun them, compare with an uninterrupted run.

On a copy of the project (the tiny profile by default) every step runs once uninterrupted through the
command DVC's stages run (``compodiff run``), the reference. A second copy runs the same steps; each
faulted step is started through an orchestrator (``dvc repro`` or ``dagster asset materialize``),
killed with SIGKILL (the whole process group) after a seeded random fraction of its reference time,
inspected (every output that exists must be whole: readable parquet, npz, safetensors, JSON), rerun
through the same orchestrator to completion and compared with the reference: tables, arrays and
tensors equal (``--atol`` for training weights; 0 by default, for bit-equal), JSON equal once timings
and the step a resumed training restarted at are dropped. Temp files left under data/ and MLflow runs
left RUNNING are counted. The result is one
JSON (``--out``), which ``compodiff docs`` turns into the reliability section of docs/results.md.

  .venv/bin/python tools/fault_campaign.py --seeds 1 --window 7 --out benchmarks/results/faults_tiny.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from compodiff.atomic import write_json  # noqa: E402
from compodiff.profiles import render  # noqa: E402
from orchestration import registry  # noqa: E402

FAULTED = ("world_pairs", "encoder", "keyword_triplets", "llm_adapter", "llm_triplets", "image_pairs",
           "pair_features", "stage1", "stage2", "combiner", "faiss_index", "benchmark_metrics")
SKIP = ("champion", "ablations", "real_benchmark")  # not on the path of the faulted steps
TIMING = ("seconds", "per_second", "elapsed", "url", "run_id", "mtime", "wall", "duration")
RESUME = ("resumed_from",)  # the step a resumed training restarted at: a record of the fault, not of the output
TEMP_MARKS = (".tmp", ".old")
START = {"cli": 0.0, "dvc": 2.0, "dagster": 8.0}  # seconds an orchestrator adds before the step starts


def project_copy(dest: Path, profile: str) -> Path:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    for rel in listed:
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    (dest / ".venv").symlink_to(ROOT / ".venv")
    (dest / ".venv-dvc").symlink_to(ROOT / ".venv-dvc")
    (dest / "params.yaml").write_text(render(ROOT / "profiles" / f"{profile}.yaml"))
    git = ["git", "-c", "user.name=campaign", "-c", "user.email=campaign@localhost"]
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "campaign"], cwd=dest, check=True)
    (dest / ".dagster_home").mkdir()
    return dest


def env_for(root: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPODIFF_", "DAGSTER_"))}
    return {**env, "COMPODIFF_ROOT": str(root), "DAGSTER_HOME": str(root / ".dagster_home")}


def items(step: registry.Step, params: dict) -> list[str | None]:
    if not step.sharded:
        return [None]
    return list(params["world"]["shards"]) if isinstance(step.shards, str) else list(step.shards)


def command(orchestrator: str, step: str, item: str | None) -> list[str]:
    if orchestrator == "cli":
        return [".venv/bin/compodiff", "run", step, *(["--shard", item] if item else [])]
    if orchestrator == "dvc":
        return [".venv-dvc/bin/dvc", "repro", "--single-item", f"{step}@{item}" if item else step]
    if orchestrator == "dagster":
        return [".venv/bin/dagster", "asset", "materialize", "-m", "orchestration.definitions", "--select", step,
                *(["--partition", item] if item else [])]
    raise ValueError(orchestrator)


def run(root: Path, cmd: list[str], timeout: float = 1800) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=root, env=env_for(root), capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return time.perf_counter() - t0


def run_cli(root: Path, step: registry.Step, item: str | None) -> float:
    return run(root, command("cli", step.name, item))


def run_here(root: Path, step: registry.Step, item: str | None) -> float:
    """The step function in this process, as ``compodiff run`` calls it (without its MLflow run)."""
    from orchestration.cores import use_cores
    from orchestration.layout import Layout
    from orchestration.params import load_params

    t0 = time.perf_counter()
    layout = Layout(root, load_params(root / "params.yaml"))
    use_cores()  # a fresh process's thread count: the step before may have set its own
    fn = registry.function(step)
    if step.training:
        fn(layout, on_metrics=None)
    elif step.sharded:
        fn(layout, item)
    else:
        fn(layout)
    return time.perf_counter() - t0


def killed(root: Path, cmd: list[str], after: float) -> bool:
    """Start ``cmd`` in its own process group and SIGKILL the group after ``after`` seconds; False if it
    finished first."""
    proc = subprocess.Popen(cmd, cwd=root, env=env_for(root), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        proc.wait(timeout=after)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return True


def outputs(root: Path, step: registry.Step, item: str | None, params: dict) -> list[Path]:
    def path(t: str) -> Path:
        return root / t.replace("${data_dir}", params["data_dir"]).replace("${metrics_dir}", params["metrics_dir"]) \
            .replace("${item}", item or "")
    return [path(t) for t in (*step.outputs, *step.records, *step.metrics)]


def files(paths: list[Path]) -> list[Path]:
    out = []
    for p in paths:
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and not any(m in f.name for m in TEMP_MARKS))
        elif p.is_file():
            out.append(p)
    return out


def _drop_timing(value):
    if isinstance(value, dict):
        return {k: _drop_timing(v) for k, v in value.items() if not any(t in k for t in TIMING + RESUME)}
    if isinstance(value, list):
        return [_drop_timing(v) for v in value]
    return value


def content(path: Path, root: Path | None = None):
    """What a file holds, in a form compared exactly (timings dropped, the project's own path as
    ``<root>``: the two copies live in different folders); raises if the file is not whole."""
    import numpy as np

    suffix = path.suffix
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        meta = {k.decode(): _drop_timing(json.loads(v)) if k.startswith(b"compodiff") else None
                for k, v in (table.schema.metadata or {}).items()}
        return ("table", table.replace_schema_metadata(None).to_pydict(), meta)
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return ("arrays", {k: z[k] for k in z.files if k != "manifest"},
                    _drop_timing(json.loads(str(z["manifest"]))) if "manifest" in z.files else None)
    if suffix == ".safetensors":
        from safetensors.numpy import load_file

        return ("arrays", load_file(path), None)
    if suffix == ".json":
        text = path.read_text()
        return ("json", _drop_timing(json.loads(text.replace(str(root), "<root>") if root else text)), None)
    if suffix == ".pt":
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True)
        return ("torch", state, None)
    data = path.read_bytes()
    return ("bytes", data.replace(str(root).encode(), b"<root>") if root else data, None)


def equal(a, b, atol: float) -> tuple[bool, float]:
    """(equal, largest absolute difference of floats)."""
    import numpy as np
    import torch

    if isinstance(a, torch.Tensor):
        a, b = a.numpy(), b.numpy() if isinstance(b, torch.Tensor) else b
    if isinstance(a, np.ndarray):
        if not isinstance(b, np.ndarray) or a.shape != b.shape or a.dtype != b.dtype:
            return False, float("inf")
        if a.dtype.kind == "f":
            diff = float(np.max(np.abs(a - b))) if a.size else 0.0
            return diff <= atol, diff
        return bool(np.array_equal(a, b)), 0.0
    if isinstance(a, dict):
        if not isinstance(b, dict) or a.keys() != b.keys():
            return False, float("inf")
        results = [equal(a[k], b[k], atol) for k in a]
        return all(r[0] for r in results), max([r[1] for r in results], default=0.0)
    if isinstance(a, (list, tuple)):
        if not isinstance(b, (list, tuple)) or len(a) != len(b):
            return False, float("inf")
        results = [equal(x, y, atol) for x, y in zip(a, b)]
        return all(r[0] for r in results), max([r[1] for r in results], default=0.0)
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True, 0.0  # NaN in both (a value the step could not measure)
    return a == b, 0.0


def temp_leaks(root: Path) -> list[str]:
    data = root / "data"
    return sorted(str(p.relative_to(root)) for p in data.rglob("*") if any(m in p.name for m in TEMP_MARKS)) \
        if data.is_dir() else []


def running_mlflow_runs(root: Path) -> int:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{root}/mlflow.db")
    exps = [e.experiment_id for e in client.search_experiments()]
    return len(client.search_runs(exps, "attributes.status = 'RUNNING'")) if exps else 0


def reference_times(ref: Path, order: list[tuple], params: dict) -> dict[tuple, float]:
    """Each step's seconds in an existing run, from its MLflow step runs (the latest finished one of each;
    a run over several shards counts a shard as its share)."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{ref}/mlflow.db")
    exps = [e.experiment_id for e in client.search_experiments()]
    times = {}
    for s, item in order:
        runs = client.search_runs(exps, f"tags.`dagster.asset` = '{s.name}' and attributes.status = 'FINISHED'",
                                  order_by=["attributes.start_time DESC"])
        own = [r for r in runs if item is None or item in r.data.tags.get("dagster.partition", "").split(",")]
        if not own:
            raise SystemExit(f"--reference {ref}: no finished MLflow run of {s.name}{'[' + item + ']' if item else ''}")
        shards = own[0].data.tags.get("dagster.partition", "").split(",")
        times[(s.name, item)] = (own[0].info.end_time - own[0].info.start_time) / 1000 / len(shards)
    return times


def campaign(workdir: Path, profile: str, seeds: int, orchestrators: list[str], atol: float,
             window: float | None = None, reference: Path | None = None, faulted: tuple[str, ...] = FAULTED,
             log=print) -> dict:
    """``window``: kill within this many seconds of a step's start (plus the orchestrator's own start), and
    run the steps that are not faulted in this process (the same step functions, without a process start
    each); None: within the reference's time of that step, every step through the CLI. ``reference``: an
    existing run of the same code and profile (``compodiff lifecycle`` in a clone) is the uninterrupted
    run: its step times set the kill windows and the steps not faulted are copied from it, not rerun.
    ``faulted``: the steps to kill (a subset of FAULTED); the others run, or are copied, whole."""
    import yaml

    unknown = sorted(set(faulted) - set(FAULTED))
    if unknown:
        raise SystemExit(f"--steps {unknown}: not long steps of the campaign ({', '.join(FAULTED)})")

    hit = project_copy(workdir / "faulted", profile)
    params = yaml.safe_load((hit / "params.yaml").read_text())
    steps = [s for s in registry.STEPS if s.name not in SKIP]
    order = [(s, item) for s in steps for item in items(s, params)]
    times: dict[tuple, float] = {}

    def run_reference() -> None:
        for s, item in order:
            times[(s.name, item)] = step_run(ref, s, item)
            log(f"reference {s.name}{'[' + item + ']' if item else ''}: {times[(s.name, item)]:.1f}s")

    step_run = run_cli if window is None else run_here
    if reference is None:
        ref = project_copy(workdir / "reference", profile)
        run_reference()  # first: a fault's kill window is the reference's time of the step (or ``window``)
    else:
        ref = Path(reference).resolve()
        if yaml.safe_load((ref / "params.yaml").read_text()) != params:
            raise SystemExit(f"--reference {ref}: its params.yaml is not the {profile} profile's")
        times = reference_times(ref, order, params)
        # a step not faulted takes the reference's outputs: the faulted steps downstream then read exactly the
        # inputs the uninterrupted run had
        step_run = lambda root, s, item: snapshot(ref, s, item, params, root)  # noqa: E731
    rng = random.Random(0)
    records, n = [], 0
    for s in steps:
        targets = items(s, params)
        for item in targets:
            if s.name not in faulted or item != targets[0]:  # a sharded step is faulted in its first shard
                step_run(hit, s, item)
                continue
            for k in range(seeds):
                orchestrator = orchestrators[n % len(orchestrators)]
                n += 1
                budget = (times[(s.name, item)] if window is None else window) + START[orchestrator]
                after = rng.uniform(0.15, 1.0) * budget
                was_killed = killed(hit, command(orchestrator, s.name, item), after)
                whole, broken = True, []
                for f in files(outputs(hit, s, item, params)):
                    try:
                        content(f)
                    except Exception as err:  # noqa: BLE001 - any failure to read means a half-written file
                        whole, broken = False, [*broken, f"{f.relative_to(hit)}: {err}"[:200]]
                # a rerun on a busy machine may take several times the reference: the timeout only catches hangs
                rerun_s = run(hit, command(orchestrator, s.name, item), timeout=max(1800.0, 6 * budget))
                records.append({"step": s, "item": item, "seed": k, "orchestrator": orchestrator, "after": after,
                                "killed": was_killed, "whole": whole, "broken": broken, "rerun_s": rerun_s,
                                "snapshot": snapshot(hit, s, item, params, workdir / "snapshots" / str(n))})
                log(f"{s.name}{'[' + item + ']' if item else ''} seed {k} via {orchestrator}: killed after "
                    f"{after:.1f}s ({'killed' if was_killed else 'finished first'}), whole {whole}")
    faults = [compare(r, ref, hit, params, atol) for r in records]
    leaks = temp_leaks(hit)
    return {"run": "fault_campaign", "profile": profile, "seeds_per_step": seeds, "orchestrators": orchestrators,
            "atol": atol, "reference": "an existing lifecycle run" if reference else "run step by step here",
            "faulted_steps": [s for s in FAULTED if s in faulted],
            "faults": faults,
            "summary": {"injected": len(faults), "killed": sum(r["killed"] for r in faults),
                        "whole_after_kill": sum(r["outputs_whole_after_kill"] for r in faults),
                        "reruns_completed": sum(r["rerun_completed"] for r in faults),
                        "equal_to_reference": sum(r["equal_to_reference"] for r in faults),
                        "temp_files_left": len(leaks), "mlflow_runs_left_running": running_mlflow_runs(hit),
                        "items_lost": sum(not r["equal_to_reference"] for r in faults)},
            "temp_files_left": leaks}


def snapshot(root: Path, step, item, params: dict, dest: Path) -> Path:
    """A copy of the step's outputs under ``dest``: kept right after a rerun (later steps may rewrite shared
    records), or taken from the reference run."""
    for f in files(outputs(root, step, item, params)):
        target = dest / f.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target)
    return dest


def compare(r: dict, ref: Path, hit: Path, params: dict, atol: float) -> dict:
    s, item = r["step"], r["item"]
    same, worst, differing = True, 0.0, []
    expected = {f.relative_to(ref): f for f in files(outputs(ref, s, item, params))}
    got = {f.relative_to(r["snapshot"]): f for f in files(outputs(r["snapshot"], s, item, params))}
    if expected.keys() != got.keys():
        same, differing = False, sorted(str(x) for x in expected.keys() ^ got.keys())
    for rel in expected.keys() & got.keys():
        ok, diff = equal(content(expected[rel], ref), content(got[rel], hit), atol)
        worst = max(worst, diff)
        if not ok:
            same, differing = False, [*differing, str(rel)]
    return {"step": s.name, "item": item, "seed": r["seed"], "orchestrator": r["orchestrator"],
            "killed_after_s": round(r["after"], 2), "killed": r["killed"], "outputs_whole_after_kill": r["whole"],
            "broken": r["broken"], "rerun_completed": True, "rerun_s": round(r["rerun_s"], 1),
            "equal_to_reference": same, "max_abs_diff": worst, "differing": sorted(differing)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--seeds", type=int, default=1, help="kills per faulted step")
    ap.add_argument("--orchestrators", default="dvc,dagster", help="alternated over the faults")
    ap.add_argument("--atol", type=float, default=0.0)
    ap.add_argument("--window", type=float, help="kill within this many seconds of a step's start, and run the "
                                                  "steps not faulted in-process (default: within its reference "
                                                  "time, every step through the CLI)")
    ap.add_argument("--reference", help="an existing run of this code and profile to compare with, instead "
                                         "of running one (e.g. a clone after `compodiff lifecycle`)")
    ap.add_argument("--steps", default=",".join(FAULTED),
                    help="the steps to kill, comma-separated (default: every long step); the others run whole")
    ap.add_argument("--workdir", help="keep the two project copies here (default: a temp dir)")
    ap.add_argument("--out")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir) if args.workdir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        result = campaign(work, args.profile, args.seeds, args.orchestrators.split(","), args.atol, args.window,
                          args.reference, tuple(args.steps.split(",")))
    print(json.dumps(result["summary"], indent=2))
    if args.out:
        write_json(args.out, result)


if __name__ == "__main__":
    main()
