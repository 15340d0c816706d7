"""Stable Diffusion image pairs with IP2P-style self-attention injection (paper 4.3).

What IP2P calls prompt-to-prompt copies the source image's self-attention maps into the target image
during the first ``p`` fraction of the steps, leaving cross-attention alone. Copying the pre-softmax
scores equals giving the target the source's query and key (its own values kept), which is what
``InjectionProcessor`` does on every ``attn1`` module, without materialising an attention matrix.

The batch is interleaved [src_1, tgt_1, src_2, tgt_2, ...] inside each classifier-free-guidance half,
so a pair is always two adjacent rows; each pair has its own seed (shared by its two images: same
initial latent and, with Euler ancestral, the same per-step noise), its own p and its own guidance
scale, all drawn from the seed. The denoising loop is ours (the pipeline's ``__call__`` takes one
guidance scale per call); every component (text encoder, UNet, scheduler, VAE) is the pipeline's own.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from datagen.config import DiffusersConfig
from datagen.image_pairs import PairRequest, PairResult, sample_parameters


class InjectionProcessor:
    """Self-attention whose target rows take the query and key of their source row while gated."""

    def __init__(self) -> None:
        self.gate: torch.Tensor | None = None  # (pairs,) bool; None or all False: plain attention

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args, **kwargs):
        if encoder_hidden_states is not None:
            raise ValueError("InjectionProcessor is for self-attention (attn1) modules only")
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        batch, length, _ = hidden_states.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, length, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        if self.gate is not None and bool(self.gate.any()):
            query, key = self._inject(query), self._inject(key)
        head_dim = key.shape[-1] // attn.heads
        query, key, value = (x.view(batch, -1, attn.heads, head_dim).transpose(1, 2) for x in (query, key, value))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor

    def _inject(self, x: torch.Tensor) -> torch.Tensor:
        pairs = self.gate.shape[0]
        if x.shape[0] % (2 * pairs):
            raise ValueError(f"batch of {x.shape[0]} rows is not [halves x pairs x (source, target)] for "
                             f"{pairs} pairs")
        halves = x.shape[0] // (2 * pairs)  # 2 with classifier-free guidance
        v = x.view(halves, pairs, 2, *x.shape[1:])
        gate = self.gate.to(x.device).view(1, pairs, *([1] * (x.dim() - 1)))
        target = torch.where(gate, v[:, :, 0], v[:, :, 1])
        return torch.stack([v[:, :, 0], target], dim=2).view_as(x)


def install_injection(unet) -> InjectionProcessor:
    """Put one shared InjectionProcessor on every self-attention module; cross-attention is untouched."""
    shared = InjectionProcessor()
    procs = {name: (shared if name.endswith("attn1.processor") else proc)
             for name, proc in unet.attn_processors.items()}
    if not any(name.endswith("attn1.processor") for name in procs):
        raise ValueError("this UNet has no self-attention (attn1) modules to inject into")
    unet.set_attn_processor(procs)
    return shared


def load_pipeline(checkpoint: str | Path, device: torch.device, fp16: bool):
    """StableDiffusionPipeline from a local directory or a hub id; safety checker off (it blackens
    flagged images, which would corrupt the CLIP scores), Euler ancestral with linspace spacing (IP2P)."""
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionPipeline

    local = Path(str(checkpoint)).exists()
    dtype = torch.float16 if fp16 and device.type == "cuda" else torch.float32
    try:
        pipe = StableDiffusionPipeline.from_pretrained(str(checkpoint), dtype=dtype, safety_checker=None,
                                                       requires_safety_checker=False, local_files_only=local)
    except (OSError, ValueError) as err:
        raise ValueError(f"Stable Diffusion checkpoint {checkpoint!r} does not load: {err}") from None
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="linspace")
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


@torch.no_grad()
def generate_pairs(pipe, processor: InjectionProcessor, references: list[str], targets: list[str],
                   seeds: list[int], p: list[float], guidance: list[float], steps: int, resolution: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """One batch of pairs -> (reference images, target images), uint8 (n, H, W, 3)."""
    from diffusers.utils.torch_utils import randn_tensor

    n, device = len(references), pipe.device
    prompts = [x for pair in zip(references, targets) for x in pair]
    cond, uncond = pipe.encode_prompt(prompts, device, 1, True, negative_prompt=[""] * len(prompts))
    gens = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds for _ in (0, 1)]
    scale = pipe.vae_scale_factor
    shape = (2 * n, pipe.unet.config.in_channels, resolution // scale, resolution // scale)
    latents = randn_tensor(shape, generator=gens, device=device, dtype=cond.dtype)
    pipe.scheduler.set_timesteps(steps, device=device)
    latents = latents * pipe.scheduler.init_noise_sigma
    g = torch.tensor(guidance, device=device, dtype=cond.dtype).repeat_interleave(2).view(-1, 1, 1, 1)
    context = torch.cat([uncond, cond])
    cutoff = torch.tensor(p) * steps
    try:
        for i, t in enumerate(pipe.scheduler.timesteps):
            processor.gate = i < cutoff  # per pair: inject while step < p * steps
            x = pipe.scheduler.scale_model_input(torch.cat([latents, latents]), t)
            eps_u, eps_c = pipe.unet(x, t, encoder_hidden_states=context).sample.chunk(2)
            latents = pipe.scheduler.step(eps_u + g * (eps_c - eps_u), t, latents, generator=gens).prev_sample
            if not torch.isfinite(latents).all():
                bad = sorted({int(r) // 2 for r in torch.nonzero(~torch.isfinite(latents).flatten(1).all(1))})
                raise FloatingPointError(f"NaN/inf latents at step {i} for pair(s) {bad} (seeds "
                                         f"{[seeds[j] for j in bad]})")
    finally:
        processor.gate = None
    images = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
    arr = pipe.image_processor.postprocess(images, output_type="np")
    arr = np.round(np.clip(arr, 0, 1) * 255).astype(np.uint8)
    return arr[0::2], arr[1::2]


class StableDiffusionPairGenerator:
    """The ``diffusers`` backend: checkpoints in rotation (by sample seed), ``batch_pairs`` per batch."""

    name = "diffusers"

    def __init__(self, cfg: DiffusersConfig, seed: int = 0, device: str | torch.device | None = None):
        if not cfg.checkpoints:
            raise ValueError("image_pairs.diffusers.checkpoints is empty")
        self.cfg, self.seed = cfg, seed
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self._loaded: dict[str, tuple] = {}

    def _pipe(self, checkpoint: str):
        if checkpoint not in self._loaded:
            self._loaded.clear()  # one checkpoint in memory at a time
            pipe = load_pipeline(checkpoint, self.device, self.cfg.fp16)
            self._loaded[checkpoint] = (pipe, install_injection(pipe.unet))
        return self._loaded[checkpoint]

    def generate(self, requests: list[PairRequest]) -> list[PairResult]:
        cfg = self.cfg
        results: list[PairResult | None] = [None] * len(requests)
        params = [sample_parameters(r.seed, cfg.p_range, cfg.guidance_range) for r in requests]
        by_ckpt: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            by_ckpt.setdefault(cfg.checkpoints[r.seed % len(cfg.checkpoints)], []).append(i)
        for ckpt, rows in by_ckpt.items():
            pipe, proc = self._pipe(ckpt)
            for start in range(0, len(rows), cfg.batch_pairs):
                idx = rows[start:start + cfg.batch_pairs]
                refs, tgts = generate_pairs(
                    pipe, proc, [requests[i].reference for i in idx], [requests[i].target for i in idx],
                    [requests[i].seed for i in idx], [params[i][0] for i in idx], [params[i][1] for i in idx],
                    cfg.steps, cfg.resolution)
                for j, i in enumerate(idx):
                    results[i] = PairResult(params[i][0], params[i][1], (refs[j], tgts[j]),
                                              checkpoint=str(ckpt))
        return results
