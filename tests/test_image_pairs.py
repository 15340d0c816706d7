"""The procedural generator, the resumable shard writer and the CLIP filter's rules."""

import numpy as np
import pytest

from datagen.clip_filter import apply_filter
from datagen.config import ClipFilterConfig
from datagen.image_pairs import PairRequest, PairResult, generate_shard, sample_seed
from datagen.shards import decode_png, read_shard
from datagen.world.captions import parse_caption
from datagen.world.render import render
from datagen.world_generator import ProceduralGenerator, continue_scene

TRIPLETS = {
    "id": ["a", "b", "c"],
    "reference": ["a red star at the top left and a large blue circle on a beige background",
                  "a green heart on a navy striped background",
                  "a yellow cross on a teal background"],
    "instruction": ["change the colour of the red star to purple", "replace heart with hexagon",
                    "make it glitter"],
    "target": ["a purple star at the top left and a large blue circle on a beige background",
               "a green hexagon on a navy striped background",
               "a yellow cross made of glitter on a teal background"],
    "method": ["llm", "keyword", "llm"],
    "source_keyword": [None, "heart", None],
    "target_keyword": [None, "hexagon", None],
    "template_id": [-1, 0, -1],
}


def _request(i, sample=0):
    return PairRequest(*(TRIPLETS[c][i] for c in ("id", "reference", "instruction", "target", "method",
                                                   "source_keyword", "target_keyword", "template_id")),
                       sample, sample_seed(0, TRIPLETS["id"][i], sample))


def _dilate(mask):
    out = mask.copy()
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            out |= np.roll(np.roll(mask, dy, 0), dx, 1)
    return out


def test_world_pair_keeps_everything_the_edit_did_not_touch():
    res = ProceduralGenerator(64).generate([_request(0)])[0]
    ref, tgt = res.images
    seg_ref, seg_tgt = res.segmaps
    star = _dilate(seg_ref == 1)  # the edited object (index 0) and its anti-aliased edge
    assert (seg_ref == seg_tgt).all()  # a colour edit moves nothing
    np.testing.assert_array_equal(ref[~star], tgt[~star])
    assert np.abs(ref[star].astype(int) - tgt[star].astype(int)).mean() > 30  # and the star did change


def test_keyword_swap_keeps_the_layout_and_the_other_fields():
    source = parse_caption(TRIPLETS["reference"][1]).resolve(np.random.default_rng(3))
    target = continue_scene(parse_caption(TRIPLETS["target"][1]), source, np.random.default_rng(4))
    assert (target.background, target.texture) == (source.background, source.texture)
    assert target.objects[0].position == source.objects[0].position
    assert target.objects[0].size == source.objects[0].size
    assert target.objects[0].shape == "hexagon"


def test_removal_keeps_the_remaining_objects_in_place():
    ref = parse_caption("a red star and a blue circle and a green heart on a beige plain background")
    source = ref.resolve(np.random.default_rng(0))
    target = continue_scene(parse_caption("a red star and a green heart on a beige plain background"), source,
                            np.random.default_rng(1))
    assert target.objects == (source.objects[0], source.objects[2])
    a, sa = render(source, 5)
    b, sb = render(target, 5)
    keep = ((sa == 1) | (sa == 3)) & ~_dilate(sa == 2)  # away from the removed circle's edge
    np.testing.assert_array_equal(a[keep], b[keep])


def test_unparseable_target_is_a_recorded_failure_and_truth_is_reported():
    out = ProceduralGenerator(32).generate([_request(i) for i in range(3)])
    assert out[0].world_consistent is True and out[1].world_consistent is True
    assert out[2].images is None and "glitter" in out[2].reason


def test_world_truth_flags_inconsistent_triplets():
    req = _request(0)
    wrong = PairRequest(req.triplet_id, req.reference, "change the colour of the red star to green", req.target,
                        "llm", None, None, -1, 0, req.seed)
    res = ProceduralGenerator(32).generate([wrong])[0]
    assert res.images is not None and res.world_consistent is False


