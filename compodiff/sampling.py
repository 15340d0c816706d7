"""Classifier-free guidance (Eq. 4) and DDIM sampling as released.

Samplers are pure functions of ``x0_fn(x_t, t) -> x0``: they know the schedule,
not the network. Guidance nulls only conditions; x_t and t are identical across
its three branches, and it applies to the whole prediction.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from compodiff.denoiser import CompoDiffDenoiser, Context
from compodiff.diffusion import CosineSchedule

X0Fn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def official_time_pairs(timesteps: int, total: int = 1000) -> list[tuple[int, int]]:
    """The release's DDIM spacing: ``int(linspace(-1, total, T + 1)[:-1])`` reversed, in (t, t_prev)
    pairs; the pair ending at -1 returns x0, so T gives T - 1 network calls."""
    if not 2 <= timesteps <= total:
        raise ValueError(f"timesteps must be in [2, {total}], got {timesteps}")
    times = torch.linspace(-1.0, total, steps=timesteps + 1)[:-1].int().tolist()[::-1]
    return list(zip(times[:-1], times[1:]))


def time_pairs_for_steps(steps: int, total: int = 1000) -> list[tuple[int, int]]:
    """``steps`` network calls (the demo's "10 steps" is the release's timesteps=11)."""
    return official_time_pairs(steps + 1, total)


def guided_x0(denoiser: CompoDiffDenoiser, x_t: torch.Tensor, t: torch.Tensor, context: Context,
              w_image: float, w_text: float, time_token: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. (4), in one batched forward over three branches stacked as [cond; null_text; null_all]:

        x0 = n_all + w_image (n_txt - n_all) + w_text (cond - n_txt)
        cond  = D(x_t, t | text, ref image, mask)
        n_txt = D(x_t, t | null-or-negative text, ref image, mask)
        n_all = D(x_t, t | null-or-negative text, zero image, mask)

    ``context`` holds the three branches' conditions (batch 3B). With w_image = w_text = 1 the
    formula is exactly ``cond``; that case takes only the conditional third (one branch of work).
    ``time_token`` (B, W) may come precomputed: it depends on t alone.
    """
    b = x_t.shape[0]
    if context.batch != 3 * b:
        raise ValueError(f"guidance needs a context of 3 x {b} rows, got {context.batch}")
    if time_token is None:
        time_token = denoiser.time_token(t)  # identical in every branch: computed once
    if w_image == 1.0 and w_text == 1.0:
        cond_only = Context([(k[:b], v[:b]) for k, v in context.kv],
                            None if context.key_mask is None else context.key_mask[:b])
        return denoiser.denoise(x_t, t, cond_only, time_token)
    cond, n_txt, n_all = denoiser.denoise(x_t.repeat(3, 1), t.repeat(3), context, time_token.repeat(3, 1)).chunk(3)
    return n_all + w_image * (n_txt - n_all) + w_text * (cond - n_txt)


@torch.no_grad()
def ddim_sample(x0_fn: X0Fn, x: torch.Tensor, time_pairs: list[tuple[int, int]], schedule: CosineSchedule,
                eta: float = 1.0, generator: torch.Generator | None = None,
                callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None) -> torch.Tensor:
    """DDIM from x (noise at time_pairs[0][0]) to x0, with the release's update:

        eps = (sqrt(1/abar_t) x - x0) / sqrt(1/abar_t - 1)
        a, a' = abar_prev[t], abar_prev[t_prev]     # shifted by one, as released (exact parity)
        c1 = eta sqrt((1 - a/a') (1 - a') / (1 - a)),  c2 = sqrt(1 - a' - c1^2)
        x = sqrt(a') x0 + c1 z + c2 eps

    Fresh noise z is drawn on the CPU from ``generator`` (same numbers on every device), and not
    at all for the last step to t_prev = 0, as released.
    """
    a_prev = schedule.alpha_bar_prev
    for i, (t, t_prev) in enumerate(time_pairs):
        t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        x0 = x0_fn(x, t_batch)
        if callback is not None:
            callback(i, x, x0)
        if t_prev < 0:
            return x0
        eps = schedule.eps_from_x0(x, t_batch, x0)
        a, a_next = a_prev[t], a_prev[t_prev]
        c1 = eta * ((1 - a / a_next) * (1 - a_next) / (1 - a)).sqrt()
        c2 = ((1 - a_next) - c1 ** 2).clamp(min=0).sqrt()
        x = x0 * a_next.sqrt() + c2 * eps
        if t_prev > 0 and eta > 0:
            x = x + c1 * torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
    return x
