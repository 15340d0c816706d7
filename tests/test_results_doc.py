"""docs/results.md is generated from the metrics files, and the claims summary reports every seed."""

import importlib.util
import json
from pathlib import Path

from orchestration.results_doc import write_results

ROOT = Path(__file__).resolve().parents[1]


def _claims_module():
    spec = importlib.util.spec_from_file_location("claims_world", ROOT / "benchmarks" / "claims_world.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _seed(seed: int, stage2: float, best: float, gain: float) -> dict:
    names = {"image_text_sum": best, "stage2": stage2, "stage2 5 steps": stage2 - 0.1, "stage2 50 steps": stage2,
             "stage2 triplets x0.25": stage2 - 2, "stage2 triplets x0.5": stage2 - 1,
             "stage2 triplets only": stage2 - 3, "stage2 from scratch": stage2 - 4, "stage2 without mask": 0.0}
    per_type = {k: stage2 for k in ("mask", "add")}
    return {"seed": seed, "methods": {n: {"mAP@10": v, "per_type": {**per_type, "mask": v}} for n, v in names.items()},
            "best_baseline": "image_text_sum",
            "margin": {"mAP@10": stage2 - best, "bootstrap_95": [stage2 - best - 1, stage2 - best + 1],
                       "types_led": ["a"] * 8},
            "negative_share": {"with": 0.1, "without": 0.4}, "instruction_gain": {"colour": gain, "add": 5.0}}


def test_a_claim_that_fails_in_one_seed_is_reported_for_that_seed():
    mod = _claims_module()
    seeds = [_seed(0, 25.0, 20.0, 4.0), _seed(1, 22.0, 20.0, 1.0)]
    out = mod.claims(seeds)
    assert [c["1_beats_best_baseline_by_3"] for c in out["per_seed"]] == [True, False]
    assert [c["7_reads_instruction_every_kind"] for c in out["per_seed"]] == [True, False]
    assert out["holds_in_every_seed"]["1_beats_best_baseline_by_3"] is False
    assert out["holds_in_every_seed"]["6_mix_beats_triplets_only"] is True
    agg = mod.aggregate(seeds)
    assert agg["stage2"]["per_seed"] == [25.0, 22.0] and abs(agg["stage2"]["mean"] - 23.5) < 1e-9


def test_results_doc_is_generated_from_the_metrics_and_says_what_is_missing(tmp_path):
    (tmp_path / "metrics").mkdir()
    per_type = {"add": {"mAP@10": 11.0}, "size": {"mAP@10": 12.5}}
    (tmp_path / "metrics" / "benchmark.json").write_text(json.dumps({
        "image_text_sum": {"mAP@10": 17.25, "per_type": per_type},
        "compodiff_stage2": {"mAP@10": 21.5, "per_type": per_type}}))
    (tmp_path / "metrics" / "filter.json").write_text(json.dumps({"coverage": {
        s: {"total": 10, "counts": {"colour": 3, "replace": 7}, "shares": {"colour": 0.3, "replace": 0.7}}
        for s in ("generated", "selected", "rendered", "kept")}, "world": {"per_kind": {
            "colour": {"pairs": 4, "kept": 3, "precision": 1.0, "recall": 0.75}}}}))
    (tmp_path / "README.md").write_text("# x\n<!-- headline:start -->\nold\n<!-- headline:end -->\nrest\n")
    text = write_results(tmp_path).read_text()
    readme = (tmp_path / "README.md").read_text()
    assert "old" not in readme and readme.endswith("<!-- headline:end -->\nrest\n")
    assert readme.index("| compodiff_stage2 | 21.50 |") < readme.index("| image_text_sum | 17.25 |")  # best first
    assert "| compodiff_stage2 | 21.50 | 11.00 | 12.50 |" in text
    assert "| colour | 3 (30.0%) | 3 (30.0%) | 3 (30.0%) | 3 (30.0%) |" in text
    assert "| colour | 4 | 3 | 1.00 | 0.75 |" in text
    assert "Not trained yet." in text and "Not measured yet: `benchmarks/claims_world.py`" in text


def test_the_reliability_section_counts_every_fault_and_names_a_rerun_that_differed():
    from orchestration.results_doc import reliability_section

    faults = {"profile": "tiny", "seeds_per_step": 1, "orchestrators": ["dvc", "dagster"],
              "summary": {"injected": 2, "killed": 1, "whole_after_kill": 2, "reruns_completed": 2,
                          "equal_to_reference": 1, "temp_files_left": 0, "mlflow_runs_left_running": 0,
                          "items_lost": 1},
              "faults": [{"step": "stage1", "item": None, "orchestrator": "dvc", "killed_after_s": 3.2,
                          "killed": True, "outputs_whole_after_kill": True, "equal_to_reference": True,
                          "differing": []},
                         {"step": "world_pairs", "item": "s00", "orchestrator": "dagster", "killed_after_s": 9.0,
                          "killed": False, "outputs_whole_after_kill": True, "equal_to_reference": False,
                          "differing": ["data/world_pairs/s00.parquet"]}]}
    text = "\n".join(reliability_section(faults))
    assert "2 SIGKILLs injected, 1 landed before the step ended" in text and "items lost **1**" in text
    assert "| world_pairs[s00] | dagster | 9.00 | finished first | yes | NO: data/world_pairs/s00.parquet |" in text
    assert reliability_section(None) == []


def test_the_bad_inputs_section_lists_each_case_and_how_it_was_answered():
    from orchestration.results_doc import bad_inputs_section
    from tools.bad_inputs import CASES, run_case

    cases = [run_case(c) for c in CASES if c.name in ("a torch pickle carrying code", "bad lines among good ones")]
    summary = {"tried": 2, "loaders": 2, "answered_as_required": 2, "hostile_tried": 1, "hostile_refused": 1,
               "crashed": 0, "inputs_changed": 0, "code_ran": 0}
    text = "\n".join(bad_inputs_section({"cases": cases, "summary": summary}))
    assert "2 bad inputs over 2 loaders" in text and "hostile files refused 1/1" in text
    assert "| compodiff.checkpoint.load_official_checkpoint | a torch pickle carrying code | yes | refused " \
           "(CheckpointError) |" in text
    assert "skipped and counted: kept 2, skipped {'not JSON': 1, 'missing input/caption, edit or output': 2}" in text
    assert bad_inputs_section(None) == []


def test_the_claims_section_says_whether_they_were_measured_under_the_projects_params():
    from orchestration.results_doc import claims_section

    mod = _claims_module()
    seeds = [_seed(0, 25.0, 20.0, 4.0)]
    claims = {"params_digest": "aaaa", "training_seeds": [0], "sampling_seeds": [0], "seeds": seeds,
              "claims": mod.claims(seeds), "aggregate": mod.aggregate(seeds)}
    assert "under params digest aaaa, the project's params now" in "\n".join(claims_section(claims, "aaaa"))
    stale = "\n".join(claims_section(claims, "bbbb"))
    assert "**not** the project's params now (bbbb)" in stale