class _Flaky:
    """A generator that dies in its second call, as a killed process would."""

    name = "procedural"

    def __init__(self, die_at: int | None):
        self.inner, self.calls, self.die_at = ProceduralGenerator(32), 0, die_at

    def generate(self, requests):
        self.calls += 1
        if self.calls == self.die_at:
            raise KeyboardInterrupt("killed")
        return self.inner.generate(requests)


def test_a_killed_shard_resumes_where_it_stopped(tmp_path):
    path = tmp_path / "s00.parquet"
    with pytest.raises(KeyboardInterrupt):
        generate_shard(_Flaky(die_at=2), TRIPLETS, 2, 0, 1, path, {"shard": "s00"}, log=lambda m: None)
    assert not path.exists()  # nothing half-written
    assert len(list((tmp_path / "s00.parts").glob("*.parquet"))) == 1
    gen = _Flaky(None)
    stats = generate_shard(gen, TRIPLETS, 2, 0, 1, path, {"shard": "s00"}, log=lambda m: None)
    assert gen.calls == 2 and stats["pairs"] == 6 and stats["failed"] == 2
    assert not (tmp_path / "s00.parts").exists()
    fresh = tmp_path / "fresh.parquet"
    generate_shard(_Flaky(None), TRIPLETS, 2, 0, 1, fresh, {"shard": "s00"}, log=lambda m: None)
    a, b = read_shard(path).to_pydict(), read_shard(fresh).to_pydict()
    assert a["id"] == b["id"] and a["target_png"] == b["target_png"]  # resumed == uninterrupted
    again = generate_shard(_Flaky(1), TRIPLETS, 2, 0, 1, path, {"shard": "s00"}, log=lambda m: None)
    assert again["skipped"]  # idempotent: a complete shard is not regenerated
    # and it reports what it holds, as the write did: the Dagster asset sums these over its partitions
    assert {k: again[k] for k in ("pairs", "failed")} == {k: stats[k] for k in ("pairs", "failed")}
    decode_png(a["reference_png"][0])


def test_non_finite_images_are_refused(tmp_path):
    class Bad:
        name = "bad"

        def generate(self, requests):
            img = np.full((4, 4, 3), np.nan)
            return [PairResult(0.5, 7.5, (img, img)) for _ in requests]

    with pytest.raises(ValueError, match="non-finite reference image for triplet a"):
        generate_shard(Bad(), TRIPLETS, 1, 0, 8, tmp_path / "x.parquet", {}, log=lambda m: None)
    assert not (tmp_path / "x.parquet").exists()


CFG = ClipFilterConfig(sim_image=0.7, sim_0=0.2, sim_1=0.2, sim_dir=0.2, sim_keyword=0.2, sim_instruction=0.2,
                       best_k=2, min_keep_rate=0.0)


def test_filter_thresholds_best_k_and_what_each_removed():
    n = 6
    s = {"sim_0": np.full(n, 0.5), "sim_1": np.full(n, 0.5), "sim_image": np.full(n, 0.9),
         "sim_dir": np.array([0.3, 0.5, 0.4, 0.1, 0.6, 0.6]),
         "sim_keyword": np.array([np.nan, np.nan, np.nan, np.nan, 0.1, 0.3]),
         "sim_instruction": np.array([0.3, 0.3, 0.3, 0.3, np.nan, np.nan])}
    s["sim_image"][1] = 0.69  # exactly the paper's rule: >= 0.70
    ids = ["t", "t", "t", "u", "v", "v"]
    keep, stats = apply_filter(s, ids, CFG)
    assert keep.tolist() == [True, False, True, False, False, True]
    assert stats["removed_by"]["sim_image"] == 1 and stats["removed_by"]["sim_dir"] == 1
    assert stats["removed_by"]["sim_keyword"] == 1 and stats["removed_by"]["best_k"] == 0
    tight = ClipFilterConfig(**{**CFG.__dict__, "best_k": 1})
    keep1, stats1 = apply_filter(s, ids, tight)
    assert keep1.tolist() == [False, False, True, False, False, True]  # best sim_dir of t's survivors
    assert stats1["removed_by"]["best_k"] == 1 and stats1["triplets_kept"] == 2


