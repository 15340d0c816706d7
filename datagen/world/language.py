"""Everyday English about world scenes: the text the world CLIP learns language from.

Pretrained CLIP has read the web, so it knows "backdrop" as well as "background", "grey" as well as
"gray", and a request ("show me a red star") as well as a caption. The world's captions use a few dozen
words. This module rewrites a caption's scene in the broader English people use about such pictures:
synonyms, British spellings, carrier phrases of web captions, and search requests. Every text is true of
one picture, as an image-text pair is; a request asks for what that picture shows, never for a change to
another picture (the CIR task), and no benchmark phrasing is written.

Web captions of edited pictures also say what a picture has become or lost ("the logo recoloured red",
"with the background removed", "a cat instead of a dog"), and search requests say what to leave out.
A paraphrase may carry one such clause, true of its own picture: a colour, size or object that the
picture shows, or an object that it does not show. So the words of change (removed, instead, scaled,
recoloured, ...) get trained embeddings, as a web-trained CLIP's do, rather than untouched rows that a
model reading the text tower's token states cannot tell apart.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from datagen.world import lexicon as lx
from datagen.world.captions import parse_caption
from datagen.world.scene import Scene, WorldObject

BACKGROUND_NOUNS = ("background", "backdrop", "setting", "backing", "ground", "surface", "canvas")
COLOUR_WORDS = {"gray": ("gray", "grey"), "purple": ("purple", "violet"), "cyan": ("cyan", "aqua", "turquoise"),
                "pink": ("pink", "rose"), "brown": ("brown", "chocolate")}
SIZE_WORDS = {"tiny": ("tiny", "minute", "very small", "teeny"), "small": ("small", "little", "smallish"),
              "medium": ("medium", "medium sized", "mid sized", "average sized", "regular"),
              "large": ("large", "big", "sizeable", "fairly big"),
              "huge": ("huge", "giant", "enormous", "massive", "very large")}
TEXTURE_WORDS = {"plain": ("plain", "solid", "flat", "uniform"), "striped": ("striped", "stripy", "banded"),
                 "dotted": ("dotted", "spotted", "polka dot"), "checkered": ("checkered", "chequered", "checked"),
                 "gridded": ("gridded", "grid", "lattice"), "wavy": ("wavy", "rippled", "undulating"),
                 "speckled": ("speckled", "flecked", "freckled"), "gradient": ("gradient", "fading", "shaded")}
POSITION_WORDS = {"center": ("center", "centre", "middle"), "top": ("top", "upper side", "top edge"),
                  "bottom": ("bottom", "lower side", "bottom edge"), "left": ("left", "left side"),
                  "right": ("right", "right side"), "top left": ("top left", "upper left"),
                  "top right": ("top right", "upper right"), "bottom left": ("bottom left", "lower left"),
                  "bottom right": ("bottom right", "lower right")}
SHAPE_HEADS = ("{shape}", "{shape}", "{shape} shape", "{shape} symbol", "{shape} figure", "{shape} icon")
OBJECT_FORMS = ("{size} {colour} {head}", "{size} {head} in {colour}", "{size} {head} coloured {colour}",
                "{size} {colour} coloured {head}", "{size} {head} painted {colour}")
# How web captions and search boxes wrap a description.
CARRIERS = (
    "{scene}", "a photo of {scene}", "a picture of {scene}", "an image of {scene}", "a drawing of {scene}",
    "a simple illustration of {scene}", "a render of {scene}", "a close up of {scene}", "clip art of {scene}",
    "here is {scene}", "this is {scene}", "you can see {scene}", "we see {scene}", "look at {scene}",
    "this picture shows {scene}", "an image showing {scene}", "a graphic featuring {scene}", "{scene} in this image",
    "show me {scene}", "i want {scene}", "i would like {scene}", "find {scene}", "looking for {scene}",
    "search for {scene}", "give me {scene}", "can you find {scene}", "i need a picture of {scene}",
    "please show {scene}", "a nice picture of {scene}", "my favourite picture: {scene}", "just {scene}",
    "only {scene}", "exactly {scene}", "something like {scene}", "there is {scene}", "where can i find {scene}",
    "i have {scene}", "get me {scene}", "it should be {scene}", "we should have {scene}", "a poster of {scene}",
)
SCENE_FORMS = ("{objects} on {background}", "{objects} against {background}", "{objects} over {background}",
               "{background} with {objects}", "{objects} set on {background}", "{objects} placed on {background}",
               "{objects} in front of {background}", "{background} behind {objects}")
SCENE_FORMS += ("{background} holding {objects}", "{background} that holds {objects}",
                "{background} containing {objects}", "{background} that has {objects}",
                "{background} featuring {objects}")
AREA_WORDS = ("area", "region", "part", "corner", "spot", "section", "zone", "side")
# Clauses true of the picture. {o}: an object the picture shows ("the star", "the red star"); {x}: one it
# does not show; {c} / {s}: the shown object's colour / size. Each family is one idea in many words.
SHOWN_COLOUR = ("{o} recoloured {c}", "{o} coloured {c}", "{o} painted {c}", "{o} dyed {c}", "{o} tinted {c}",
                "{o} turned {c}", "{o} now {c}", "{o} made {c}", "{o} changed to {c}", "{o} in {c}",
                "{o} shown in {c}", "{o} done in {c}", "{o} recolored {c}", "{o} which is {c}",
                "make {o} {c}", "paint {o} {c}", "colour {o} {c}", "change {o} to {c}", "turn {o} {c}",
                "the colour of {o} is {c}", "{o} with its colour changed to {c}")
SHOWN_SIZE = ("{o} scaled to {s}", "{o} resized to {s}", "{o} made {s}", "{o} grown to {s}", "{o} shrunk to {s}",
              "{o} sized {s}", "{o} now {s}", "{o} at {s} size", "{o} enlarged to {s}", "{o} reduced to {s}",
              "{o} which is {s}", "{o} kept {s}",
              "make {o} {s}", "resize {o} to {s}", "change the size of {o} to {s}", "{o} with its size set to {s}")
SHOWN_OBJECT = ("{o} added", "{o} included", "{o} put in", "{o} placed in", "{o} inserted", "also {o}",
                "plus {o}", "{o} as well", "{o} too", "with {o} added", "{o} now there",
                "{o} appears", "there is also {o}", "{o} has been added", "{o} shows up", "add {o}", "include {o}",
                "put in {o}", "use {o}", "give it {o}", "please add {o}")
ABSENT_OBJECT = ("without {x}", "with no {x}", "minus {x}", "but no {x}", "and not {x}", "{x} removed",
                 "{x} deleted", "{x} taken away", "{x} taken out", "{x} left out", "{x} erased", "{x} gone",
                 "{x} missing", "{x} cut out", "{x} dropped", "{x} omitted", "{x} excluded", "rid of {x}",
                 "having got rid of {x}", "no longer showing {x}", "{x} has been removed", "not {x}",
                 "please remove {x}", "no {x} please", "exclude {x}", "omit {x}", "skip {x}", "delete {x}",
                 "take away {x}", "remove {x}", "{x} is not there", "nothing like {x}", "{x} not included")
REPLACED = ("{o} instead of {x}", "{o} in place of {x}", "{o} rather than {x}", "{o} replacing {x}",
            "{o} where {x} was", "{x} swapped for {o}", "{x} replaced by {o}", "{x} turned into {o}",
            "{x} changed into {o}", "{o}, not {x}", "{o} substituted for {x}", "{x} exchanged for {o}",
            "turn {x} into {o}", "change {x} into {o}", "replace {x} with {o}", "use {o} and not {x}")
JOINERS = (" and ", " and also ", " as well as ", " plus ", " next to ", " together with ", ", ")


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def describe(obj: WorldObject, rng: np.random.Generator) -> str:
    colour = _pick(rng, COLOUR_WORDS.get(obj.colour, (obj.colour,)))
    size = _pick(rng, SIZE_WORDS[obj.size]) if obj.size else ""
    head = _pick(rng, SHAPE_HEADS).format(shape=obj.shape)
    phrase = " ".join(_pick(rng, OBJECT_FORMS).format(size=size, colour=colour, head=head).split())
    phrase = _article(phrase)
    if obj.position is not None:
        where = _pick(rng, POSITION_WORDS[obj.position])
        if rng.random() < 0.3:
            where = f"{where} {_pick(rng, AREA_WORDS)}"
        phrase += _pick(rng, (" at the {p}", " in the {p}", " on the {p}", ", {p}")).format(p=where)
    return phrase


def _absent(scene: Scene, rng: np.random.Generator) -> str:
    """A coloured shape that no object of ``scene`` is (an object the picture does not show)."""
    shown = {(o.shape, o.colour) for o in scene.objects}
    while True:
        shape, colour = _pick(rng, lx.SHAPES), _pick(rng, list(lx.COLOURS))
        if (shape, colour) not in shown:
            return _pick(rng, ("the {c} {s}", "a {c} {s}", "any {c} {s}", "the {s} in {c}")).format(c=colour, s=shape)


def edit_clause(scene: Scene, rng: np.random.Generator) -> str:
    """One clause, true of the picture of ``scene``, in the words people use about edited pictures."""
    if not scene.objects:
        return _pick(rng, ABSENT_OBJECT).format(x=_absent(scene, rng))
    obj = scene.objects[int(rng.integers(len(scene.objects)))]
    family = int(rng.integers(5))
    if family == 0:
        return _pick(rng, SHOWN_COLOUR).format(o=f"the {obj.shape}", c=obj.colour)
    if family == 1 and obj.size:
        return _pick(rng, SHOWN_SIZE).format(o=f"the {obj.colour} {obj.shape}", s=obj.size)
    if family == 2:
        return _pick(rng, REPLACED).format(o=f"the {obj.colour} {obj.shape}", x=_absent(scene, rng))
    if family == 3:
        return _pick(rng, SHOWN_OBJECT).format(o=f"the {obj.colour} {obj.shape}")
    return _pick(rng, ABSENT_OBJECT).format(x=_absent(scene, rng))


def paraphrase(scene: Scene, rng: np.random.Generator) -> str:
    """One everyday-English description of what ``scene`` fixes (open fields stay unsaid)."""
    objects = [describe(o, rng) for o in scene.objects]
    text = objects[0]
    for o in objects[1:]:
        text += _pick(rng, JOINERS) + o
    words = []
    if scene.background:
        words.append(scene.background)
    if scene.texture:
        words.append(_pick(rng, TEXTURE_WORDS[scene.texture]))
    if scene.texture and rng.random() < 0.25:  # the texture said as a pattern: "a navy backdrop with a dotted pattern"
        words = words[:1]
        background = _article(" ".join(words + [_pick(rng, BACKGROUND_NOUNS)]))
        background += f" with {_article(_pick(rng, TEXTURE_WORDS[scene.texture]))} pattern"
    else:
        background = _article(" ".join(words + [_pick(rng, BACKGROUND_NOUNS)]))
    described = _pick(rng, SCENE_FORMS).format(objects=text, background=background)
    return _pick(rng, CARRIERS).format(scene=described)


def paraphrase_captions(captions: list[str], share: float, seed: int,
                        fits: Callable[[str], bool] | None = None, clauses: float = 0.0) -> list[str]:
    """``captions`` with each replaced, with probability ``share``, by a paraphrase of the scene it
    states (the caption's own open fields stay open), which carries an ``edit_clause`` with probability
    ``clauses``. Seeded. A caption that does not parse is kept; a paraphrase that does not ``fit`` (the
    text tower's context would cut its end off) loses its clause, and then the original caption is kept."""
    if share <= 0:
        return list(captions)
    rng = np.random.default_rng([seed, 5150])
    fits = fits or (lambda text: True)
    out = []
    for c in captions:
        if rng.random() < share:
            try:
                scene = parse_caption(c)
            except ValueError:
                out.append(c)
                continue
            text = paraphrase(scene, rng)
            if rng.random() < clauses:
                longer = f"{text}, {edit_clause(scene, rng)}"
                text = longer if fits(longer) else text
            c = text if fits(text) else c
        out.append(c)
    return out


def vocabulary(texts: list[str]) -> set[str]:
    return {w for t in texts for w in t.lower().replace(",", " ").replace(":", " ").split()}
