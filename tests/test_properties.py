"""Property-based tests (hypothesis): the caption parser and the edit grammar, the four benchmarks'
annotation loaders, the submission writers and the config loader, over generated inputs."""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from compodiff.benchmarks import circo, cirr, fashioniq, genecis
from compodiff.benchmarks.common import AnnotationError
from compodiff.config_schema import ConfigError, from_dict
from compodiff.profiles import resolve
from datagen.world.captions import CaptionParseError, caption, full_caption, parse_caption
from datagen.world.edits import apply_edits, consistent, instructions, parse_instructions, sample_edits
from datagen.world.scene import sample_scene
from orchestration.params import Params

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
scenes = st.integers(0, 2**32 - 1).map(lambda s: sample_scene(np.random.default_rng(s)))
seeds = st.integers(0, 2**32 - 1)
json_values = st.recursive(st.none() | st.booleans() | st.integers(-5, 10**6) | st.floats(allow_nan=True)
                           | st.text(max_size=8), lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)


# --- the caption parser and the edit grammar -----------------------------------------------------
@SETTINGS
@given(scenes)
def test_the_full_caption_parses_back_to_its_scene(scene):
    assert parse_caption(full_caption(scene)) == scene


@SETTINGS
@given(scenes, seeds, st.integers(0, 4))
def test_every_phrasing_of_a_caption_keeps_each_object_and_the_background(scene, seed, phrasing):
    parsed = parse_caption(caption(scene, np.random.default_rng(seed), phrasing=phrasing))
    assert [(o.shape, o.colour) for o in parsed.objects] == [(o.shape, o.colour) for o in scene.objects]
    assert parsed.background == scene.background
    for got, want in zip(parsed.objects, scene.objects):  # a size or position is left out or kept, never changed
        assert got.size in (None, want.size) and got.position in (None, want.position)


@SETTINGS
@given(st.text(max_size=60) | st.lists(st.sampled_from(["a", "red", "circle", "on", "navy", "background", "at",
                                                        "the", "left", "and", ",", "big", "star", "of"]),
                                       max_size=12).map(" ".join))
def test_any_text_is_a_scene_or_a_caption_parse_error(text):
    try:
        scene = parse_caption(text)
    except CaptionParseError as err:
        assert err.caption == str(text) and err.reason
    else:
        assert 1 <= len(scene.objects)


@SETTINGS
@given(scenes, seeds, st.floats(0.0, 1.0))
def test_an_instruction_parses_back_to_the_edits_it_words(scene, seed, p_combined):
    rng = np.random.default_rng(seed)
    steps = sample_edits(scene, rng, p_combined)
    assume(steps)
    text = instructions(scene, steps, rng)
    target = apply_edits(scene, steps)
    assert apply_edits(scene, parse_instructions(text, scene)) == target
    assert consistent(full_caption(scene), text, full_caption(target)) == (True, "ok")


# --- the annotation loaders: a malformed file is an AnnotationError naming it, never a crash --------
def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _cirr(root: Path, entries, split_map) -> None:
    _write(root / "captions" / "cap.rc2.val.json", entries)
    _write(root / "image_splits" / "split.rc2.val.json", split_map)


def _circo(root: Path, entries, info) -> None:
    _write(root / "annotations" / "val.json", entries)
    _write(root / "COCO2017_unlabeled" / "annotations" / "image_info_unlabeled2017.json", info)


def _fashioniq(root: Path, entries, gallery) -> None:
    _write(root / "captions" / "cap.dress.val.json", entries)
    _write(root / "image_splits" / "split.dress.val.json", gallery)


def _load(kind: str, root: Path):
    if kind == "cirr":
        return cirr.load(root, "val", check_images=False)
    if kind == "circo":
        return circo.load(root, "val", check_images=False)
    if kind == "fashioniq":
        return fashioniq.load(root, "dress", "val", check_images=False)
    return genecis.load(root / "change_attribute.json", root / "images")


FIELDS = {"cirr": ("pairid", "reference", "caption", "img_set", "target_hard"),
          "circo": ("id", "reference_img_id", "relative_caption", "shared_concept", "gt_img_ids", "target_img_id"),
          "fashioniq": ("candidate", "captions", "target"),
          "genecis": ("reference", "target", "gallery", "condition")}


