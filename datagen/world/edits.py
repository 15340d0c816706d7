"""The world's edit grammar: seed edits for the LLM, and the checker of any generated edit.

An edit acts on the scene a caption describes (a possibly partial ``Scene``):
colour change, shape swap, add, remove, background colour, background texture,
size. ``instruction`` words it in the TRAINING phrasing family
(``datagen.instructions``); ``parse_instruction`` reads an instruction back, so a
generated (caption, instruction, edited caption) triplet can be checked against
the grammar: parse both captions, apply the parsed edit, compare.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np

from datagen.instructions import TRAINING_EDIT_PHRASINGS
from datagen.world import lexicon as lx
from datagen.world.captions import CAPTION_PHRASINGS, describe_object, join_objects, parse_caption
from datagen.world.scene import Scene, WorldObject

EDIT_KINDS = ("colour", "shape", "add", "remove", "background", "texture", "size")


class EditError(ValueError):
    pass


@dataclass(frozen=True)
class Edit:
    kind: str
    index: int | None = None  # the object the edit acts on (colour, shape, remove, size)
    value: str | None = None  # new colour / shape / background / texture / size
    new_object: WorldObject | None = None  # for "add"


def caption_of(scene: Scene, phrasing: int) -> str:
    """The caption naming exactly the fields ``scene`` sets (size and position only where known)."""
    objects = join_objects([describe_object(o, o.size is not None, o.position is not None) for o in scene.objects])
    background = " ".join(w for w in (scene.background, scene.texture) if w)
    if not background:
        raise EditError("a caption needs the background's colour or texture")
    return CAPTION_PHRASINGS[phrasing].format(objects=objects, background=background)


def phrasing_of(caption: str) -> int:
    """Which caption phrasing wrote ``caption`` (so the edited caption can use the same one)."""
    spec = parse_caption(caption)
    for k in range(len(CAPTION_PHRASINGS)):
        try:
            if caption_of(spec, k) == caption:
                return k
        except EditError:
            break
    raise EditError(f"caption {caption!r} is not in one of the world's phrasings")


def reference(scene: Scene, index: int) -> str | None:
    """How an instruction names object ``index``: the shortest of "the colour shape", with the size,
    with the position, with both, that no other object shares; None if the caption cannot tell it apart."""
    o = scene.objects[index]
    for with_size, with_pos in ((False, False), (True, False), (False, True), (True, True)):
        if (with_size and not o.size) or (with_pos and not o.position):
            continue
        def name(p, ws=with_size, wp=with_pos):
            words = " ".join(w for w in (p.size if ws else None, p.colour, p.shape) if w)
            return f"the {words}" + (f" at the {p.position}" if wp else "")
        mine = name(o)
        if sum(name(p) == mine for p in scene.objects) == 1:
            return mine
    return None


def sample_edit(scene: Scene, rng: np.random.Generator) -> Edit | None:
    kinds = list(EDIT_KINDS)
    rng.shuffle(kinds)
    nameable = [i for i in range(len(scene.objects)) if reference(scene, i) is not None]
    for kind in kinds:
        if kind in ("colour", "shape", "remove", "size") and not nameable:
            continue
        i = nameable[int(rng.integers(len(nameable)))] if nameable else 0
        o = scene.objects[i]
        if kind == "colour":
            return Edit(kind, i, _other(rng, list(lx.COLOURS), o.colour))
        if kind == "shape":
            return Edit(kind, i, _other(rng, lx.SHAPES, o.shape))
        if kind == "remove" and len(scene.objects) > 1:
            return Edit(kind, i)
        if kind == "add" and len(scene.objects) < lx.MAX_OBJECTS:
            with_size = any(p.size for p in scene.objects)
            with_pos = any(p.position for p in scene.objects)
            taken = {p.position for p in scene.objects}
            free = [p for p in lx.POSITIONS if p not in taken]
            new = WorldObject(_pick(rng, lx.SHAPES), _pick(rng, list(lx.COLOURS)),
                              _pick(rng, list(lx.SIZES)) if with_size else None,
                              _pick(rng, free) if with_pos else None)
            return Edit(kind, None, None, new)
        if kind == "background" and scene.background:
            return Edit(kind, None, _other(rng, list(lx.BACKGROUNDS), scene.background))
        if kind == "texture" and scene.texture:
            return Edit(kind, None, _other(rng, lx.TEXTURES, scene.texture))
        if kind == "size" and o.size:
            return Edit(kind, i, _other(rng, list(lx.SIZES), o.size))
    return None


def apply_edit(scene: Scene, edit: Edit) -> Scene:
    objs = list(scene.objects)
    if edit.kind == "colour":
        objs[edit.index] = replace(objs[edit.index], colour=edit.value)
    elif edit.kind == "shape":
        objs[edit.index] = replace(objs[edit.index], shape=edit.value)
    elif edit.kind == "size":
        objs[edit.index] = replace(objs[edit.index], size=edit.value)
    elif edit.kind == "remove":
        del objs[edit.index]
    elif edit.kind == "add":
        objs.append(edit.new_object)
    elif edit.kind == "background":
        return replace(scene, background=edit.value)
    elif edit.kind == "texture":
        return replace(scene, texture=edit.value)
    else:
        raise EditError(f"unknown edit kind {edit.kind!r}")
    return scene.with_objects(objs)


def instruction(scene: Scene, edit: Edit, rng: np.random.Generator) -> str:
    templates = TRAINING_EDIT_PHRASINGS[edit.kind]
    template = templates[int(rng.integers(len(templates)))]
    fields = {"value": edit.value or ""}
    if edit.index is not None:
        fields["ref"] = reference(scene, edit.index)
    if edit.new_object is not None:
        fields["object"] = describe_object(edit.new_object)
    return template.format(**fields)


def parse_instruction(text: str, scene: Scene) -> Edit:
    """Instruction (TRAINING family) + the scene it acts on -> Edit; EditError if it does not apply."""
    for kind, templates in TRAINING_EDIT_PHRASINGS.items():
        for template in templates:
            pattern = "^" + re.escape(template).replace(r"\{ref\}", r"(?P<ref>.+?)").replace(
                r"\{value\}", r"(?P<value>[a-z]+)").replace(r"\{object\}", r"(?P<object>.+)") + "$"
            m = re.match(pattern, text.strip().lower())
            if not m:
                continue
            g = m.groupdict()
            index = _resolve_ref(scene, g["ref"]) if "ref" in g else None
            if "object" in g:
                new = parse_caption(g["object"] + " on a navy background").objects
                if len(new) != 1:
                    continue
                return Edit(kind, None, None, new[0])
            value = g.get("value")
            allowed = {"colour": lx.COLOURS, "shape": lx.SHAPES, "size": lx.SIZES, "background": lx.BACKGROUNDS,
                       "texture": lx.TEXTURES}.get(kind)
            if allowed is not None and value not in allowed:
                continue
            if index is None and kind in ("colour", "shape", "size", "remove"):
                continue
            return Edit(kind, index, value)
    raise EditError(f"instruction {text!r} is not in the world's edit grammar for this scene")


def _resolve_ref(scene: Scene, ref: str) -> int | None:
    for i in range(len(scene.objects)):
        if reference(scene, i) == ref.strip():
            return i
    return None


def consistent(caption: str, instruction_text: str, edited_caption: str) -> tuple[bool, str]:
    """Does ``edited_caption`` describe ``caption``'s scene after ``instruction_text``? (reason if not)"""
    try:
        source = parse_caption(caption)
        target = parse_caption(edited_caption)
        steps = parse_instructions(instruction_text, source)
        expected = apply_edits(source, steps)
    except (ValueError, EditError) as err:
        return False, str(err)
    if expected != target:
        return False, f"the edited caption is not the instruction applied to the caption ({_kind(steps)})"
    return True, "ok"


