"""Everyday English about world scenes: the text the world CLIP learns language from.

Pretrained CLIP has read the web, so it knows "backdrop" as well as "background", "grey" as well as
"gray", and a request ("show me a red star") as well as a caption. The world's captions use a few dozen
words. This module rewrites a caption's scene in the broader English people use about such pictures:
synonyms, British spellings, carrier phrases of web captions, and search requests. It never writes an
edit instruction: it describes one picture, as an image-text pair does.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

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
        phrase += _pick(rng, (" at the {p}", " in the {p}", " on the {p}", ", {p}")).format(p=where)
    return phrase


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
    background = _article(" ".join(words + [_pick(rng, BACKGROUND_NOUNS)]))
    described = _pick(rng, SCENE_FORMS).format(objects=text, background=background)
    return _pick(rng, CARRIERS).format(scene=described)


def paraphrase_captions(captions: list[str], share: float, seed: int,
                        fits: Callable[[str], bool] | None = None) -> list[str]:
    """``captions`` with each replaced, with probability ``share``, by a paraphrase of the scene it
    states (the caption's own open fields stay open). Seeded. A caption that does not parse is kept, and
    so is one whose paraphrase does not ``fit`` (the text tower's context would cut its end off)."""
    if share <= 0:
        return list(captions)
    rng = np.random.default_rng([seed, 5150])
    out = []
    for c in captions:
        if rng.random() < share:
            try:
                text = paraphrase(parse_caption(c), rng)
            except ValueError:
                text = c
            c = text if fits is None or fits(text) else c
        out.append(c)
    return out


def vocabulary(texts: list[str]) -> set[str]:
    return {w for t in texts for w in t.lower().replace(",", " ").replace(":", " ").split()}
