"""Exponential moving average of the weights (paper: 0.9999), the weights that get released."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """``shadow = d * shadow + (1 - d) * weights`` after each step, with the usual warm-up
    d_t = min(decay, (1 + t) / (10 + t)) so a short run is not dominated by its initialisation."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay, self.updates = decay, 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        shadow, live = list(self.model.parameters()), list(model.parameters())
        if len(shadow) != len(live):
            raise ValueError(f"EMA holds {len(shadow)} parameters, the model has {len(live)}")
        # one fused kernel over all parameters instead of one lerp per tensor
        torch._foreach_lerp_(shadow, [p.detach().to(s.dtype) for s, p in zip(shadow, live)], 1.0 - d)
        for s, b in zip(self.model.buffers(), model.buffers(), strict=True):
            s.copy_(b)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "model": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.updates = state["decay"], state["updates"]
        self.model.load_state_dict(state["model"])
