"""The champion step: once the benchmark's blocking checks hold, the stage-2 denoiser and the Combiner
become MLflow models (pyfunc, MLflow 3 logged models linked to their benchmark figures), registered as
`compodiff-stage2` and `combiner` with the alias `champion`.

A step of its own, downstream of benchmark_metrics, so the alias moves only after evaluation passed:
Dagster does not start it when a blocking check fails, and the step refuses too, for the DVC path.
"""

from __future__ import annotations

import json

from compodiff.atomic import write_json
from orchestration.layout import Layout
from orchestration.steps import Log

ALIAS = "champion"
MODELS = {"compodiff_stage2": "compodiff-stage2", "combiner": "combiner"}  # benchmark name -> registered model


class NotAChampion(RuntimeError):
    pass


def champion(layout: Layout, log: Log = print) -> dict:
    import mlflow

    from orchestration.served_model import log_combiner, log_compodiff
    from orchestration.tracking import active_run

    checks = json.loads(layout.benchmark_checks.read_text())
    if layout.params.benchmark.require_stage2_lead and not checks["stage2_beats_baselines"]:
        raise NotAChampion(f"stage 2 scores {checks['stage2_mAP@10']:.2f} mAP@10 against "
                           f"{checks['best_baseline']} {checks['best_baseline_mAP@10']:.2f}: the alias {ALIAS!r} "
                           f"stays where it was ({layout.benchmark_checks})")
    run = active_run()
    if run is None:
        raise NotAChampion("the champion step logs models into its step's MLflow run: run it through "
                           "Dagster or `compodiff run champion`")
    results = json.loads(layout.benchmark_metrics.read_text())
    mlflow.set_tracking_uri(run.tracking_uri)
    versions = {}
    with mlflow.start_run(run_id=run.run_id, log_system_metrics=False):
        for method, logger in (("compodiff_stage2", log_compodiff), ("combiner", log_combiner)):
            info = logger(layout)
            mlflow.log_metrics({f"world_{k.replace('@', '_at_')}": v for k, v in results[method].items()
                                if isinstance(v, (int, float))}, model_id=info.model_id)
            name = MODELS[method]
            version = mlflow.register_model(info.model_uri, name).version
            run.client.set_registered_model_alias(name, ALIAS, version)
            versions[name] = {"version": str(version), "model_id": info.model_id, "uri": f"models:/{name}@{ALIAS}",
                              "mAP@10": results[method]["mAP@10"]}
            log(f"champion: {name} version {version} ({results[method]['mAP@10']:.2f} mAP@10) is {ALIAS!r}")
    write_json(layout.data / "champion.json", versions)
    return {f"{name}.version": int(v["version"]) for name, v in versions.items()}
