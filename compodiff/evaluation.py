"""Composed-retrieval metrics over a gallery with several true targets per query (CIRCO-style), and
the query embeddings of every method the world benchmark compares.

Percentages, as the peers report: mAP@K from ``compodiff.benchmarks.circo.average_precision`` (the
CIRCO server's definition), R@K = share of queries with a true target in the top K.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from compodiff.benchmarks.circo import average_precision

MAP_KS = (5, 10, 25, 50)
RECALL_KS = (1, 10)


def cir_metrics(retrieved: np.ndarray, ground_truths: list[list[int]], kinds: list[str] | None = None) -> dict:
    """``retrieved`` (Q, >= 50) gallery indices best first -> overall metrics and, with ``kinds``, per type."""
    if len(retrieved) != len(ground_truths):
        raise ValueError(f"{len(retrieved)} rankings for {len(ground_truths)} queries")

    def block(rows: list[int]) -> dict:
        out = {f"mAP@{k}": float(100 * np.mean([average_precision(list(retrieved[i]), ground_truths[i], k)
                                                for i in rows])) for k in MAP_KS}
        for k in RECALL_KS:
            out[f"R@{k}"] = float(100 * np.mean([bool(set(retrieved[i][:k]) & set(ground_truths[i])) for i in rows]))
        return out

    result = block(list(range(len(retrieved))))
    if kinds is not None:
        groups = defaultdict(list)
        for i, k in enumerate(kinds):
            groups[k].append(i)
        result["per_type"] = {k: block(rows) for k, rows in groups.items()}
    return result


def sum_query(reference: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """The image + text baseline: the sum of the L2-normalised embeddings."""
    norm = torch.nn.functional.normalize
    return norm(reference.float(), dim=-1) + norm(text.float(), dim=-1)
