"""docs/results.md and the README's headline table, generated from metrics/ and benchmarks/results/ so
that no number is copied by hand.

  .venv/bin/compodiff docs          (rewrites both; a missing input is said, not invented)
"""

from __future__ import annotations

import json
from pathlib import Path

from compodiff.atomic import atomic_path

KIND_STAGES = ("generated", "selected", "rendered", "kept")


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _table(header: list[str], rows: list[list]) -> list[str]:
    def cell(v):
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
        ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows] + [""]


def lead_sentence(checks: dict) -> str:
    lead = "leads" if checks["stage2_beats_baselines"] else "does not lead"
    return f"Best baseline: {checks.get('best_baseline', '?')} at {checks['best_baseline_mAP@10']:.2f}; stage 2 {lead}."


def benchmark_section(bench: dict | None, checks: dict | None) -> list[str]:
    out = ["## World benchmark (the default run)", ""]
    if bench is None:
        return out + ["Not measured yet: run `compodiff lifecycle`.", ""]
    kinds = sorted(bench["image_text_sum"]["per_type"])
    rows = [[m, v["mAP@10"], *[v["per_type"][k]["mAP@10"] for k in kinds]] for m, v in bench.items()]
    out += ["mAP@10 (%), overall and per query type; from `metrics/benchmark.json`.", ""]
    out += _table(["method", "all", *kinds], rows)
    if checks:
        out += [f"{lead_sentence(checks)} Negated object in the top 10: "
                f"{checks['negative_text']['share_with']:.3f} with the negative text, "
                f"{checks['negative_text']['share_without']:.3f} without.", ""]
    return out


def coverage_section(filt: dict | None) -> list[str]:
    out = ["## Edit kinds of the synthetic triplets at every stage", ""]
    cov = (filt or {}).get("coverage")
    if cov is None:
        return out + ["Not measured (no world ground truth, or no run yet).", ""]
    kinds = sorted({k for s in KIND_STAGES for k in cov[s]["counts"]})
    rows = [[k, *[f"{cov[s]['counts'].get(k, 0)} ({100 * cov[s]['shares'].get(k, 0):.1f}%)" for s in KIND_STAGES]]
            for k in kinds]
    out += ["Counts (share of the stage); from `metrics/filter.json`. *kept* is what stage 2 trains on.", ""]
    out += _table(["kind", *KIND_STAGES], rows)
    per_kind = filt.get("world", {}).get("per_kind", {})
    if per_kind:
        out += ["The CLIP filter against the world's ground truth, per kind: precision = consistent among kept, "
                "recall = kept among consistent.", ""]
        out += _table(["kind", "pairs", "kept", "precision", "recall"],
                      [[k, v["pairs"], v["kept"], v["precision"] if v["precision"] is not None else "-",
                        v["recall"] if v["recall"] is not None else "-"] for k, v in sorted(per_kind.items())])
    methods = cov.get("kept_by_method", {})
    if methods:
        total = sum(m["total"] for m in methods.values())
        out += ["Kept per method: " + ", ".join(f"{m} {v['total']} ({100 * v['total'] / max(1, total):.1f}%)"
                                                 for m, v in sorted(methods.items())) + ".", ""]
    return out


def encoder_section(enc: dict | None) -> list[str]:
    out = ["## The world CLIP", ""]
    if enc is None:
        return out + ["Not trained yet.", ""]
    out += [f"Held-out text-to-image R@1 {enc['t2i_R@1']:.3f}, R@10 {enc['t2i_R@10']:.3f} on {enc['eval_pairs']} "
            f"pairs ({enc.get('steps', '?')} steps, {enc.get('train_seconds', 0):.0f} s)."]
    if "benchmark_words" in enc:
        out += [f"Its training text holds {enc['training_words']} distinct words, {enc['benchmark_words_trained']} of "
                f"the {enc['benchmark_words']} fixed words of the benchmark's phrasings; never seen: "
                f"{', '.join(enc['benchmark_words_untrained']) or 'none'}."]
    return out + [""]


def _params_digest(root: Path) -> str | None:
    """The digest of the project's params (compodiff.config_schema.digest), as the claims script records it."""
    from compodiff.config_schema import digest
    from orchestration.params import load_params

    return digest(load_params(root / "params.yaml")) if (root / "params.yaml").is_file() else None


