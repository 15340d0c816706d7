"""The seed triplets of the LoRA fine-tuning: InstructPix2Pix's released prompts (JSONL)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class SeedStats:
    lines: int = 0
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)


def read_ip2p_jsonl(path: str | Path) -> tuple[list[dict], SeedStats]:
    """IP2P's ``gpt-generated-prompts.jsonl``: {input | caption, edit, output}; bad lines are counted."""
    stats, rows = SeedStats(), []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            stats.lines += 1
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                stats.skipped["not JSON"] += 1
                continue
            obj = obj if isinstance(obj, dict) else {}  # a line that is JSON but not an object is a bad line too
            source = obj.get("input", obj.get("caption"))
            if not all(isinstance(v, str) and v.strip() for v in (source, obj.get("edit"), obj.get("output"))):
                stats.skipped["missing input/caption, edit or output"] += 1
                continue
            rows.append({"caption": source.strip(), "instruction": obj["edit"].strip(),
                         "output": obj["output"].strip(), "line": n})
            stats.kept += 1
    return rows, stats


# --- the world's small OPT ------------------------------------------------------------
