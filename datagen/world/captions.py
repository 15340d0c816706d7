"""Captions of world scenes in several phrasings, and the parser back to a scene.

The parser is the world's text-to-image "understanding": a caption it cannot
parse cannot be rendered, as Stable Diffusion fails on a nonsense prompt.
"""

from __future__ import annotations

import re

import numpy as np

from datagen.world import lexicon as lx
from datagen.world.scene import Scene, WorldObject


class CaptionParseError(ValueError):
    """A caption the world cannot render; says which caption and why."""

    def __init__(self, caption: str, reason: str):
        super().__init__(f"cannot parse caption {caption!r}: {reason}")
        self.caption = caption
        self.reason = reason


# Scene-level phrasings of the captions (the "LAION" captions of the world).
CAPTION_PHRASINGS: tuple[str, ...] = (
    "{objects} on a {background} background",
    "a {background} background with {objects}",
    "a picture of {objects} on a {background} background",
    "{objects}, {background} background",
    "an image of {objects} over a {background} background",
)


def describe_object(obj: WorldObject, with_size: bool = True, with_position: bool = True) -> str:
    words = [w for w in (obj.size if with_size else None, obj.colour, obj.shape) if w]
    phrase = " ".join(words)
    phrase = ("an " if phrase[0] in "aeiou" else "a ") + phrase
    if with_position and obj.position is not None:
        phrase += f" at the {obj.position}"
    return phrase


def join_objects(phrases: list[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def caption(scene: Scene, rng: np.random.Generator, p_size: float = 0.8, p_position: float = 0.7,
            phrasing: int | None = None) -> str:
    """A caption of ``scene``; size and position words are each left out at random,
    so one caption fits many scenes (retrieval is then not a lookup)."""
    k = int(rng.integers(len(CAPTION_PHRASINGS))) if phrasing is None else phrasing
    with_size = bool(rng.random() < p_size)
    with_position = bool(rng.random() < p_position)
    objects = join_objects([describe_object(o, with_size, with_position) for o in scene.objects])
    background = " ".join(w for w in (scene.background, scene.texture) if w)
    return CAPTION_PHRASINGS[k].format(objects=objects, background=background)


def full_caption(scene: Scene) -> str:
    """The canonical caption naming every attribute (phrasing 0)."""
    objects = join_objects([describe_object(o) for o in scene.objects])
    return CAPTION_PHRASINGS[0].format(objects=objects, background=f"{scene.background} {scene.texture}")


_WORD = re.compile(r"[a-z]+|[,.]")
_FILLERS = {"a", "an", "one", "picture", "image", "photo", "of", "on", "over", "with", "and", ",", ".",
            "there", "is", "are", "shows", "scene", "the", "in"}


def parse_caption(text: str) -> Scene:
    """Caption -> (possibly partial) scene. Raises CaptionParseError naming the problem."""
    if not isinstance(text, str) or not text.strip():
        raise CaptionParseError(str(text), "empty caption")
    bad = re.search(r"[^a-z ,.]", text.lower())
    if bad:
        raise CaptionParseError(text, f"character {bad.group()!r} at {bad.start()} is outside the world's alphabet")
    tokens = _WORD.findall(text.lower())
    background = texture = None
    objects: list[WorldObject] = []
    pending: dict = {}
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        two = " ".join(tokens[i:i + 2])
        if tok in lx.BACKGROUNDS and "background" in tokens[i + 1:i + 3]:
            background = tok
            if tokens[i + 1] in lx.TEXTURES:
                texture = tokens[i + 1]
                i += 1
            i += 2
            continue
        if tok in lx.TEXTURES and i + 1 < len(tokens) and tokens[i + 1] == "background":
            texture = tok
            i += 2
            continue
        if tok == "at" and i + 1 < len(tokens) and tokens[i + 1] == "the":
            pos = two_word = " ".join(tokens[i + 2:i + 4])
            if two_word not in lx.POSITIONS:
                pos = tokens[i + 2] if i + 2 < len(tokens) else ""
            if pos not in lx.POSITIONS:
                raise CaptionParseError(text, f"unknown position after 'at the' (token {i + 2})")
            if not objects:
                raise CaptionParseError(text, "a position before any object")
            objects[-1] = WorldObject(objects[-1].shape, objects[-1].colour, objects[-1].size, pos)
            i += 2 + len(pos.split())
            continue
        if tok in lx.SIZES:
            _set_once(pending, "size", tok, text)
        elif tok in lx.COLOURS:
            _set_once(pending, "colour", tok, text)
        elif tok in lx.SHAPES:
            if "colour" not in pending:
                raise CaptionParseError(text, f"the {tok} has no colour")
            objects.append(WorldObject(tok, pending["colour"], pending.get("size")))
            pending = {}
        elif tok not in _FILLERS and two not in lx.POSITIONS:
            raise CaptionParseError(text, f"unknown word {tok!r} (token {i})")
        i += 1
    if pending:
        raise CaptionParseError(text, f"attributes {sorted(pending.values())} describe no shape")
    if not objects:
        raise CaptionParseError(text, "no object to draw")
    try:
        return Scene(tuple(objects), background, texture)
    except ValueError as err:
        raise CaptionParseError(text, str(err)) from None


def _set_once(pending: dict, key: str, value: str, text: str) -> None:
    if key in pending:
        raise CaptionParseError(text, f"two {key}s for one object ({pending[key]!r}, {value!r})")
    pending[key] = value
