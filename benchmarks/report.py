"""The one way a benchmark script reports: JSON on stdout and, with --out, the same JSON in a file
(benchmarks/results/, quoted by the README)."""

from __future__ import annotations

import json

from compodiff.atomic import write_json


def report(results: dict, out: str | None) -> None:
    print(json.dumps(results, indent=2, default=str))
    if out:
        write_json(out, results)
