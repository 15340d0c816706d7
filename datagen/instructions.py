"""Instruction phrasing families, declared in one place.

TRAINING: every phrasing a training-data generator may write: the paper's 48
keyword templates (Table 2) and the world's edit grammar (seed edits for the LLM).
The world benchmark words its queries in a family disjoint from this one, and a
test checks that no benchmark instruction matches a training phrasing (zero-shot).
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=1)
def keyword_templates() -> tuple[str, ...]:
    """The 48 templates of Table 2 with ``${source}`` / ``${target}`` placeholders, in the paper's order."""
    text = resources.files("datagen").joinpath("data/keyword_templates.txt").read_text()
    templates = tuple(line for line in text.splitlines() if line and not line.startswith("#"))
    if len(templates) != 48:
        raise RuntimeError(f"expected the 48 templates of Table 2, found {len(templates)}")
    return templates


def fill_template(template: str, source: str, target: str) -> str:
    return template.replace("${source}", source).replace("${target}", target)


def reversed_instruction(method: str, instruction: str, template_id: int, source_keyword: str | None,
                         target_keyword: str | None, reverse_prefix: str) -> str:
    """The instruction that takes the target back to the reference (bi-directional training).
    Keyword triplets reverse exactly: the same template with the keywords swapped. Others get
    the direction prefix of BLIP4CIR+Bi, which the model learns to read as "the other way"."""
    if method == "keyword" and template_id >= 0 and source_keyword and target_keyword:
        return fill_template(keyword_templates()[template_id], target_keyword, source_keyword)
    return f"{reverse_prefix} {instruction}".strip()


# The world's edit grammar, TRAINING family ({ref}: "the red star", {value}: the new word,
# {object}: "a small blue circle at the top").
TRAINING_EDIT_PHRASINGS: dict[str, tuple[str, ...]] = {
    "colour": ("make {ref} {value}", "change the colour of {ref} to {value}", "paint {ref} {value}"),
    "shape": ("turn {ref} into a {value}", "make {ref} a {value}", "change {ref} into a {value}"),
    "add": ("add {object}", "put {object} in the picture", "include {object}"),
    "remove": ("remove {ref}", "take away {ref}", "delete {ref}"),
    "background": ("change the background to {value}", "make the background {value}",
                   "use a {value} background"),
    "texture": ("make the background {value}", "give the background a {value} pattern"),
    "size": ("make {ref} {value}", "resize {ref} to {value}", "change the size of {ref} to {value}"),
}


# The world benchmark's phrasings: a family disjoint from TRAINING (zero-shot, as the paper evaluates).
# {ref}: "the red star", {value}: one word ({a_value}: with its article), {object}: "a small blue circle".
BENCHMARK_EDIT_PHRASINGS: dict[str, tuple[str, ...]] = {
    "colour": ("recolour {ref} {value}", "i want {ref} in {value}"),
    "replace": ("have {a_value} instead of {ref}", "put {a_value} where {ref} is"),
    "add": ("there should also be {object}", "also show {object}"),
    "remove": ("get rid of {ref}", "leave out {ref}"),
    "background": ("set the backdrop to {value}", "the backdrop should be {value}"),
    "size": ("scale {ref} to {value}", "i want {ref} {value}"),
    "mask": ("put {object} in the marked area", "the marked area should hold {object}"),
}


def training_patterns() -> list[re.Pattern]:
    """Regular expressions matching every TRAINING phrasing. A keyword placeholder is one object
    term (one word); the grammar's {ref} and {object} are phrases."""
    pats = []
    for t in keyword_templates():
        pats.append(re.escape(t).replace(r"\$\{source\}", "[a-z]+").replace(r"\$\{target\}", "[a-z]+"))
    for templates in TRAINING_EDIT_PHRASINGS.values():
        for t in templates:
            pats.append(re.escape(t).replace(r"\{ref\}", ".+").replace(r"\{value\}", "[a-z]+")
                        .replace(r"\{a_value\}", "an? [a-z]+")
                        .replace(r"\{object\}", ".+"))
    return [re.compile("^" + p + "$") for p in pats]


def is_training_phrasing(text: str) -> bool:
    return any(p.match(text.strip().lower()) for p in training_patterns())


def benchmark_fixed_words() -> set[str]:
    """The words the benchmark's phrasings write around their placeholders: what a text encoder must know
    to read a benchmark instruction (what fills the placeholders are the world's own nouns and adjectives)."""
    words = set()
    for templates in BENCHMARK_EDIT_PHRASINGS.values():
        for t in templates:
            words |= set(re.sub(r"\{[a-z_]+\}", " ", t).replace(",", " ").split())
    return words