def edit_kind(caption: str, instruction_text: str) -> str:
    """The grammar's kind of an instruction on ``caption`` ("unparsed" when it is not in the grammar,
    "combined" for two edits): what a generated set's diversity is counted in, next to its consistency."""
    try:
        return _kind(parse_instructions(instruction_text, parse_caption(caption)))
    except (ValueError, EditError):
        return "unparsed"


# Two edits in one instruction: "<edit> and <edit>", the second acting on the scene the first made.
COMBINE = " and "


def sample_edits(scene: Scene, rng: np.random.Generator, p_combined: float) -> list[Edit]:
    """One edit, or with probability ``p_combined`` two of different kinds (empty if none applies)."""
    first = sample_edit(scene, rng)
    if first is None:
        return []
    if p_combined <= 0 or rng.random() >= p_combined:
        return [first]
    after = apply_edit(scene, first)
    for _ in range(4):  # a second kind that differs from the first, when one applies
        second = sample_edit(after, rng)
        if second is not None and second.kind != first.kind:
            return [first, second]
    return [first]


def apply_edits(scene: Scene, steps: list[Edit]) -> Scene:
    for e in steps:
        scene = apply_edit(scene, e)
    return scene


def instructions(scene: Scene, steps: list[Edit], rng: np.random.Generator) -> str:
    """The instruction of one or more edits, each worded on the scene it acts on."""
    parts = []
    for e in steps:
        parts.append(instruction(scene, e, rng))
        scene = apply_edit(scene, e)
    return COMBINE.join(parts)


def parse_instructions(text: str, scene: Scene) -> list[Edit]:
    """One edit, or two joined by COMBINE (split where both halves parse in turn)."""
    try:
        return [parse_instruction(text, scene)]
    except ValueError:  # EditError, or an added object's words that are no caption
        pass
    start = 0
    while (at := text.find(COMBINE, start)) >= 0:
        start = at + 1
        try:
            first = parse_instruction(text[:at], scene)
            second = parse_instruction(text[at + len(COMBINE):], apply_edit(scene, first))
        except ValueError:
            continue
        return [first, second]
    raise EditError(f"instruction {text!r} is not in the world's edit grammar for this scene")


def _kind(steps: list[Edit]) -> str:
    return steps[0].kind if len(steps) == 1 else "combined"


def _pick(rng, options):
    return options[int(rng.integers(len(options)))]


def _other(rng, options, current):
    return _pick(rng, [o for o in options if o != current])
