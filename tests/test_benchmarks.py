"""The four evaluators on fixture files in the official formats, against hand-computed numbers."""

import json

import numpy as np
import pytest
from PIL import Image

from compodiff.benchmarks import circo, cirr, fashioniq, genecis
from compodiff.benchmarks.common import AnnotationError


def _img(path, size=(8, 8), colour=(200, 0, 0)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def test_fashioniq_joins_and_recall_keep_the_reference(tmp_path):
    _json(tmp_path / "captions/cap.dress.val.json", [
        {"candidate": "A", "target": "B", "captions": ["is shorter.", "has no sleeves?"]},
        {"candidate": "B", "target": "C", "captions": ["is red", "is longer"]}])
    _json(tmp_path / "image_splits/split.dress.val.json", ["A", "B", "C"])
    for a in "ABC":
        _img(tmp_path / f"images/{a}.jpg")
    d = fashioniq.load(tmp_path, "dress", join="clip4cir")
    assert d.texts[0] == ["Is shorter and has no sleeves"]
    assert fashioniq.load(tmp_path, "dress", join="searle").texts[0] == ["is shorter and has no sleeves",
                                                                         "has no sleeves and is shorter"]
    assert fashioniq.load(tmp_path, "dress", join="pic2word").texts[0] == ["has no sleeves? and is shorter."]
    sim = np.array([[0.9, 0.5, 0.1],   # the reference A ranks first: not removed, the target B is 2nd
                    [0.2, 0.3, 0.1]])  # target C last
    r = fashioniq.recall(sim, d.target_indices(), ks=(1, 2, 3))
    assert r == {"R@1": 0.0, "R@2": 50.0, "R@3": 100.0}
    assert fashioniq.average({"a": {"R@10": 10, "R@50": 30}, "b": {"R@10": 20, "R@50": 40}}) == \
        {"R@10": 15.0, "R@50": 35.0, "Avg": 25.0}
    (tmp_path / "images/C.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="C.jpg"):
        fashioniq.load(tmp_path, "dress")


def _cirr(tmp_path, split="val"):
    names = [f"n{i}" for i in range(8)]
    _json(tmp_path / f"image_splits/split.rc2.{split}.json", {n: f"./dev/{n}.png" for n in names})
    for n in names:
        _img(tmp_path / f"dev/{n}.png")
    members = ["n0", "n1", "n2", "n3", "n4", "n5"]
    entries = [{"pairid": 7, "reference": "n0", "target_hard": "n3", "target_soft": {"n3": 1.0},
                "caption": "make it blue", "img_set": {"id": 1, "members": members}}]
    _json(tmp_path / f"captions/cap.rc2.{split}.json", entries)
    return cirr.load(tmp_path, split)


def test_cirr_removes_the_reference_and_ranks_the_subset_in_model_order(tmp_path):
    d = _cirr(tmp_path)
    #           n0    n1   n2   n3   n4   n5   n6   n7
    sim = np.array([[1.0, 0.2, 0.8, 0.7, 0.1, 0.0, 0.9, 0.75]])
    m = cirr.metrics(sim, d)
    # without the reference: n6 (0.9), n2 (0.8), n7 (0.75), n3 (0.7): the target is 4th
    assert (m["R@1"], m["R@5"]) == (0.0, 100.0)
    # subset (n1..n5) in model order: n2, n3, n1, n4, n5: the target is 2nd
    assert (m["R_subset@1"], m["R_subset@2"]) == (0.0, 100.0)
    rec, sub = cirr.submission(sim, d, tmp_path / "sub", "test")
    r = json.loads(rec.read_text())
    assert r["version"] == "rc2" and r["metric"] == "recall" and r["7"][:4] == ["n6", "n2", "n7", "n3"]
    assert "n0" not in r["7"] and json.loads(sub.read_text())["7"] == ["n2", "n3", "n1"]


def test_cirr_malformed_entry_is_named(tmp_path):
    _cirr(tmp_path)
    _json(tmp_path / "captions/cap.rc2.val.json", [{"pairid": 1, "reference": "n0", "caption": "x",
                                                      "img_set": {"members": []}}])
    with pytest.raises(AnnotationError, match="entry 0.*target_hard"):
        cirr.load(tmp_path, "val")


def test_circo_map_as_the_server_computes_it():
    gt = [[5, 9]]
    retrieved = [[5, 1, 9, 2, 3] + list(range(100, 145))]
    # P@1 = 1 (rel), P@3 = 2/3 (rel): AP@5 = (1 + 2/3) / min(2, 5)
    m = circo.metrics(retrieved, gt, targets=[5], aspects=[["color"]])
    assert m["mAP@5"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    assert m["R@5"] == 100.0 and m["mAP@10[color]"] == pytest.approx(m["mAP@10"])
    assert circo.average_precision([1, 2, 3], [3], 2) == 0.0  # ground truth below K
    ids = circo.top_unique(np.array([[0.1, 0.9, 0.9, 0.5]]), [10, 20, 20, 30], k=3)
    assert ids == [[20, 30, 10]]  # unique ids, duplicates skipped, ties by gallery index


def test_circo_files_and_submission(tmp_path):
    _json(tmp_path / "COCO2017_unlabeled/annotations/image_info_unlabeled2017.json",
          {"images": [{"id": i} for i in range(1, 61)]})
    for i in range(1, 61):
        _img(tmp_path / f"COCO2017_unlabeled/unlabeled2017/{i:012d}.jpg", (2, 2))
    _json(tmp_path / "annotations/val.json", [{"id": 0, "reference_img_id": 1, "target_img_id": 3,
                                               "relative_caption": "x", "shared_concept": "y",
                                               "gt_img_ids": [3, 4], "semantic_aspects": ["color"]}])
    d = circo.load(tmp_path, "val")
    assert d.gallery[:2] == [1, 2] and d.ground_truths == [[3, 4]]
    sim = np.linspace(1, 0, 60)[None]
    top = circo.top_unique(sim, d.gallery)
    path = circo.submission(top, tmp_path / "circo.json")
    assert list(json.loads(path.read_text())) == ["0"] and len(json.loads(path.read_text())["0"]) == 50
    _json(tmp_path / "annotations/val.json", [{"id": 3, "reference_img_id": 1, "relative_caption": "x",
                                               "shared_concept": "y", "gt_img_ids": [3], "target_img_id": 3}])
    with pytest.raises(AnnotationError, match="not its index"):
        circo.load(tmp_path, "val")


def test_genecis_crop_recall_and_mean(tmp_path):
    im = Image.new("RGB", (100, 50), (255, 255, 255))
    crop = genecis.attribute_crop(im, [10, 10, 20, 10])
    # left 0 (10 - 14 clamped), top 3, right 34, bottom 20: 34 x 17 -> padded to 34 x 34
    assert crop.size == (34, 34)
    assert crop.getpixel((0, 0)) == (0, 0, 0) and crop.getpixel((17, 17)) == (255, 255, 255)
    r = genecis.recall([np.array([0.9, 0.1, 0.2]), np.array([0.1, 0.5, 0.2]), np.array([0.3, 0.3, 0.1])])
    # target (index 0) ranks 1st, 3rd, and 1st on an exact tie (by index)
    assert r["R@1"] == pytest.approx(200 / 3) and r["R@3"] == 100.0
    assert genecis.mean_r1({"a": {"R@1": 10.0}, "b": {"R@1": 30.0}}) == 20.0
    _json(tmp_path / "focus_object.json", [{"reference": {"val_image_id": 1}, "target": {"val_image_id": 2},
                                            "gallery": [{"val_image_id": 3}], "condition": "dog"}])
    task = genecis.load(tmp_path / "focus_object.json", tmp_path / "coco")
    with pytest.raises(FileNotFoundError, match="000000000002.jpg"):
        _img(tmp_path / "coco/000000000001.jpg")
        task.image(task.templates[0].target)
