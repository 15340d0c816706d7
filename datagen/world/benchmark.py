"""The world benchmark: composed queries with every true target known from the scene graphs.

Per query: a reference scene, an edit worded in the BENCHMARK phrasing family (never a training
phrasing), and a gallery holding several renderings of the edited scene (sizes, positions and jitter
re-drawn: what the instruction did not fix may vary) next to hard negatives (other renderings of the
reference, near-miss edits), among random distractors. Ground truth is every gallery scene whose
content key (object colours and shapes, background, texture; sizes too for size queries) equals the
edited scene's, over the whole gallery.

Query types: replace, colour, add, remove, background, size, negative (an edit plus a negative text
naming an object the results must not show; the gallery holds targets with that object added), mask
(replace the masked object: ambiguous without the mask), combined (two edits in one instruction).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np

from datagen.instructions import BENCHMARK_EDIT_PHRASINGS
from datagen.world import edits
from datagen.world import lexicon as lx
from datagen.world.captions import describe_object
from datagen.world.scene import Scene, WorldObject, sample_scene

QUERY_TYPES = ("replace", "colour", "add", "remove", "background", "size", "negative", "mask", "combined")


@dataclass
class Query:
    qid: int
    kind: str
    reference: int  # index into WorldBenchmark.references
    instruction: str
    target: Scene  # the edited scene (resolved)
    negative: str | None = None  # negative text (what the results must not show)
    negated: tuple[str, str] | None = None  # (colour, shape) of the negated object
    mask_object: int | None = None  # index of the masked object in the reference scene
    ground_truth: list[int] = field(default_factory=list)
    reference_gallery: int = -1  # the reference's own gallery index (it stays in the gallery, as in CIRCO)


@dataclass
class WorldBenchmark:
    references: list[tuple[Scene, int]]  # (scene, render seed)
    gallery: list[tuple[Scene, int]]
    gallery_role: list[str]  # target / reference / near-miss / negated / distractor (for inspection)
    queries: list[Query]


def content_key(scene: Scene, with_size: bool = False) -> tuple:
    objs = sorted((o.colour, o.shape) + ((o.size,) if with_size else ()) for o in scene.objects)
    return tuple(objs), scene.background, scene.texture


def shows(scene: Scene, colour: str, shape: str) -> bool:
    return any(o.colour == colour and o.shape == shape for o in scene.objects)


def _phrase(kind: str, rng: np.random.Generator, **fields) -> str:
    options = BENCHMARK_EDIT_PHRASINGS[kind]
    return options[int(rng.integers(len(options)))].format(**fields)


def _redraw(scene: Scene, rng: np.random.Generator, keep_size: bool) -> Scene:
    """Another scene of the same content: positions (and sizes unless kept) re-drawn."""
    objs = [WorldObject(o.shape, o.colour, o.size if keep_size else None, None) for o in scene.objects]
    return Scene(tuple(objs), scene.background, scene.texture).resolve(rng)


def _visible_colours(background: str) -> list[str]:
    bg = np.array(lx.BACKGROUNDS[background], dtype=float)
    return [c for c, rgb in lx.COLOURS.items() if np.linalg.norm(np.array(rgb) - bg) >= 90]


def _name(scene: Scene, i: int) -> str:
    return edits.reference(replace(scene, objects=scene.objects), i) or f"the {scene.objects[i].colour} " \
        f"{scene.objects[i].shape}"


def _edit(kind: str, ref: Scene, rng: np.random.Generator) -> tuple[Scene, str, Scene | None] | None:
    """(target scene, instruction, near-miss scene) for one single-edit kind, or None if it cannot apply."""
    objs = list(ref.objects)
    nameable = [i for i in range(len(objs)) if edits.reference(ref, i) is not None]
    if kind in ("colour", "replace", "remove", "size") and not nameable:
        return None
    i = nameable[int(rng.integers(len(nameable)))] if nameable else 0
    others = [j for j in range(len(objs)) if j != i]
    if kind == "colour":
        value = _pick(rng, [c for c in _visible_colours(ref.background) if c != objs[i].colour])
        tgt = _with(ref, i, colour=value)
        near = _with(ref, others[0], colour=value) if others else None
        return tgt, _phrase("colour", rng, ref=_name(ref, i), value=value), near
    if kind == "replace":
        value = _pick(rng, [s for s in lx.SHAPES if s != objs[i].shape])
        near = _with(ref, others[0], shape=value) if others else None
        a_value = ("an " if value[0] in "aeiou" else "a ") + value
        return _with(ref, i, shape=value), _phrase("replace", rng, ref=_name(ref, i), a_value=a_value), near
    if kind == "remove":
        if len(objs) < 2:
            return None
        tgt = ref.with_objects(objs[:i] + objs[i + 1:])
        near = ref.with_objects(objs[:others[0]] + objs[others[0] + 1:])
        return tgt, _phrase("remove", rng, ref=_name(ref, i)), near
    if kind == "add":
        if len(objs) >= lx.MAX_OBJECTS:
            return None
        taken = {o.position for o in objs}
        new = WorldObject(_pick(rng, lx.SHAPES), _pick(rng, _visible_colours(ref.background)),
                          _pick(rng, list(lx.SIZES)), _pick(rng, [p for p in lx.POSITIONS if p not in taken]))
        near_obj = replace(new, colour=_pick(rng, [c for c in _visible_colours(ref.background) if c != new.colour]))
        return (ref.with_objects(objs + [new]), _phrase("add", rng, object=describe_object(new, False, False)),
                ref.with_objects(objs + [near_obj]))
    if kind == "background":
        value = _pick(rng, [b for b in lx.BACKGROUNDS if b != ref.background
                            and all(np.linalg.norm(np.array(lx.COLOURS[o.colour]) - np.array(lx.BACKGROUNDS[b])) >= 90
                                    for o in objs)] or [ref.background])
        if value == ref.background:
            return None
        return replace(ref, background=value), _phrase("background", rng, value=value), None
    if kind == "size":
        value = _pick(rng, [s for s in lx.SIZES if abs(lx.SIZES[s] - lx.SIZES[objs[i].size]) >= 0.15] or [None])
        if value is None:
            return None
        return _with(ref, i, size=value), _phrase("size", rng, ref=_name(ref, i), value=value), None
    raise ValueError(kind)


def _with(scene: Scene, i: int, **changes) -> Scene:
    objs = list(scene.objects)
    objs[i] = replace(objs[i], **changes)
    return scene.with_objects(objs)


def _pick(rng, options):
    return options[int(rng.integers(len(options)))]


def build(queries_per_type: int, true_targets: int, distractors: int, seed: int,
          max_objects: int = lx.MAX_OBJECTS) -> WorldBenchmark:
    rng = np.random.default_rng([seed, 9001])
    refs, gallery, roles, queries = [], [], [], []

    def add(scene: Scene, role: str) -> None:
        gallery.append((scene, int(rng.integers(2**31))))
        roles.append(role)

    for kind in QUERY_TYPES:
        made = 0
        while made < queries_per_type:
            ref = sample_scene(rng, max_objects)
            negative = negated = mask_object = None
            if kind in ("negative", "combined"):
                first = _edit(_pick(rng, ["colour", "replace", "add", "remove"]), ref, rng)
                if first is None:
                    continue
                tgt, instruction, near = first
                if kind == "combined":
                    second = _edit("background", tgt, rng)
                    if second is None:
                        continue
                    tgt, instruction = second[0], f"{instruction}, and {second[1]}"
                    near = first[0]  # only the first edit applied
                else:
                    if len(tgt.objects) >= lx.MAX_OBJECTS:
                        continue
                    shown = {(o.colour, o.shape) for o in tgt.objects}
                    colour = _pick(rng, _visible_colours(tgt.background))
                    shape = _pick(rng, lx.SHAPES)
                    if (colour, shape) in shown:
                        continue
                    negated, negative = (colour, shape), f"a {colour} {shape}"
                    free = [p for p in lx.POSITIONS if p not in {o.position for o in tgt.objects}]
                    near = tgt.with_objects(list(tgt.objects) + [WorldObject(shape, colour, "medium", free[0])])
            elif kind == "mask":
                if len(ref.objects) < 2:
                    continue
                mask_object = int(rng.integers(len(ref.objects)))
                new = WorldObject(_pick(rng, lx.SHAPES), _pick(rng, _visible_colours(ref.background)))
                if (new.colour, new.shape) in {(o.colour, o.shape) for o in ref.objects}:
                    continue
                tgt = _with(ref, mask_object, shape=new.shape, colour=new.colour)
                other = (mask_object + 1) % len(ref.objects)
                near = _with(ref, other, shape=new.shape, colour=new.colour)  # the unmasked object replaced
                instruction = _phrase("mask", rng, object=describe_object(new, False, False))
            else:
                made_edit = _edit(kind, ref, rng)
                if made_edit is None:
                    continue
                tgt, instruction, near = made_edit
            q = Query(len(queries), kind, len(refs), instruction, tgt, negative, negated, mask_object)
            refs.append((ref, int(rng.integers(2**31))))
            q.reference_gallery = len(gallery)
            gallery.append(refs[-1])
            roles.append("query reference")
            for _ in range(true_targets):
                add(_redraw(tgt, rng, keep_size=kind == "size"), "target")
            for _ in range(2):
                add(_redraw(ref, rng, keep_size=False), "reference")
            if near is not None:
                for _ in range(2 if kind == "negative" else 1):
                    add(_redraw(near, rng, keep_size=kind == "size"), "negated" if kind == "negative" else "near-miss")
            queries.append(q)
            made += 1
    for _ in range(distractors):
        add(sample_scene(rng, max_objects), "distractor")
    keys = {False: [content_key(s) for s, _ in gallery], True: [content_key(s, True) for s, _ in gallery]}
    for q in queries:
        want = content_key(q.target, q.kind == "size")
        q.ground_truth = [g for g, k in enumerate(keys[q.kind == "size"]) if k == want]
        if not q.ground_truth:
            raise AssertionError(f"query {q.qid} has no ground truth")  # a bug in the generator, never data
    return WorldBenchmark(refs, gallery, roles, queries)


def summary(bench: WorldBenchmark) -> dict:
    return {"queries": len(bench.queries), "gallery": len(bench.gallery), "references": len(bench.references),
            "per_type": dict(Counter(q.kind for q in bench.queries)),
            "mean_ground_truth": float(np.mean([len(q.ground_truth) for q in bench.queries])),
            "gallery_roles": dict(Counter(bench.gallery_role))}