def claims_section(claims: dict | None, params_digest: str | None = None) -> list[str]:
    out = ["## The paper's claims over training seeds", ""]
    if claims is None or "claims" not in claims:
        return out + ["Not measured yet: `benchmarks/claims_world.py` (see its docstring).", ""]
    seeds = claims["training_seeds"]
    measured = claims.get("params_digest")
    same = ("the project's params now" if measured == params_digest else
            f"**not** the project's params now ({params_digest}): these figures are of earlier settings until "
            "the script is rerun")
    out += [f"`benchmarks/results/claims_world.json`: training seeds {seeds}, sampling seeds "
            f"{claims['sampling_seeds']}; mAP@10 per seed, then mean ± spread. Measured under params digest "
            f"{measured}, {same}.", ""]
    out += _table(["method", *[f"seed {s}" for s in seeds], "mean", "spread"],
                  [[n, *v["per_seed"], v["mean"], v["std"]] for n, v in claims["aggregate"].items()])
    per_seed = claims["claims"]["per_seed"]
    keys = [k for k in per_seed[0] if k != "seed"]
    out += _table(["claim", *[f"seed {c['seed']}" for c in per_seed]],
                  [[k, *["holds" if c[k] else "fails" for c in per_seed]] for k in keys])
    margins = [f"seed {r['seed']}: {r['margin']['mAP@10']:+.2f} [{r['margin']['bootstrap_95'][0]:+.2f}, "
               f"{r['margin']['bootstrap_95'][1]:+.2f}] vs {r['best_baseline']}" for r in claims["seeds"]]
    out += ["Margin of stage 2 over the best baseline, with a paired bootstrap 95% interval over queries: "
            + "; ".join(margins) + ".", "", "![claims](../benchmarks/results/claims_world.png)", ""]
    return out


SPEED_WORDS = ("per_second", "speedup", "speed_up", "ms", "seconds", "recall", "qps", "mAP", "consistent")


def bench_files_section(results: Path) -> list[str]:
    """Each benchmark script's result file with its headline figures (speeds, recalls, consistency)."""
    from compodiff.config_schema import flatten

    out = ["## Benchmark scripts", "", "Each file in `benchmarks/results/`, written by the script of the same "
           "name in `benchmarks/`; the figures shown are its speeds, recalls and consistency rates.", ""]
    for f in sorted(results.glob("*.json")):
        if f.stem in ("claims_world", "filter_calibration_world", *FAULTS):
            continue
        try:
            flat = flatten(json.loads(f.read_text()))
        except (ValueError, AttributeError):
            out.append(f"- `{f.name}`: not a JSON object")
            continue
        shown = [f"{k} {v:.4g}" for k, v in flat.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                 and any(w in k for w in SPEED_WORDS)][:8]
        out.append(f"- `{f.name}`: " + ("; ".join(shown) or "no headline figure"))
    return out + [""]


HEADLINE = ("<!-- headline:start -->", "<!-- headline:end -->")


def headline(bench: dict | None, checks: dict | None) -> list[str]:
    """The README's short table: every method's overall mAP@10, best first."""
    if bench is None:
        return ["Not measured yet: run `compodiff lifecycle`, then `compodiff docs`."]
    rows = sorted(((m, v["mAP@10"]) for m, v in bench.items()), key=lambda r: -r[1])
    out = _table(["method", "mAP@10"], [list(r) for r in rows])
    if checks:
        out.append(lead_sentence(checks))
    return out


def write_readme_headline(readme: Path, lines: list[str]) -> None:
    text = readme.read_text()
    start, end = (text.find(m) for m in HEADLINE)
    if start < 0 or end < start:
        raise ValueError(f"{readme}: no {HEADLINE[0]} ... {HEADLINE[1]} block to fill")
    new = text[:start + len(HEADLINE[0])] + "\n" + "\n".join(lines).rstrip() + "\n" + text[end:]
    with atomic_path(readme, suffix=".md") as tmp:
        Path(tmp).write_text(new)


