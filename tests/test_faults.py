"""The fault campaign on the tiny profile: every long step killed with SIGKILL at a random point, rerun
through DVC or Dagster, ends equal to an uninterrupted run, with nothing half-written and nothing left
behind (tools/fault_campaign.py; longer campaigns run it with more seeds)."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from fault_campaign import FAULTED, campaign  # noqa: E402


@pytest.mark.slow  # two tiny projects step by step, twelve kills and reruns
def test_every_long_step_killed_and_rerun_ends_as_an_uninterrupted_run(tmp_path):
    result = campaign(tmp_path, "tiny", seeds=1, orchestrators=["dvc", "dagster"], atol=0.0, window=7.0,
                      log=lambda m: None)
    faults = result["faults"]
    assert [f["step"] for f in faults] == list(FAULTED)
    assert {f["orchestrator"] for f in faults} == {"dvc", "dagster"}
    for f in faults:
        assert f["outputs_whole_after_kill"], f
        assert f["rerun_completed"] and f["equal_to_reference"], f
    s = result["summary"]
    assert s["killed"] >= len(FAULTED) // 2  # most kills land before the step ends
    assert s["items_lost"] == 0 and s["temp_files_left"] == 0 and s["mlflow_runs_left_running"] == 0, s


def test_a_campaign_over_steps_that_are_not_long_steps_stops_naming_them(tmp_path):
    with pytest.raises(SystemExit, match="'champion'"):
        campaign(tmp_path, "tiny", seeds=1, orchestrators=["dvc"], atol=0.0, faulted=("stage1", "champion"))
    assert not any(tmp_path.iterdir())  # refused before any project copy
