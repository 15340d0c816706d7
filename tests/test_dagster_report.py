"""A step that DVC ran carries the provenance Dagster records for its own materializations."""
import dagster as dg

from orchestration.dagster_report import provenance_tags


@dg.asset(code_version="a1")
def a() -> None:
    return None


@dg.asset(code_version="b1", deps=[a])
def b() -> None:
    return None


def _tags(instance: dg.DagsterInstance, key: str) -> dict[str, str]:
    record = instance.fetch_materializations(dg.AssetKey(key), limit=1).records[0]
    return {k: v for k, v in (record.event_log_entry.tags or {}).items() if k.startswith("dagster/")
            and not k.startswith("dagster/run") and k != "dagster/step_key"}


def test_the_report_carries_the_tags_dagster_writes_itself(tmp_path):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        assert dg.materialize([a, b], instance=instance).success
        dagster_own = _tags(instance, "b")
        assert "dagster/data_version" in dagster_own  # a Dagster run records one
        assert provenance_tags(instance, "b1", ["a"]) == dagster_own
        # a new upstream event: the pointer follows it, the inputs' data version stays (same code, no inputs)
        assert dg.materialize([a], instance=instance).success
        moved = provenance_tags(instance, "b1", ["a"])
        assert moved["dagster/input_event_pointer/a"] != dagster_own["dagster/input_event_pointer/a"]
        assert moved["dagster/data_version"] == dagster_own["dagster/data_version"]
        # another code version is another logical data version
        assert provenance_tags(instance, "b2", ["a"])["dagster/data_version"] != dagster_own["dagster/data_version"]


def test_an_upstream_never_materialized_is_dagsters_initial_version(tmp_path):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        tags = provenance_tags(instance, "b1", ["a"])
        assert tags["dagster/input_data_version/a"] == "INITIAL"
        assert tags["dagster/input_event_pointer/a"] == "NULL"
