"""Public triplet datasets: each published layout read and converted, bad records counted or refused."""

import io
import json
import tarfile

import numpy as np
import pytest
import torch

from compodiff.config_schema import ConfigError, from_dict
from compodiff.objectives import source_mix_weights
from datagen.config import TripletSourceConfig
from datagen.image_triplets import read_source
from datagen.image_triplets.convert import convert
from datagen.image_triplets.sources import SourceError
from datagen.image_triplets.synthtriplets import list_keys
from datagen.shards import decode_png, read_shard
from datagen.tar_samples import UnsafeMember
from tests import triplet_fixtures as fx


def _convert(name, spec, out, size=32, per_part=10000, seed=0):
    cfg = from_dict(TripletSourceConfig, spec)
    return convert(name, read_source(name, cfg, seed), out, size, 3, per_part, cfg.min_scores, cfg.max_triplets,
                   log=lambda m: None)


def _rows(out):
    return [r for part in sorted(out.glob("part-*.parquet")) for r in read_shard(part).to_pylist()]


EXPECTED = {"ip2p": 6, "ip2p_parquet": 5, "megapairs": 4, "lasco": 4, "synthtriplets": 6, "cirr": 4, "fashioniq": 9}


def test_every_published_layout_converts_into_triplet_shards(tmp_path):
    sources = fx.all_sources(tmp_path / "src")
    for name, spec in sources.items():
        result = _convert(name, spec, tmp_path / "out" / name)
        assert (result["read"], result["kept"], result["skipped"]) == (EXPECTED[name], EXPECTED[name], {}), name
        rows = _rows(tmp_path / "out" / name)
        assert len(rows) == EXPECTED[name]
        for r in rows:
            assert r["source"] == r["method"] == name and r["id"].startswith(f"{name}-") and r["instruction"]
            assert decode_png(r["reference_png"]).shape == decode_png(r["target_png"]).shape == (32, 32, 3)
            assert r["edit_kind"] is None and r["template_id"] is None
    ip2p = _rows(tmp_path / "out" / "ip2p")[0]
    assert (ip2p["instruction"], ip2p["source_caption"], ip2p["target_caption"]) == (
        "make it 0", "a photo of thing 0", "a photo of thing 0 edited")
    synth = _rows(tmp_path / "out" / "synthtriplets")[0]
    assert synth["instruction"].startswith("replace the cat") and synth["target_caption"] == "a dog"
    assert [len(r["negatives_png"]) for r in _rows(tmp_path / "out" / "megapairs")] == [1, 1, 1, 1]  # hns[1:]
    fiq = _rows(tmp_path / "out" / "fashioniq")[0]["instruction"]
    assert fiq == "Is darker and has longer sleeves"  # the evaluators' clip4cir join
    assert _rows(tmp_path / "out" / "cirr")[2]["instruction"] == "has 2 more dogs"


def test_ip2p_scores_filter_as_released_and_the_instruction_list_is_drawn_by_seed(tmp_path):
    root = fx.ip2p_folder(tmp_path / "ip2p")
    result = _convert("ip2p", {"path": str(root), "min_scores": {"clip_sim_dir": 0.15}}, tmp_path / "o1")
    assert (result["kept"], result["skipped"]) == (3, {"clip_sim_dir below 0.15": 3})
    jsonl = fx.megapairs(tmp_path / "mp")
    draws = [[r["instruction"] for r in (_convert("megapairs", {"path": str(jsonl)}, tmp_path / f"m{s}", seed=s),
                                         _rows(tmp_path / f"m{s}"))[1]] for s in (0, 0, 1, 2, 3)]
    assert draws[0] == draws[1]  # the same seed draws the same instruction
    lines = [json.loads(x) for x in jsonl.read_text().splitlines()]
    for d in draws:
        for got, line in zip(d, lines):
            assert got in line.get("q_texts", [line.get("q_text")])
    assert len({tuple(d) for d in draws}) > 1  # and another seed may draw another


