"""The IP2P text format of the LLM triplets: prompt "<caption>\\n##\\n", completion
"<instruction>\\n%%\\n<edited caption>\\nEND"; the seed completions and the parse of what the LM wrote."""

from __future__ import annotations

import re
import string

import numpy as np

SEP_EDIT, SEP_OUT, STOP = "\n##\n", "\n%%\n", "\nEND"


def prompt_text(caption: str) -> str:
    return caption + SEP_EDIT


def completion_text(instruction: str, output: str) -> str:
    return instruction + SEP_OUT + output + STOP


def seed_completions(seeds: list[tuple[str, str, str]], instruction_dropout: float, seed: int) -> list[str]:
    """IP2P completions of (caption, instruction, edited caption) seeds, a share ``instruction_dropout``
    of them with the instruction left out. Those teach the unconditional branch ("the caption, some
    edit") that ``generate``'s ``guidance_scale`` contrasts with, as CompoDiff drops its text
    condition to train classifier-free guidance (paper 3.3)."""
    if not 0.0 <= instruction_dropout < 1.0:
        raise ValueError(f"instruction_dropout must be in [0, 1), got {instruction_dropout}")
    dropped = np.random.default_rng([seed, 41]).random(len(seeds)) < instruction_dropout
    return [completion_text("" if d else instr, out) for (_, instr, out), d in zip(seeds, dropped)]


# --- seed triplets ------------------------------------------------------------------


_PUNCT = str.maketrans("", "", string.punctuation)


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.lower().translate(_PUNCT)).strip()


def parse_completion(caption: str, completion: str) -> tuple[str, str] | str:
    """(instruction, edited caption), or the reason it is rejected (IP2P's rules)."""
    if STOP not in completion:
        return "no stop sequence"
    body = completion.split(STOP)[0]
    parts = body.split(SEP_OUT)
    if len(parts) != 2:
        return "not exactly one instruction and one output"
    instruction, output = (p.strip() for p in parts)
    if not instruction or not output:
        return "empty instruction or output"
    if normalise(output) == normalise(caption):
        return "output equals input"
    return instruction, output
