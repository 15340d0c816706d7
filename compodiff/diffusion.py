"""The noise schedule and the training objective, kept apart from the network.

Cosine schedule (Nichol & Dhariwal), computed in float64 and stored once as
float32 buffers. The network predicts x0 (paper 3.2: "we train the transformer
decoder to predict the denoised z_i directly"), and Eqs. (1)-(3) share one
loss, ||x0 - denoiser(x_t, t | conditions)||^2, differing only in their conditions.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def cosine_betas(timesteps: int, s: float = 0.008) -> torch.Tensor:
    x = torch.linspace(0, timesteps, timesteps + 1, dtype=torch.float64)
    alpha_bar = torch.cos(((x / timesteps) + s) / (1 + s) * math.pi * 0.5) ** 2
    alpha_bar = alpha_bar / alpha_bar[0]
    return torch.clip(1 - alpha_bar[1:] / alpha_bar[:-1], 0, 0.999)


class CosineSchedule(nn.Module):
    """alpha_bar and friends for t = 0 .. T-1, as buffers (moved with the module, never per step)."""

    def __init__(self, timesteps: int = 1000):
        super().__init__()
        betas = cosine_betas(timesteps)
        alpha_bar = torch.cumprod(1.0 - betas, dim=0)
        alpha_bar_prev = F.pad(alpha_bar[:-1], (1, 0), value=1.0)
        self.timesteps = timesteps
        for name, value in {
            "betas": betas,
            "alpha_bar": alpha_bar,
            "alpha_bar_prev": alpha_bar_prev,
            "sqrt_alpha_bar": alpha_bar.sqrt(),
            "sqrt_one_minus_alpha_bar": (1 - alpha_bar).sqrt(),
            "sqrt_recip_alpha_bar": (1 / alpha_bar).sqrt(),
            "sqrt_recipm1_alpha_bar": (1 / alpha_bar - 1).sqrt(),
        }.items():
            self.register_buffer(name, value.to(torch.float32), persistent=False)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps."""
        return self.sqrt_alpha_bar[t, None] * x0 + self.sqrt_one_minus_alpha_bar[t, None] * eps

    def eps_from_x0(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """eps = (sqrt(1/alpha_bar_t) x_t - x0) / sqrt(1/alpha_bar_t - 1)."""
        return (self.sqrt_recip_alpha_bar[t, None] * x_t - x0) / self.sqrt_recipm1_alpha_bar[t, None]

    def sample_t(self, batch: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        return torch.randint(0, self.timesteps, (batch,), generator=generator).to(device)


def x0_loss(denoiser, schedule: CosineSchedule, x0: torch.Tensor, context, t: torch.Tensor,
            eps: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Eqs. (1)-(3): || x0 - denoiser(x_t, t | conditions) ||^2 with x_t = q_sample(x0, t, eps)."""
    x_t = schedule.q_sample(x0, t, eps)
    pred = denoiser.denoise(x_t, t, context)
    return F.mse_loss(pred.float(), x0.float(), reduction=reduction)
