"""FAISS gallery indexes: exact against brute force, sharded builds, approximate recall, refusals."""

import numpy as np
import pytest

from compodiff.evaluation import cir_metrics
from compodiff.retrieval import GalleryIndex, IndexError_, IndexSpec, rank_all, ranking


def clustered(n, d=64, centres=50, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, d))
    return (c[rng.integers(centres, size=n)] + 0.3 * rng.normal(size=(n, d))).astype(np.float32)


def test_flat_is_exact_and_sharded_build_is_the_same_index(tmp_path):
    x, q = clustered(2000), clustered(50, seed=1)
    one = GalleryIndex.build(x, "enc", IndexSpec("flat"))
    four = GalleryIndex.build(x, "enc", IndexSpec("flat"), shards=4)
    s1, i1 = one.search(q, 10, "enc")
    s4, i4 = four.search(q, 10, "enc")
    brute = ranking(rank_all(q, x))[:, :10]
    np.testing.assert_array_equal(i1, brute)
    np.testing.assert_array_equal(i4, brute)
    one.save(tmp_path / "g.faiss")
    again = GalleryIndex.load(tmp_path / "g.faiss")
    np.testing.assert_array_equal(again.search(q, 10, "enc")[1], brute)
    assert again.info.normalized and again.info.dim == 64 and again.info.size == 2000


@pytest.mark.parametrize("spec", [IndexSpec("ivfpq", nlist=32, m=16, nbits=6, nprobe=16, refine_factor=8),
                                  IndexSpec("hnsw", ef_search=64)])
def test_approximate_indexes_find_the_exact_neighbours(spec):
    x, q = clustered(4000), clustered(100, seed=2)
    exact = ranking(rank_all(q, x))[:, :10]
    _, ids = GalleryIndex.build(x, "enc", spec, shards=2).search(q, 10, "enc")
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact)])
    assert recall > 0.9


def test_refusals_name_the_problem():
    x = clustered(100)
    index = GalleryIndex.build(x, "ViT-L-14/openai")
    with pytest.raises(IndexError_, match="another embedding space"):
        index.search(x[:2], 5, "local-dir:data/encoder")
    with pytest.raises(IndexError_, match="k=101 but the gallery holds 100"):
        index.search(x[:2], 101, "ViT-L-14/openai")
    with pytest.raises(IndexError_, match="dimension 32"):
        index.search(x[:2, :32], 5, "ViT-L-14/openai")
    with pytest.raises(IndexError_, match="empty"):
        GalleryIndex.build(np.zeros((0, 8), np.float32), "enc")
    bad = x.copy()
    bad[7, 3] = np.nan
    with pytest.raises(IndexError_, match="row 7"):
        GalleryIndex.build(bad, "enc")


def test_cir_metrics_per_type():
    retrieved = np.array([[3, 1, 2] + list(range(10, 57)), [5, 6, 7] + list(range(10, 57))])
    m = cir_metrics(retrieved, [[1], [8]], ["colour", "add"])
    assert m["R@1"] == 0.0 and m["R@10"] == 50.0
    assert m["per_type"]["colour"]["mAP@5"] == pytest.approx(50.0) and m["per_type"]["add"]["mAP@50"] == 0.0