def test_failed_generations_are_counted_not_scored():
    n = 3
    s = {k: np.full(n, 0.9) for k in ("sim_0", "sim_1", "sim_image", "sim_dir", "sim_instruction")}
    s["sim_keyword"] = np.full(n, np.nan)
    keep, stats = apply_filter(s, ["a", "b", "c"], CFG, valid=np.array([True, False, True]))
    assert keep.tolist() == [True, False, True] and stats["removed_by"]["generation failed"] == 1


def test_per_method_thresholds_replace_the_shared_ones_for_that_method_only():
    n = 4
    s = {k: np.full(n, 0.9) for k in ("sim_0", "sim_1", "sim_dir", "sim_instruction", "sim_keyword")}
    s["sim_image"] = np.array([0.6, 0.6, 0.8, 0.8])
    methods = ["keyword", "llm", "keyword", "llm"]
    cfg = ClipFilterConfig(**{**CFG.__dict__, "per_method": {"llm": {"sim_image": 0.5}}})
    keep, stats = apply_filter(s, ["a", "b", "c", "d"], cfg, methods=methods)
    assert keep.tolist() == [False, True, True, True]  # 0.6 clears the LLM's 0.5, not the shared 0.7
    assert stats["thresholds_per_method"] == {"llm": {**stats["thresholds"], "sim_image": 0.5}}
    assert apply_filter(s, ["a", "b", "c", "d"], cfg)[0].tolist() == [False, False, True, True]  # no methods given
    bad = ClipFilterConfig(**{**CFG.__dict__, "per_method": {"llm": {"sim_imgae": 0.5}}})
    with pytest.raises(ValueError, match=r"clip_filter.per_method.llm: unknown score\(s\) \['sim_imgae'\]"):
        apply_filter(s, ["a", "b", "c", "d"], bad, methods=methods)
    with pytest.raises(ValueError, match=r"clip_filter.per_method.llm: unknown score"):
        apply_filter({k: v[[0, 2]] for k, v in s.items()}, ["a", "c"], bad,
                     methods=["keyword", "keyword"])  # no LLM pair in the batch


def test_llm_share_gives_llm_triplets_their_part_of_each_shards_budget(tmp_path):
    from dataclasses import replace
    from pathlib import Path

    from datagen.image_pairs import TRIPLET_COLUMNS
    from datagen.shards import write_shard
    from orchestration.layout import Layout
    from orchestration.pair_steps import shard_of, triplets_for_shard
    from orchestration.params import load_params

    base = load_params(Path(__file__).resolve().parents[1] / "profiles" / "tiny.yaml")
    n = 400
    rows = {c: [None] * n for c in TRIPLET_COLUMNS}
    rows.update(id=[f"t{i}" for i in range(n)], reference=["r"] * n, instruction=["i"] * n, target=["t"] * n,
                method=["llm" if i % 10 == 0 else "keyword" for i in range(n)], template_id=[-1] * n)

    def pick(share, cap=40):
        params = replace(base, image_pairs=replace(base.image_pairs, llm_share=share, max_triplets_per_shard=cap))
        layout = Layout(tmp_path, params)
        write_shard(layout.caption_triplets, rows, {"kind": "caption_triplets"})
        return triplets_for_shard(layout, "s00")

    mine = [i for i in rows["id"] if shard_of(i, base.world.shards) == "s00"]
    llm_here = sum(rows["method"][int(i[1:])] == "llm" for i in mine)
    got = pick(0.5)
    assert len(got["id"]) == 40 and got["method"].count("llm") == min(20, llm_here)
    assert got == pick(0.5) and got["id"] == sorted(got["id"], key=rows["id"].index)  # seeded, in table order
    uniform = pick(None)
    assert len(uniform["id"]) == 40 and uniform["method"].count("llm") < got["method"].count("llm")
    few = pick(0.5, cap=10 ** 6)  # a budget above the shard: everything, once
    assert sorted(few["id"]) == sorted(mine)
