"""A spaCy pipeline built from the world lexicon: the offline stand-in for en_core_web_sm.

It is an ordinary spaCy pipeline (tokenizer + rule-based ``attribute_ruler``
setting ``POS``), saved with ``nlp.to_disk`` and loaded with ``spacy.load(path)``,
so keyword extraction reads ``token.pos_`` through exactly the code path it uses
with ``en_core_web_sm``.
"""

from __future__ import annotations

from pathlib import Path

import spacy

from datagen.world import lexicon as lx


def build_world_nlp() -> spacy.language.Language:
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("attribute_ruler")
    for word, pos in sorted(lx.part_of_speech().items()):
        ruler.add(patterns=[[{"LOWER": word}]], attrs={"POS": pos})
    nlp.meta["name"] = "world_lexicon"
    nlp.meta["description"] = "rule-based POS tags for the procedural world's vocabulary"
    return nlp


def save_world_nlp(path: str | Path) -> Path:
    path = Path(path)
    build_world_nlp().to_disk(path)
    return path