@st.composite
def malformed_entries(draw, kind: str):
    """Entries with the loader's fields, each value arbitrary JSON, some fields dropped; or not a list."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    keys = FIELDS[kind]
    return [{k: draw(json_values) for k in keys if draw(st.integers(0, 7))} for _ in range(draw(st.integers(0, 3)))]


@SETTINGS
@given(st.sampled_from(sorted(FIELDS)).flatmap(lambda k: st.tuples(st.just(k), malformed_entries(k), json_values)))
def test_a_malformed_annotation_file_is_an_annotation_error_naming_it(case):
    kind, entries, other = case
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        if kind == "cirr":
            _cirr(root, entries, other)
        elif kind == "circo":
            _circo(root, entries, other)
        elif kind == "fashioniq":
            _fashioniq(root, entries, other)
        else:
            _write(root / "change_attribute.json", entries)
        try:
            _load(kind, root)
        except AnnotationError as err:
            assert str(root) in str(err)
        except ValueError as err:  # FashionIQ: a caption list of two strings, joined; anything else is a bug
            pytest.fail(f"{kind}: {type(err).__name__} {err}")


names = st.text("abcdefgh0123456789-", min_size=1, max_size=6)


@SETTINGS
@given(st.lists(names, min_size=2, max_size=8, unique=True).flatmap(
    lambda gallery: st.tuples(st.just(gallery), st.lists(st.tuples(st.sampled_from(gallery), st.sampled_from(gallery),
                                                                   st.text(max_size=20)), min_size=1, max_size=4))))
def test_a_well_formed_cirr_file_loads_as_written(case):
    gallery, rows = case
    entries = [{"pairid": i, "reference": r, "target_hard": t, "caption": c,
                "img_set": {"id": i, "members": gallery[:6]}} for i, (r, t, c) in enumerate(rows)]
    with tempfile.TemporaryDirectory() as d:
        _cirr(Path(d), entries, {g: f"./img/{g}.png" for g in gallery})
        data = cirr.load(d, "val", check_images=False)
    assert data.references == [r for r, _, _ in rows] and data.targets == [t for _, t, _ in rows]
    assert data.captions == [c for _, _, c in rows] and data.gallery == gallery


# --- the submission writers: what is written reads back as the ranking ----------------------------
@SETTINGS
@given(st.integers(7, 60), st.integers(1, 5), seeds)
def test_the_cirr_submission_reads_back_as_the_reference_free_ranking(n, queries, seed):
    rng = np.random.default_rng(seed)
    gallery = [f"img-{i}" for i in range(n)]
    refs = [int(x) for x in rng.integers(0, n, queries)]
    members = [[gallery[r]] + [gallery[j] for j in rng.choice([j for j in range(n) if j != r], 5, replace=False)]
               for r in refs]
    data = cirr.CIRRSplit("test1", [100 + q for q in range(queries)], [gallery[r] for r in refs], [None] * queries,
                          ["c"] * queries, members, gallery, {})
    sim = rng.standard_normal((queries, n))
    with tempfile.TemporaryDirectory() as d:
        recall_file, subset_file = cirr.submission(sim, data, d, "run")
        recall, subset = json.loads(recall_file.read_text()), json.loads(subset_file.read_text())
    assert recall.pop("version") == subset.pop("version") == "rc2"
    assert (recall.pop("metric"), subset.pop("metric")) == ("recall", "recall_subset")
    assert set(recall) == set(subset) == {str(p) for p in data.pairids}
    for q, pid in enumerate(data.pairids):
        order = [gallery[j] for j in np.argsort(-sim[q], kind="stable") if j != refs[q]]
        assert recall[str(pid)] == order[:50]
        assert subset[str(pid)] == [g for g in order if g in members[q][1:]][:3]


@SETTINGS
@given(st.lists(st.lists(st.integers(0, 10**12), min_size=50, max_size=50), min_size=1, max_size=5))
def test_the_circo_submission_reads_back_as_written(retrieved):
    with tempfile.TemporaryDirectory() as d:
        back = json.loads(circo.submission(retrieved, Path(d) / "sub.json").read_text())
    assert back == {str(i): r for i, r in enumerate(retrieved)}


# --- the config loader: an unknown, missing or mistyped key is a ConfigError naming it --------------
WORLD = resolve(ROOT / "profiles" / "world.yaml")


def _paths(d: dict, prefix: tuple = ()) -> list[tuple]:
    out = []
    for k, v in d.items():
        out.append(prefix + (k,))
        if isinstance(v, dict):
            out += _paths(v, prefix + (k,))
    return out


PATHS = _paths(WORLD)


def _parent(data: dict, path: tuple) -> dict:
    for k in path[:-1]:
        data = data[k]
    return data


@SETTINGS
@given(st.sampled_from(PATHS), st.sampled_from(["unknown", "missing", "mistyped"]), st.text("abcxyz_", min_size=1,
                                                                                             max_size=8))
def test_a_bad_key_in_params_is_a_config_error_naming_it(path, change, word):
    data = copy.deepcopy(WORLD)
    parent, key = _parent(data, path), path[-1]
    dotted = ".".join(path)
    if change == "unknown":
        target = parent[key] if isinstance(parent[key], dict) else parent
        where = path if isinstance(parent[key], dict) else path[:-1]
        assume(f"zz{word}" not in target)
        target[f"zz{word}"] = 1
        with pytest.raises(ConfigError, match=".".join((*where, f"zz{word}")).replace(".", r"\.")):
            from_dict(Params, data)
    elif change == "missing":
        del parent[key]
        try:
            from_dict(Params, data)
        except ConfigError as err:
            assert f"missing key {dotted}" in str(err)
        # else: the key has a default, which is what the schema says
    else:
        assume(not isinstance(parent[key], dict) or not parent[key])
        parent[key] = {"not": ["a", "value"]}
        try:
            from_dict(Params, data)
        except ConfigError as err:
            assert dotted in str(err)
        else:  # only a mapping-typed field takes a mapping
            import typing
            assert "dict" in str(typing.get_type_hints(_owner(path))[key])


def _owner(path: tuple):
    """The dataclass that holds the field at ``path``."""
    import dataclasses
    import typing

    cls = Params
    for k in path[:-1]:
        tp = typing.get_type_hints(cls)[k]
        args = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
        cls = args[0] if args else tp
    return cls
