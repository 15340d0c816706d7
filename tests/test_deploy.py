"""Scale-out configuration: the executor switch and the deploy files."""

from pathlib import Path

import dagster as dg
import pytest
import yaml

from orchestration.definitions import executor

ROOT = Path(__file__).resolve().parents[1]


def test_executor_switch():
    assert executor("multiprocess") is dg.multiprocess_executor
    with pytest.raises(ValueError, match="one of multiprocess, celery, k8s"):
        executor("slurm")
    for name in ("celery", "k8s"):
        try:
            executor(name)
        except ImportError as err:  # the [cluster] extra is not installed here
            assert "cluster extra" in str(err)


def test_deploy_files_parse_and_name_the_gpu_pool():
    instance = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())
    assert "postgres" in instance["storage"] and instance["run_coordinator"]["class"] == "QueuedRunCoordinator"
    for f in ("celery_executor.yaml", "k8s_executor.yaml"):
        assert "execution" in yaml.safe_load((ROOT / "deploy" / f).read_text())
    from orchestration.definitions import project
    from orchestration.registry import BY_NAME

    pools = {a.key.to_user_string(): a.op.pool for a in project.assets}
    assert pools == {name: s.pool for name, s in BY_NAME.items()}  # the assets take their pools from the registry
    gpu = {k for k, v in pools.items() if v == "gpu"}
    assert {"encoder", "llm_adapter", "image_pairs", "stage1", "stage2", "benchmark_metrics"} <= gpu
    assert not gpu & {"world_pairs", "caption_pool", "world_benchmark", "faiss_index"}  # CPU-only steps
