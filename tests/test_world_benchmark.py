"""The world benchmark: zero-shot phrasing, ground truth from scene graphs, official-format exports."""

import numpy as np

from compodiff.benchmarks import circo, cirr, fashioniq, genecis
from datagen.instructions import is_training_phrasing
from datagen.world import benchmark as wb
from datagen.world.benchmark_export import export
from datagen.world.render import render


def test_no_benchmark_instruction_is_a_training_phrasing():
    bench = wb.build(20, 3, 10, seed=1)
    assert all(not is_training_phrasing(q.instruction) for q in bench.queries)
    assert is_training_phrasing("make the red star blue") and is_training_phrasing("replace star with heart")
    assert set(q.kind for q in bench.queries) == set(wb.QUERY_TYPES)


def test_ground_truth_is_every_gallery_scene_of_the_edited_content():
    bench = wb.build(6, 3, 30, seed=2)
    for q in bench.queries:
        key = wb.content_key(q.target, q.kind == "size")
        found = [g for g, (s, _) in enumerate(bench.gallery) if wb.content_key(s, q.kind == "size") == key]
        assert q.ground_truth == found and len(found) >= 3
        assert q.reference_gallery not in q.ground_truth  # the unedited reference is never a target
        if q.kind == "negative":
            colour, shape = q.negated
            assert not wb.shows(q.target, colour, shape)
            assert any(wb.shows(s, colour, shape) for s, _ in bench.gallery)  # the gallery tempts


def test_exports_load_with_the_official_loaders(tmp_path):
    bench = wb.build(2, 3, 10, seed=3)
    images = [render(s, seed, 32)[0] for s, seed in bench.gallery]
    queries = [{"qid": q.qid, "kind": q.kind, "instruction": q.instruction, "reference": q.reference_gallery,
                "ground_truth": q.ground_truth, "hard_negatives": [g for g in range(len(images))
                                                                   if g not in q.ground_truth][:6]}
               for q in bench.queries]
    root = export(images, queries, tmp_path / "exports")
    sim = np.random.default_rng(0).random((len(queries), len(images)))
    fiq = fashioniq.load(root / "fashioniq", "world")
    assert len(fiq.candidates) == len(queries) and 0 <= fashioniq.recall(sim, fiq.target_indices())["R@10"] <= 100
    c = cirr.load(root / "cirr", "val")
    assert all(len(m) == 6 for m in c.members) and "R_subset@1" in cirr.metrics(sim, c)
    co = circo.load(root / "circo", "val")
    assert co.ground_truths[0] == [g + 1 for g in queries[0]["ground_truth"]]
    task = genecis.load(root / "genecis" / "change_object.json", root / "genecis" / "images")
    assert task.image(task.templates[0].target).size == (32, 32)
