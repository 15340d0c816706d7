"""The procedural image-pair generator: the world renderer as the identity-preserving generator.

Prompt-to-prompt keeps a Stable Diffusion pair alike by sharing the source's layout with the target;
the world does the same explicitly. The reference caption is resolved with the sample's seed (sizes,
positions, background left open by the caption are drawn from it), the target caption inherits every
open field from the object it continues, and both render with the same seed, so everything the
instruction did not change keeps its pixels. A caption the world cannot parse is a failed generation,
as Stable Diffusion fails on a nonsense caption.
"""

from __future__ import annotations

import numpy as np

from datagen.image_pairs import PairRequest, PairResult
from datagen.world import truth
from datagen.world.captions import CaptionParseError, parse_caption
from datagen.world.render import render
from datagen.world.scene import Scene, WorldObject


def continue_scene(target: Scene, reference: Scene, rng: np.random.Generator) -> Scene:
    """Resolve ``target`` so that each of its objects keeps what it shares with the object of the
    resolved ``reference`` it continues (same position, else same shape and colour, else same shape or
    colour, else same slot); objects with nothing to continue are new and drawn from ``rng``."""
    unmatched = list(range(len(reference.objects)))
    match: dict[int, int] = {}
    rules = (
        lambda t, r: t.position is not None and t.position == r.position,
        lambda t, r: t.shape == r.shape and t.colour == r.colour,
        lambda t, r: t.shape == r.shape or t.colour == r.colour,
    )
    for rule in rules:
        for ti, t in enumerate(target.objects):
            if ti in match:
                continue
            for ri in unmatched:
                if rule(t, reference.objects[ri]):
                    match[ti] = ri
                    unmatched.remove(ri)
                    break
    if len(target.objects) == len(reference.objects):  # same count: an attribute edit, slot by slot
        for ti in range(len(target.objects)):
            if ti not in match and ti in unmatched:
                match[ti] = ti
                unmatched.remove(ti)
    explicit = {o.position for o in target.objects if o.position is not None}
    taken = set(explicit)
    objects = []
    for ti, t in enumerate(target.objects):
        r = reference.objects[match[ti]] if ti in match else None
        size = t.size or (r.size if r else None)
        position = t.position
        if position is None and r is not None and r.position not in taken:
            position = r.position
        objects.append(WorldObject(t.shape, t.colour, size, position))
        if position is not None:
            taken.add(position)
    partial = Scene(tuple(objects), target.background or reference.background, target.texture or reference.texture)
    return partial.resolve(rng)


class ProceduralGenerator:
    name = "procedural"

    def __init__(self, image_size: int):
        self.image_size = image_size

    def generate(self, requests: list[PairRequest]) -> list[PairResult]:
        return [self._one(r) for r in requests]

    def _one(self, r: PairRequest) -> PairResult:
        # p and guidance have no meaning for a renderer: recorded as NaN, not invented
        try:
            source = parse_caption(r.reference)
            target = parse_caption(r.target)
        except CaptionParseError as err:
            return PairResult(float("nan"), float("nan"), None, reason=str(err))
        rng = np.random.default_rng([r.seed, 1])
        ref_scene = source.resolve(rng)
        try:
            tgt_scene = continue_scene(target, ref_scene, rng)
        except ValueError as err:  # e.g. more objects than free positions
            return PairResult(float("nan"), float("nan"), None, reason=f"target does not fit the scene: {err}")
        ref_img, ref_seg = render(ref_scene, r.seed, self.image_size)
        tgt_img, tgt_seg = render(tgt_scene, r.seed, self.image_size)
        ok, why = truth.triplet_consistent(r.method, r.reference, r.instruction, r.target, r.source_keyword,
                                           r.target_keyword)
        if ok:
            hidden = truth.hidden_objects(ref_scene, ref_img, ref_seg) + truth.hidden_objects(tgt_scene, tgt_img,
                                                                                               tgt_seg)
            ok, why = (False, "; ".join(hidden)) if hidden else (True, "ok")
        return PairResult(float("nan"), float("nan"), (ref_img, tgt_img), segmaps=(ref_seg, tgt_seg),
                          world_consistent=ok, world_reason=why)