def test_bad_records_are_skipped_and_counted_with_where_they_are(tmp_path):
    root = fx.ip2p_folder(tmp_path / "ip2p")
    (root / "0000000" / "1000_0.jpg").unlink()  # a missing image
    (root / "0000001" / "1001_1.jpg").write_bytes(b"not an image")  # an undecodable one
    (root / "0000002" / "prompt.json").write_text(json.dumps({"input": "a", "output": "b"}))  # no instruction
    result = _convert("ip2p", {"path": str(root)}, tmp_path / "out")
    assert result["skipped"] == {"missing image": 1, "image does not decode": 1, "no instruction": 2}
    assert result["kept"] == 2
    assert "0000000/prompt.json" in result["examples"]["missing image"][0]
    assert "0000002/prompt.json" in result["examples"]["no instruction"][0]
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["skipped"] == result["skipped"]

    jsonl = fx.megapairs(tmp_path / "mp")
    lines = jsonl.read_text().splitlines()
    lines[1] = json.dumps({"q_img": "imgs/1_q.jpg", "q_texts": [], "t_img": "imgs/1_t.jpg", "hns": []})
    lines[2] = json.dumps({"q_img": "../../etc/passwd", "q_text": "x", "t_img": "imgs/2_t.jpg", "hns": []})
    jsonl.write_text("\n".join(lines) + "\n")
    result = _convert("megapairs", {"path": str(jsonl)}, tmp_path / "mp_out")
    assert result["skipped"] == {"empty list of instructions": 1, "image path outside the dataset root": 1}
    assert result["examples"]["empty list of instructions"] == [f"{jsonl} line 2"]

    lasco_root, coco = fx.lasco(tmp_path / "lasco")
    records = json.loads((lasco_root / "lasco_train.json").read_text())
    records[0]["target-image"] = [999999, "train/train2014/COCO_train2014_000000999999.jpg"]
    (lasco_root / "lasco_train.json").write_text(json.dumps(records))
    result = _convert("lasco", {"path": str(lasco_root), "corpus": str(coco)}, tmp_path / "lasco_out")
    assert result["skipped"] == {"COCO id not in the corpus": 1} and result["kept"] == 3
    assert "record 0 (COCO id 999999)" in result["examples"]["COCO id not in the corpus"][0]


def test_a_key_map_that_does_not_fit_fails_at_once_naming_the_shard_and_its_keys(tmp_path):
    root = fx.synthtriplets(tmp_path / "synth")
    with pytest.raises(ConfigError, match="unknown field"):
        _convert("synthtriplets", {"path": str(root), "key_map": {**fx.SYNTH_KEY_MAP, "edit": "txt"}}, tmp_path / "a")
    with pytest.raises(ConfigError, match="key_map is required"):
        _convert("synthtriplets", {"path": str(root)}, tmp_path / "b")
    bad = {**fx.SYNTH_KEY_MAP, "reference": "jpg"}
    with pytest.raises(SourceError, match=r"00000\.tar: the first sample '000000000' has no reference \(jpg\); "
                                          r"its keys are .*src\.jpg.*json fields \['instruction'"):
        _convert("synthtriplets", {"path": str(root), "key_map": bad}, tmp_path / "c")
    keys = list_keys(root / "00000.tar", samples=2)
    assert [k for k, _ in keys] == ["000000000", "000000001"]
    assert keys[0][1]["json"] == "json fields ['instruction', 'source_caption', 'target_caption']"


@pytest.mark.parametrize("hostile", ["../escape.jpg", "/abs/path.jpg", "link"])
def test_a_tar_with_traversal_or_links_is_refused(tmp_path, hostile):
    root = fx.synthtriplets(tmp_path / "synth", shards=1)
    with tarfile.open(root / "00000.tar", "a") as tar:
        info = tarfile.TarInfo("000000009.src.jpg" if hostile == "link" else hostile)
        if hostile == "link":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = 3
            tar.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(UnsafeMember, match="the tar is refused"):
        _convert("synthtriplets", {"path": str(root), "key_map": fx.SYNTH_KEY_MAP}, tmp_path / "out")
    assert not list((tmp_path / "out").glob("part-*"))


