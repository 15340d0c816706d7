"""A full disk, a killed writer and a second writer: the previous output stays whole, the error names the
path, nothing is left behind."""

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from compodiff.atomic import DiskFull, atomic_dir, write_json
from compodiff.feature_store import save_features
from compodiff.profiles import render
from orchestration.layout import Layout
from orchestration.params import load_params
from orchestration.step_lock import StepBusy, step_lock

ROOT = Path(__file__).resolve().parents[1]


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_keeps_the_previous_output_and_names_the_path(tmp_path, monkeypatch):
    path = write_json(tmp_path / "metrics.json", {"old": 1})
    monkeypatch.setattr(Path, "write_text", _enospc)
    with pytest.raises(DiskFull, match=f"no space left on the device writing {path}.*previous metrics.json is kept"):
        write_json(path, {"new": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"old": 1} and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]

    feats = save_features(tmp_path / "f.npz", {"a": np.ones((2, 3))}, {"id": ["x", "y"]}, {"kind": "t"})
    before = feats.read_bytes()
    monkeypatch.setattr(np, "savez", _enospc)
    with pytest.raises(DiskFull, match="f.npz"):
        save_features(feats, {"a": np.zeros((2, 3))}, {"id": ["x", "y"]}, {"kind": "t"})
    monkeypatch.undo()
    assert feats.read_bytes() == before

    out = tmp_path / "stage"
    with atomic_dir(out) as tmp:
        (tmp / "weights").write_text("v1")
    with pytest.raises(DiskFull, match="stage"):
        with atomic_dir(out) as tmp:
            (tmp / "weights").write_text("v2 partial")
            _enospc()
    assert (out / "weights").read_text() == "v1" and sorted(p.name for p in tmp_path.iterdir()) == [
        "f.npz", "metrics.json", "stage"]


def test_the_next_write_removes_what_a_killed_writer_left_and_keeps_a_live_ones(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()  # a pid that has exited
    leftovers = [tmp_path / f".metrics.json.{dead}.abc.tmp", tmp_path / f".stage.{dead}.xyz.tmp"]
    leftovers[0].write_text("half")
    leftovers[1].mkdir()
    live = tmp_path / f".metrics.json.{os.getppid()}.def.tmp"  # a writer still running
    live.write_text("in progress")
    write_json(tmp_path / "metrics.json", {"a": 1})
    with atomic_dir(tmp_path / "stage") as tmp:
        (tmp / "x").write_text("1")
    assert not any(p.exists() for p in leftovers) and live.exists()


def test_a_dir_swap_killed_between_its_renames_is_repaired_by_the_next_write(tmp_path):
    out = tmp_path / "stage"
    with atomic_dir(out) as tmp:
        (tmp / "w").write_text("v1")
    os.replace(out, tmp_path / ".stage.old")  # the first rename happened, the second did not
    with atomic_dir(out) as tmp:
        assert (out / "w").read_text() == "v1"  # the previous output is back in place meanwhile
        (tmp / "w").write_text("v2")
    assert (out / "w").read_text() == "v2" and not (tmp_path / ".stage.old").exists()


HOLD = """
import sys, time
from pathlib import Path
from orchestration.params import load_params
from orchestration.layout import Layout
from orchestration.step_lock import step_lock
layout = Layout(Path(sys.argv[1]), load_params(sys.argv[2]))
with step_lock(layout, "world_pairs", ["s00"]):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_second_writer_of_a_step_and_partition_fails_at_once_naming_the_holder(tmp_path):
    params = ROOT / "profiles" / "tiny.yaml"
    layout = Layout(tmp_path, load_params(params))
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), str(params)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StepBusy, match=rf"world_pairs\[s00\] is already running .*process {holder.pid}"):
            with step_lock(layout, "world_pairs", ["s00"]):
                pass
        with step_lock(layout, "world_pairs", ["s01"]):  # another partition is free
            pass
        (tmp_path / "params.yaml").write_text(render(params))
        (tmp_path / "dvc.yaml").write_text("stages: {}\n")
        cli = subprocess.run([str(ROOT / ".venv" / "bin" / "compodiff"), "run", "world_pairs", "--shard", "s00"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert cli.returncode == 2 and "world_pairs[s00] is already running" in cli.stderr
        assert not (tmp_path / "data" / "world_pairs" / "s00.parquet").exists()
    finally:
        holder.kill()  # SIGKILL: the lock goes with the process
        holder.wait()
    t0 = time.perf_counter()
    with step_lock(layout, "world_pairs", ["s00"]):
        assert time.perf_counter() - t0 < 1