def write_results(root: Path) -> Path:
    metrics, results = root / "metrics", root / "benchmarks" / "results"
    lines = ["# Results", "", "Generated by `compodiff docs` from `metrics/` (the default run) and "
             "`benchmarks/results/`; edit those, not this file.", ""]
    bench, checks = _load(metrics / "benchmark.json"), _load(metrics / "benchmark_checks.json")
    if (root / "README.md").is_file():
        write_readme_headline(root / "README.md", headline(bench, checks))
    lines += benchmark_section(bench, checks)
    lines += coverage_section(_load(metrics / "filter.json"))
    lines += encoder_section(_load(metrics / "encoder.json"))
    lines += claims_section(_load(results / "claims_world.json"), _params_digest(root))
    for name in FAULTS:
        lines += reliability_section(_load(results / f"{name}.json"), f"{name}.json")
    lines += bad_inputs_section(_load(results / "bad_inputs.json"))
    lines += bench_files_section(results)
    out = root / "docs" / "results.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, suffix=".md") as tmp:
        Path(tmp).write_text("\n".join(lines))
    return out


FAULTS = ("faults_tiny", "faults_world")  # the fault campaigns: every step in CI time, and the default profile


def reliability_section(faults: dict | None, file: str = "faults_tiny.json") -> list[str]:
    """The fault campaign (tools/fault_campaign.py): kills per step, and how each ended."""
    if faults is None:
        return []
    s = faults["summary"]
    out = [f"## Reliability: the {faults['profile']} profile", "",
           f"`benchmarks/results/{file}` (`tools/fault_campaign.py`, profile "
           f"`{faults['profile']}`, {faults['seeds_per_step']} kill(s) per step through "
           f"{' and '.join(faults['orchestrators'])}; the uninterrupted run: "
           f"{faults.get('reference', 'run step by step here')}): "
           f"{s['injected']} SIGKILLs injected, {s['killed']} landed "
           f"before the step ended; outputs whole after every kill: {s['whole_after_kill']}/{s['injected']}; reruns "
           f"completed {s['reruns_completed']}, equal to the uninterrupted run {s['equal_to_reference']}; temp "
           f"files left {s['temp_files_left']}; MLflow runs left RUNNING {s['mlflow_runs_left_running']}; items "
           f"lost **{s['items_lost']}**." + _killed_steps(faults), ""]
    rows = [[f["step"] + (f"[{f['item']}]" if f["item"] else ""), f["orchestrator"], f["killed_after_s"],
             "yes" if f["killed"] else "finished first", "yes" if f["outputs_whole_after_kill"] else "NO",
             "yes" if f["equal_to_reference"] else "NO: " + ", ".join(f["differing"][:2])] for f in faults["faults"]]
    return out + _table(["step", "via", "killed after (s)", "killed", "whole", "rerun equal"], rows) + [""]


def _killed_steps(faults: dict) -> str:
    if "faulted_steps" not in faults:  # a campaign over every long step
        return ""
    return (f" Steps killed: {', '.join(faults['faulted_steps'])}; the others ran whole or came from the "
            "uninterrupted run.")


def bad_inputs_section(bad: dict | None) -> list[str]:
    """The bad-input catalog (tools/bad_inputs.py): per loader, each case and how it was answered."""
    if bad is None:
        return []
    s = bad["summary"]
    out = ["### Bad inputs", "",
           f"`benchmarks/results/bad_inputs.json` (`tools/bad_inputs.py`): {s['tried']} bad inputs over "
           f"{s['loaders']} loaders; answered as required (refused naming the file, or skipped and counted by a "
           f"filter) {s['answered_as_required']}/{s['tried']}; hostile files refused {s['hostile_refused']}/"
           f"{s['hostile_tried']}; crashes {s['crashed']}; inputs changed {s['inputs_changed']}; pickled code run "
           f"{s['code_ran']}.", ""]
    rows = [[r["loader"], r["case"], "yes" if r["hostile"] else "",
             r["answer"] + (f" ({r['error']})" if r.get("error") else "")
             + (f": kept {r['kept']}, skipped {r['skipped']}" if r["answer"] == "skipped and counted" else "")]
            for r in bad["cases"]]
    return out + _table(["loader", "bad input", "hostile", "answer"], rows) + [""]