def test_conversion_resumes_by_part_and_a_rerun_is_idempotent(tmp_path):
    root = fx.ip2p_folder(tmp_path / "ip2p", prompts=5)
    out = tmp_path / "out"
    first = _convert("ip2p", {"path": str(root)}, out, per_part=4)
    assert first["parts"] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    (out / "part-00001.parquet").unlink()  # a conversion killed in its second part
    again = _convert("ip2p", {"path": str(root)}, out, per_part=4)
    assert {k: again[k] for k in ("read", "kept", "skipped", "parts")} == \
        {k: first[k] for k in ("read", "kept", "skipped", "parts")}
    assert (out / "part-00000.parquet").stat().st_mtime_ns == stamps["part-00000.parquet"]  # kept, not redone
    shorter = _convert("ip2p", {"path": str(root), "max_triplets": 4}, out, per_part=4)
    assert shorter["parts"] == ["part-00000.parquet"] and sorted(p.name for p in out.glob("part-*.parquet")) == [
        "part-00000.parquet"]  # no part of the longer run stays behind


def test_sources_are_drawn_at_their_mix_weights():
    sources = ["generated"] * 90 + ["ip2p"] * 10
    w = source_mix_weights(sources, {"generated": 1.0, "ip2p": 3.0})
    assert float(w[:90].sum()) == pytest.approx(0.25) and float(w[90:].sum()) == pytest.approx(0.75)
    draws = torch.multinomial(w, 40000, replacement=True, generator=torch.Generator().manual_seed(0))
    assert float((draws >= 90).float().mean()) == pytest.approx(0.75, abs=0.01)
    within = torch.from_numpy(np.r_[np.ones(45), 3 * np.ones(45), np.ones(10)])
    w = source_mix_weights(sources, {"generated": 1.0, "ip2p": 1.0}, within)
    assert float(w[:90].sum()) == pytest.approx(0.5) and float(w[45:90].sum()) == pytest.approx(0.375)
    assert source_mix_weights(["ip2p"] * 5, {"ip2p": 2.0}) is None  # one source: uniform, as before
    with pytest.raises(ValueError, match="no mix weight"):
        source_mix_weights(sources, {"generated": 1.0})


def test_an_image_of_the_shards_size_keeps_its_bytes_and_a_truncated_one_is_counted(tmp_path):
    root = fx.ip2p_folder(tmp_path / "ip2p", prompts=2, seeds=1)
    original = (root / "0000000" / "1000_0.jpg").read_bytes()
    truncated = (root / "0000001" / "1000_1.jpg")
    truncated.write_bytes(truncated.read_bytes()[:400])  # a header that opens, pixels that do not
    result = _convert("ip2p", {"path": str(root)}, tmp_path / "out", size=64)
    assert result["skipped"] == {"image does not decode": 1}
    row = _rows(tmp_path / "out")[0]
    assert row["reference_png"] == original  # no second lossy encoding of a JPEG already at size
    assert decode_png(row["target_png"]).shape == (64, 64, 3)


def test_the_source_kinds_are_the_same_in_the_readers_the_registry_and_the_config():
    import dataclasses

    from datagen.config import TripletSourceConfig, TripletSourcesConfig
    from datagen.image_triplets import SOURCES
    from orchestration.registry import TRIPLET_SOURCES

    configured = tuple(f.name for f in dataclasses.fields(TripletSourcesConfig) if f.type in (
        "TripletSourceConfig | None", TripletSourceConfig | None))
    assert SOURCES == TRIPLET_SOURCES == configured
