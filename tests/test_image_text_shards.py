"""Real image-text pairs (img2dataset output) into pair shards: both formats, bad input, reruns,
and the world_pairs step of a profile with sources."""

import io
import tarfile
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from datagen.image_text_shards import SourceError, ingest_shard, source_path
from datagen.shards import decode_png, read_manifest, read_shard
from datagen.world.pairs import PAIR_COLUMNS
from orchestration.params import load_params


def _jpeg(w, h, colour):
    buf = io.BytesIO()
    Image.new("RGB", (w, h), colour).save(buf, format="JPEG")
    return buf.getvalue()


def _tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_webdataset_shard_is_ingested_with_bad_pairs_counted(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _tar(src / "laion-00000.tar", [
        ("000.jpg", _jpeg(120, 80, (255, 0, 0))), ("000.txt", b"a red  square\n"), ("000.json", b"{}"),
        ("001.png", _jpeg(50, 90, (0, 0, 255))), ("001.txt", b"a blue bar"),  # jpeg bytes named .png: decodes
        ("002.jpg", b"not an image"), ("002.txt", b"broken"),
        ("003.jpg", _jpeg(64, 64, (0, 255, 0))), ("003.txt", b"   "),
        ("004.jpg", _jpeg(64, 64, (0, 255, 0))),
        ("005.txt", b"a caption without its image"),
    ])
    out = tmp_path / "pairs" / "laion-00000.parquet"
    m = ingest_shard(src, "laion-00000", out, image_size=32)
    assert m["count"] == 2 and not m["skipped"]
    assert m["skipped_pairs"] == {"image does not decode": 1, "empty or missing caption": 2, "no image": 1}
    assert m["skipped_examples"]["image does not decode"] == "laion-00000.tar:002"
    t = read_shard(out).to_pydict()
    assert set(PAIR_COLUMNS) <= set(t)
    assert t["id"] == ["laion-00000-000", "laion-00000-001"] and t["caption"] == ["a red square", "a blue bar"]
    img = decode_png(t["image_png"][0])
    assert img.shape == (32, 32, 3) and img[..., 0].mean() > 200 and img[..., 2].mean() < 50
    assert t["scene"] == [None, None] and t["segmap_png"] == [None, None]
    # a rerun keeps the complete shard as it is
    before = out.stat().st_mtime_ns
    again = ingest_shard(src, "laion-00000", out, image_size=32)
    assert again["skipped"] is True and again["count"] == 2 and again["skipped_pairs"] == m["skipped_pairs"]
    assert out.stat().st_mtime_ns == before


def test_hostile_tars_and_pixel_bombs_are_refused_and_dot_slash_names_kept(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    bomb = io.BytesIO()
    Image.new("1", (12000, 12000)).save(bomb, format="PNG")  # a few kB that would decode to 144 M pixels
    with tarfile.open(src / "s.tar", "w") as tar:
        for name, data in [("./000000.jpg", _jpeg(40, 40, (255, 0, 0))), ("./000000.txt", b"a red square"),
                           ("../evil.jpg", _jpeg(8, 8, (0, 0, 0))), ("../evil.txt", b"escapes"),
                           ("/abs.jpg", _jpeg(8, 8, (0, 0, 0))), ("bomb.png", bomb.getvalue()),
                           ("bomb.txt", b"too many pixels")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("link.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    m = ingest_shard(src, "s", tmp_path / "out.parquet", image_size=16)
    assert m["count"] == 1 and read_shard(tmp_path / "out.parquet").to_pydict()["id"] == ["s-000000"]
    unsafe = "unsafe member (absolute path, '..' or a link)"
    assert m["skipped_pairs"][unsafe] == 4  # ../evil.jpg, ../evil.txt, /abs.jpg, the link
    assert m["skipped_pairs"][f"image over {8192 * 8192} pixels"] == 1


def test_parquet_shard_and_source_errors(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(pa.table({"key": ["a", "b"], "jpg": [_jpeg(40, 40, (9, 9, 9)), None],
                             "caption": ["grey", "no bytes"]}), src / "s1.parquet")
    m = ingest_shard(src, "s1", tmp_path / "s1.parquet", image_size=16)
    assert m["count"] == 1 and m["skipped_pairs"] == {"no image": 1}
    with pytest.raises(SourceError, match="neither"):
        source_path(src, "s2")
    pq.write_table(pa.table({"url": ["x"], "caption": ["y"]}), src / "s3.parquet")
    with pytest.raises(SourceError, match="needs an image column"):
        ingest_shard(src, "s3", tmp_path / "s3.parquet", image_size=16)
    (src / "s4.tar").write_bytes(b"garbage")
    with pytest.raises(SourceError, match="not a readable tar"):
        ingest_shard(src, "s4", tmp_path / "s4.parquet", image_size=16)
    _tar(src / "s5.tar", [("0.jpg", b"bad"), ("0.txt", b"x")])
    with pytest.raises(SourceError, match="no usable image-text pair"):
        ingest_shard(src, "s5", tmp_path / "s5.parquet", image_size=16)
    assert not (tmp_path / "s5.parquet").exists()  # nothing half-written


def test_world_pairs_step_ingests_in_a_profile_with_sources(tmp_path):
    from orchestration.layout import Layout
    from orchestration.steps import world_pairs

    p = load_params("profiles/tiny.yaml")
    src = tmp_path / "laion"
    src.mkdir()
    shard = p.world.shards[0]
    _tar(src / f"{shard}.tar", [(f"{i:03d}.jpg", _jpeg(48, 48, (i * 40, 0, 0))) for i in range(3)]
         + [(f"{i:03d}.txt", f"image number {i}".encode()) for i in range(3)])
    sources = load_params("profiles/paper-vitl.yaml").sources
    layout = Layout(tmp_path, replace(p, sources=replace(sources, image_text_pairs=str(src))))
    m = world_pairs(layout, shard)
    assert m["count"] == 3 and m["kind"] == "image_text_pairs"
    assert read_manifest(layout.world_pairs(shard))["source"].endswith(f"{shard}.tar")
    images = [decode_png(b) for b in read_shard(layout.world_pairs(shard)).column("image_png").to_pylist()]
    assert all(im.shape == (p.world.image_size, p.world.image_size, 3) for im in images)
    assert np.mean(images[2][..., 0]) > np.mean(images[0][..., 0])
