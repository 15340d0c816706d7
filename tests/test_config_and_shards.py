"""params.yaml schema, profiles, atomic writes and packed shards."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from compodiff.atomic import atomic_path, write_json
from compodiff.config_schema import ConfigError
from compodiff.profiles import render, resolve
from datagen.shards import ShardError, decode_png, read_shard
from datagen.world.pairs import write_pairs_shard
from orchestration.cli import main as cli
from orchestration.params import load_params

ROOT = Path(__file__).resolve().parents[1]


def test_every_profile_loads_and_params_is_the_world_profile():
    for path in (ROOT / "profiles").glob("*.yaml"):
        load_params(path)
    assert (ROOT / "params.yaml").read_text() == (ROOT / "profiles" / "world.yaml").read_text()


def write_params(tmp_path, mutate):
    data = resolve(ROOT / "profiles" / "tiny.yaml")
    mutate(data)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d["world"].update(shardz=["a"]), "unknown key.*world.shardz"),
    (lambda d: d["encoder"]["train"].pop("lr"), "missing key encoder.train.lr"),
    (lambda d: d.pop("tracking"), "missing key tracking"),
    (lambda d: d["world"].update(pairs_per_shard="many"), "world.pairs_per_shard must be an integer"),
    (lambda d: d["world"].update(shards="s00"), "world.shards must be a list"),
    (lambda d: d["training"]["stage2"].update(steps=-4), r"training.stage2.steps is -4; it must be >= 1"),
    (lambda d: d["training"].update(checkpoint_every=0), r"training.checkpoint_every is 0; it must be >= 1"),
    (lambda d: d["training"]["stage1"].update(lr=0.0), r"training.stage1.lr is 0.0; it must be > 0"),
])
def test_bad_params_name_the_key(tmp_path, mutate, message):
    with pytest.raises(ConfigError, match=message):
        load_params(write_params(tmp_path, mutate))


def test_profiles_are_overlays_that_resolve_to_complete_params(tmp_path):
    tiny = (ROOT / "profiles" / "tiny.yaml").read_text()
    assert tiny.count("\n") < 80 and "extends: world" in tiny  # only what differs from the default
    vitg = resolve(ROOT / "profiles" / "paper-vitg.yaml")  # paper-vitg <- paper-vitl <- world
    assert vitg["encoder"]["model"] == "ViT-bigG-14" and vitg["training"]["stage2"]["steps"] == 200000
    assert vitg["world"]["shards"][:2] == ["laion-00000", "laion-00001"] and len(vitg["world"]["shards"]) == 128
    assert vitg["clip_filter"]["per_method"] == {}  # _replace: the paper's filter has no per-method rules
    # the rendered params file is complete and literal (DVC's foreach reads world.shards from it)
    rendered = yaml.safe_load(render(ROOT / "profiles" / "paper-vitg.yaml"))
    assert "extends" not in rendered and rendered == vitg
    assert render(ROOT / "profiles" / "world.yaml") == (ROOT / "profiles" / "world.yaml").read_text()
    (tmp_path / "a.yaml").write_text("extends: b\nseed: 1\n")
    (tmp_path / "b.yaml").write_text("extends: a\n")
    with pytest.raises(ConfigError, match="extends itself: a -> b -> a"):
        resolve(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: nosuch\n")
    with pytest.raises(ConfigError, match="profile file not found: .*nosuch.yaml"):
        resolve(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("world: {shards: {pattern: 'x-{}', count: 0}}\n")
    with pytest.raises(ConfigError, match="generated shard list"):
        resolve(tmp_path / "d.yaml")


def test_params_are_frozen():
    p = load_params(ROOT / "profiles" / "tiny.yaml")
    with pytest.raises(AttributeError):
        p.world.image_size = 3  # type: ignore[misc]


def test_profile_switch_is_one_command(tmp_path, monkeypatch):
    shutil.copytree(ROOT / "profiles", tmp_path / "profiles")
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.setenv("COMPODIFF_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # a command acts on the project it is run in, before COMPODIFF_ROOT
    assert cli(["profile", "tiny"]) == 0
    assert load_params(tmp_path / "params.yaml").profile == "tiny"
    assert cli(["profile", "nonexistent"]) == 2


def test_atomic_write_leaves_nothing_when_killed(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text().strip().startswith("{") and list(tmp_path.iterdir()) == [target]


def test_shards_skip_when_complete_and_fail_clearly_when_corrupt(tmp_path):
    w = load_params(ROOT / "profiles" / "tiny.yaml").world
    path = tmp_path / "s00.parquet"
    first = write_pairs_shard(w, 0, "s00", 20, path)
    again = write_pairs_shard(w, 0, "s00", 20, path)
    assert not first["skipped"] and again["skipped"]
    table = read_shard(path, ["id", "caption", "image_png", "segmap_png"])
    assert table.num_rows == 20
    assert decode_png(table.column("image_png")[0].as_py()).shape == (32, 32, 3)
    # a different seed is a different manifest: the shard is rewritten, not trusted
    assert not write_pairs_shard(w, 1, "s00", 20, path)["skipped"]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ShardError, match=f"{path}.*corrupt or truncated"):
        read_shard(path)
    assert not write_pairs_shard(w, 1, "s00", 20, path)["skipped"]  # the rerun completes the work
    with pytest.raises(ShardError, match="lacks column"):
        read_shard(path, ["nope"])
    with pytest.raises(ShardError, match="does not decode"):
        decode_png(b"\x89PNG broken", "row 3")
    with pytest.raises(ShardError, match="not found"):
        read_shard(tmp_path / "absent.parquet")


def test_a_shard_damaged_inside_with_an_intact_footer_is_refused_and_rewritten(tmp_path):
    import pyarrow.parquet as pq

    w = load_params(ROOT / "profiles" / "tiny.yaml").world
    path = tmp_path / "s00.parquet"
    write_pairs_shard(w, 0, "s00", 20, path)
    good = path.read_bytes()
    chunk = pq.ParquetFile(path).metadata.row_group(0).column(2)  # image_png: the bulk of the file
    start = chunk.data_page_offset + (chunk.total_compressed_size // 2)
    data = bytearray(good)
    data[start:start + 8] = bytes(b ^ 0xFF for b in data[start:start + 8])
    path.write_bytes(bytes(data))
    assert pq.read_schema(path).names  # the footer still reads: only the pages' CRCs tell
    with pytest.raises(ShardError, match=f"{path}.*corrupt or truncated"):
        read_shard(path)
    assert not write_pairs_shard(w, 0, "s00", 20, path)["skipped"]  # the rerun repairs it
    assert path.read_bytes() == good  # byte-identical to what the first run wrote
    assert write_pairs_shard(w, 0, "s00", 20, path)["skipped"]


def test_shards_are_deterministic(tmp_path):
    w = load_params(ROOT / "profiles" / "tiny.yaml").world
    a = write_pairs_shard(w, 0, "s01", 10, tmp_path / "a.parquet")
    b = write_pairs_shard(w, 0, "s01", 10, tmp_path / "b.parquet")
    assert a == b
    ta, tb = read_shard(tmp_path / "a.parquet"), read_shard(tmp_path / "b.parquet")
    assert ta.column("caption").to_pylist() == tb.column("caption").to_pylist()
    assert np.array_equal(decode_png(ta.column("image_png")[3].as_py()), decode_png(tb.column("image_png")[3].as_py()))


def test_a_feature_file_whose_arrays_disagree_on_rows_is_refused_by_name(tmp_path):
    import numpy as np

    from compodiff.feature_store import FeatureError, load_features, save_features

    path = save_features(tmp_path / "f.npz", {"image": np.zeros((96, 4), np.float32), "mask": np.zeros((10, 2, 2))},
                         {"caption": ["a"] * 96}, {"kind": "test"})
    with pytest.raises(FeatureError, match=r"f.npz: the arrays disagree on the row count .*'mask': 10"):
        load_features(path)


@pytest.mark.parametrize("per_method, named", [({"llm": {"sim_imgae": 0.5}}, "clip_filter.per_method.llm.sim_imgae"),
                                               ({"kw": {"sim_image": 0.5}}, "clip_filter.per_method.kw")])
def test_a_misspelt_per_method_filter_key_is_an_error_when_params_load(per_method, named):
    """Found by the property test: the per-method thresholds are a mapping, whose keys the loader took on trust."""
    from compodiff.config_schema import from_dict
    from orchestration.params import Params

    data = resolve(ROOT / "profiles" / "world.yaml")
    data["clip_filter"]["per_method"] = per_method
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        from_dict(Params, data)
    data["clip_filter"]["per_method"] = {"llm": {"sim_image": 0.5}, "keyword": {}}
    assert from_dict(Params, data).clip_filter.per_method["llm"] == {"sim_image": 0.5}
