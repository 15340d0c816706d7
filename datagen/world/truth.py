"""The world's ground truth of a generated triplet: is the pair consistent with its instruction?

Two things can go wrong, as with Stable Diffusion: the caption triplet itself (an LLM edit whose
output is not its instruction applied to the input, a keyword swap that is not exact), and the
images (an object the caption names is hidden under another or nearly the colour of the background,
as a diffusion model drops an object or washes it out). The CLIP filter never sees this truth; the
filter is measured against it.
"""

from __future__ import annotations

import numpy as np

from datagen.world import edits
from datagen.world import lexicon as lx
from datagen.world.captions import CaptionParseError, parse_caption
from datagen.world.scene import Scene

MIN_VISIBLE_FRACTION = 0.004  # of the image: 16 pixels at 64x64, a tiny shape is about 80
MIN_CONTRAST = 60.0  # RGB distance between an object's colour and the background's


def keyword_swap_is_exact(reference: str, target: str, source_keyword: str | None,
                          target_keyword: str | None) -> tuple[bool, str]:
    """The target renders and is the reference with exactly the keyword swapped."""
    try:
        parse_caption(target)
    except CaptionParseError as err:
        return False, str(err)
    if not source_keyword or source_keyword == target_keyword:
        return False, "no keyword swap"
    ref_words, tgt_words = reference.split(), target.split()
    diff = [(x.strip(",."), y.strip(",.")) for x, y in zip(ref_words, tgt_words) if x != y]
    if len(ref_words) != len(tgt_words) or diff != [(source_keyword, target_keyword)]:
        return False, "the target is not the reference with one keyword swapped"
    return True, "ok"


def triplet_consistent(method: str, reference: str, instruction: str, target: str,
                       source_keyword: str | None, target_keyword: str | None) -> tuple[bool, str]:
    if method == "keyword":
        return keyword_swap_is_exact(reference, target, source_keyword, target_keyword)
    return edits.consistent(reference, instruction, target)


def hidden_objects(scene: Scene, image: np.ndarray, segmap: np.ndarray) -> list[str]:
    """Objects of a resolved scene that the image does not show (covered, or lost in the background)."""
    area = segmap.size
    bg = np.array(lx.BACKGROUNDS[scene.background], dtype=float)
    out = []
    for i, o in enumerate(scene.objects):
        if (segmap == i + 1).sum() < MIN_VISIBLE_FRACTION * area:
            out.append(f"the {o.colour} {o.shape} is covered")
        elif np.linalg.norm(np.array(lx.COLOURS[o.colour], dtype=float) - bg) < MIN_CONTRAST:
            out.append(f"the {o.colour} {o.shape} is lost on the {scene.background} background")
    return out


# The edit kinds a triplet can carry, as the world benchmark names them ("replace" is a shape swap);
# "combined" is two or more of them in one triplet.
EDIT_KINDS = ("replace", "colour", "add", "remove", "background", "texture", "size", "position", "combined")
# The kinds the world benchmark asks about (negative and mask queries are conditions on these).
BENCHMARK_KINDS = ("replace", "colour", "add", "remove", "background", "size", "combined")


def edit_kind(reference: str, target: str) -> str:
    """What a triplet edits, from the two captions' scene graphs (the instruction is not read, so every
    method is counted alike): one of EDIT_KINDS ("position": a keyword swap of "left" for "right"), "none"
    when the scenes agree, "unparsed" when a caption does not parse or the objects changed in a way no
    single edit explains."""
    try:
        a, b = parse_caption(reference), parse_caption(target)
    except CaptionParseError:
        return "unparsed"
    kinds = [k for k, x, y in (("background", a.background, b.background), ("texture", a.texture, b.texture))
             if x != y]
    objs_a, objs_b = list(a.objects), list(b.objects)
    if len(objs_b) == len(objs_a) + 1 and objs_b[:-1] == objs_a:
        kinds.append("add")
    elif len(objs_b) == len(objs_a) - 1 and any(objs_a[:i] + objs_a[i + 1:] == objs_b for i in range(len(objs_a))):
        kinds.append("remove")
    elif len(objs_a) == len(objs_b):
        changed = [(x, y) for x, y in zip(objs_a, objs_b) if x != y]
        if len(changed) > 1:
            return "unparsed"
        for x, y in changed:
            kinds += [k for k, f in (("replace", "shape"), ("colour", "colour"), ("size", "size"),
                                     ("position", "position")) if getattr(x, f) != getattr(y, f)]
    else:
        return "unparsed"
    if not kinds:
        return "none"
    return kinds[0] if len(kinds) == 1 else "combined"
