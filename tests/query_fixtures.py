"""Seeded random composed queries (reference embeddings, text and null-text tokens) for a denoiser config."""

import torch

from compodiff import TextConditions


def random_queries(cfg, b: int = 3) -> tuple[torch.Tensor, TextConditions, TextConditions]:
    g = torch.Generator().manual_seed(1)
    ref = torch.randn(b, cfg.embed_dim, generator=g)
    text = TextConditions(torch.randn(b, 5, cfg.text_dim, generator=g), None)
    null = TextConditions(torch.zeros(1, 5, cfg.text_dim).expand(b, -1, -1), None)
    return ref, text, null
