"""The world's vocabulary: every word a scene, caption or instruction may use.

One place for it, so the renderer, the caption grammar, the parser, the spaCy
pipeline and the edit grammars can never disagree about what a word means.
"""

from __future__ import annotations

# Shape nouns (the "object terms" of the keyword-based triplets, paper 4.1).
# Each maps to a polygon recipe in render.py; ``shape_family`` groups shapes
# that look alike so the keyword similarity window has near and far neighbours.
SHAPES: tuple[str, ...] = (
    "circle", "oval", "ring", "square", "rectangle", "diamond", "triangle",
    "trapezoid", "pentagon", "hexagon", "octagon", "star", "heart",
    "cross", "crescent", "arrow",
)
SHAPE_PLURALS: dict[str, str] = {s: s + "s" for s in SHAPES}

# Object colours as sRGB; the renderer jitters the shade of each instance.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 30),
    "green": (40, 170, 60),
    "cyan": (40, 210, 220),
    "blue": (35, 70, 220),
    "purple": (130, 50, 190),
    "pink": (245, 130, 190),
    "brown": (130, 80, 40),
    "white": (245, 245, 245),
    "gray": (128, 128, 128),
    "black": (20, 20, 20),
}

# Relative object sizes: fraction of the image side the shape's bounding box spans.
SIZES: dict[str, float] = {
    "tiny": 0.16,
    "small": 0.24,
    "medium": 0.32,
    "large": 0.42,
    "huge": 0.54,
}

# Background textures, drawn in a darker or lighter tone of the background colour.
TEXTURES: tuple[str, ...] = (
    "plain", "striped", "dotted", "checkered", "gridded", "wavy", "speckled", "gradient",
)

# Background colours: muted tones, so every object colour stays visible on them.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "beige": (225, 210, 180),
    "navy": (30, 40, 90),
    "olive": (110, 120, 50),
    "teal": (30, 110, 110),
    "maroon": (110, 30, 45),
    "lavender": (190, 180, 225),
    "mint": (180, 230, 200),
    "charcoal": (55, 55, 60),
}

# 3x3 layout cells: the position words a caption may use.
POSITIONS: dict[str, tuple[int, int]] = {
    "top left": (0, 0), "top": (1, 0), "top right": (2, 0),
    "left": (0, 1), "center": (1, 1), "right": (2, 1),
    "bottom left": (0, 2), "bottom": (1, 2), "bottom right": (2, 2),
}

MAX_OBJECTS = 3

# Part of speech of every word the captions use, read by the world's spaCy pipeline
# (nlp.py) so downstream code sees ``token.pos_`` exactly as with en_core_web_sm.
FUNCTION_WORDS: dict[str, str] = {
    "a": "DET", "an": "DET", "the": "DET", "one": "NUM", "two": "NUM", "three": "NUM",
    "on": "ADP", "in": "ADP", "with": "ADP", "at": "ADP", "of": "ADP", "over": "ADP",
    "and": "CCONJ", "there": "PRON", "is": "AUX", "are": "AUX", "shows": "VERB",
    "picture": "NOUN", "image": "NOUN", "background": "NOUN", "scene": "NOUN",
    "photo": "NOUN", "left": "NOUN", "right": "NOUN", "top": "NOUN", "bottom": "NOUN",
    "center": "NOUN", ",": "PUNCT", ".": "PUNCT", ":": "PUNCT",
}


def part_of_speech() -> dict[str, str]:
    """Every lexicon word (lower case) -> universal POS tag."""
    pos = dict(FUNCTION_WORDS)
    for s in SHAPES:
        pos[s] = "NOUN"
        pos[SHAPE_PLURALS[s]] = "NOUN"
    for w in (*COLOURS, *SIZES, *TEXTURES):
        pos[w] = "ADJ"
    # The background names are English nouns (olive, mint, charcoal, navy ...), which en_core_web_sm tags
    # NOUN (compound) before "background": so the keyword method swaps background details, as the paper's
    # keywords include "objects, background details, or textures".
    for w in BACKGROUNDS:
        pos[w] = "NOUN"
    return pos
